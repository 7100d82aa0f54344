"""Training: the config and its recipes, the loop, checkpoints and run directories."""

from cnnlab.train.checkpoint import CheckpointError, checkpoint_dir, load_checkpoint, load_model, save_checkpoint
from cnnlab.train.config import RECIPES, TrainConfig, make_config
from cnnlab.train.loop import RunResult, evaluate, fit, predict_logits
from cnnlab.train.runtime import resolve_device

__all__ = [
    "RECIPES",
    "CheckpointError",
    "checkpoint_dir",
    "RunResult",
    "TrainConfig",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_model",
    "make_config",
    "predict_logits",
    "resolve_device",
    "save_checkpoint",
]
