"""Finished runs and trained models: the run directory (write, read, lock), the checkpoint record, and a trained
model loaded for use (logits, mirror averaging, evaluation). Below training, analysis, inference and serving:
all of them read trained models through here, and none of it imports cnnlab.train."""

from cnnlab.runs.checkpoint import CheckpointError, checkpoint_dir, load_checkpoint, save_checkpoint
from cnnlab.runs.model import TrainedModel, class_names, evaluate, load, load_model, model_input, predict_logits, training_data, tta_forward
from cnnlab.runs.rundir import Run, RunDirBusy, RunDirError, load_run, load_runs, newest_finished

__all__ = [
    "CheckpointError", "Run", "RunDirBusy", "RunDirError", "TrainedModel", "checkpoint_dir", "class_names", "evaluate",
    "load", "load_checkpoint", "load_model", "load_run", "load_runs", "model_input", "newest_finished", "predict_logits", "save_checkpoint",
    "training_data", "tta_forward",
]
