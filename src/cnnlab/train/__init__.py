"""Training: a session (train/session.py: device, process group, one data load, the runs, the barrier), one run
(train/run.py: set up, restore, epochs, finish), the loop's parts, the augmentation pipeline, the plan, data-parallel
set-up and gradient recording. The config and its recipes are cnnlab.config; what a finished run leaves (run
directory, checkpoints, the trained model) is cnnlab.runs."""

from cnnlab.config import RECIPES, TrainConfig, make_config
from cnnlab.train.events import Observer
from cnnlab.train.loop import NonFiniteLoss, evaluate
from cnnlab.train.run import RunResult, fit, resume
from cnnlab.train.session import Session, train

__all__ = ["RECIPES", "NonFiniteLoss", "Observer", "RunResult", "Session", "TrainConfig", "evaluate", "fit", "make_config", "resume", "train"]
