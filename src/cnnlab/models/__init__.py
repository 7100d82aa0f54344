"""Blocks, the lecture's networks, and the registry that names them."""

from cnnlab.models import nets as _nets  # noqa: F401  (registers the networks)
from cnnlab.models.blocks import Inception, ResidualBlock
from cnnlab.models.nets import BasicCNN, InceptionNet, ResNet
from cnnlab.models.registry import count_parameters, create_model, list_models, register_model

__all__ = [
    "BasicCNN",
    "Inception",
    "InceptionNet",
    "ResNet",
    "ResidualBlock",
    "count_parameters",
    "create_model",
    "list_models",
    "register_model",
]
