"""Blocks, the lecture's networks, and the registry that names them."""

from cnnlab.models import nets as _nets  # noqa: F401  (registers the lecture's networks)
from cnnlab.models import bn_nets as _bn_nets  # noqa: F401  (registers the stronger ones, after them)
from cnnlab.models.blocks import Inception, ResidualBlock
from cnnlab.models.nets import BasicCNN, InceptionNet, ResNet
from cnnlab.models.registry import ModelSpec, count_parameters, create_model, get_model, lecture_models, list_models, register_model

__all__ = [
    "BasicCNN",
    "Inception",
    "ModelSpec",
    "get_model",
    "lecture_models",
    "InceptionNet",
    "ResNet",
    "ResidualBlock",
    "count_parameters",
    "create_model",
    "list_models",
    "register_model",
]
