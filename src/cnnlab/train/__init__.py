"""Training: the loop, its plan and schedule, data-parallel set-up, gradient recording. The config and its recipes
are cnnlab.config; what a finished run leaves (run directory, checkpoints, the trained model) is cnnlab.runs."""

from cnnlab.config import RECIPES, TrainConfig, make_config
from cnnlab.train.loop import NonFiniteLoss, RunResult, evaluate, fit, resume

__all__ = ["RECIPES", "NonFiniteLoss", "RunResult", "TrainConfig", "evaluate", "fit", "make_config", "resume"]
