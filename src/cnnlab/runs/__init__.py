"""Finished runs and trained models: the run directory (write, read, lock), the checkpoint record (checkpoint: one
reader, `Checkpoint.read`), the forward pass and evaluation (forward), a trained model loaded for use (trained:
`load`) and what it says of a picture (prediction). Below training, analysis, inference and serving: all of them
read trained models through here, and none of it imports cnnlab.train."""

from cnnlab.runs.checkpoint import Checkpoint, CheckpointError, checkpoint_dir, save_checkpoint
from cnnlab.runs.forward import evaluate, model_input, predict_logits, tta_forward
from cnnlab.runs.prediction import Guess, Picture, Prediction
from cnnlab.runs.trained import TrainedModel, class_names, load
from cnnlab.runs.rundir import Run, RunDirBusy, RunDirError, load_run, load_runs, newest_finished

__all__ = [
    "Checkpoint", "CheckpointError", "Guess", "Picture", "Prediction", "Run", "RunDirBusy", "RunDirError", "TrainedModel",
    "checkpoint_dir", "class_names", "evaluate", "load", "load_run", "load_runs", "model_input", "newest_finished",
    "predict_logits", "save_checkpoint", "tta_forward",
]
