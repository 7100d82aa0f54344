"""Training: `train` (the session: process group, one data load, the runs) and one run read top to bottom
(train/run.py); the parts a run builds (parts.py), its steps and their hooks (loop.py), the augmentation
pipeline, the plan, data-parallel set-up, the observers and the terminal. The config and its recipes are
cnnlab.config; what a finished run leaves (run directory, checkpoints, the trained model) is cnnlab.runs."""

from cnnlab.config import RECIPES, TrainConfig, make_config
from cnnlab.runs.forward import evaluate
from cnnlab.train.events import Observer
from cnnlab.train.loop import NonFiniteLoss
from cnnlab.train.run import RunResult, Session, fit, resume, train

__all__ = ["RECIPES", "NonFiniteLoss", "Observer", "RunResult", "Session", "TrainConfig", "evaluate", "fit", "make_config", "resume", "train"]
