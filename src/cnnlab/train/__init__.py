"""Training: the config and its recipes, the loop, checkpoints and run directories."""

from cnnlab.train.checkpoint import CheckpointError, checkpoint_dir, class_names, load_checkpoint, load_model, save_checkpoint
from cnnlab.train.config import RECIPES, TrainConfig, make_config
from cnnlab.train.loop import NonFiniteLoss, RunResult, evaluate, fit, predict_logits, resume, tta_forward
from cnnlab.train.runtime import resolve_device

__all__ = [
    "RECIPES",
    "CheckpointError",
    "checkpoint_dir",
    "class_names",
    "RunResult",
    "TrainConfig",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_model",
    "NonFiniteLoss",
    "resume",
    "make_config",
    "predict_logits",
    "resolve_device",
    "save_checkpoint",
    "tta_forward",
]
