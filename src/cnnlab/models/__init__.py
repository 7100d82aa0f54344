"""Blocks, the lecture's networks, the registry that names them, and the switches that turn a block's parts off."""

from cnnlab.models import nets as _nets  # noqa: F401  (registers the lecture's networks)
from cnnlab.models import bn_nets as _bn_nets  # noqa: F401  (registers the stronger ones, after them)
from cnnlab.models import densenet as _densenet  # noqa: F401  (registers DenseNet-BC)
from cnnlab.models import resunits as _resunits  # noqa: F401  (registers the identity-mappings family of residual units)
from cnnlab.models import designed as _designed  # noqa: F401  (registers the network of a student's own block, last)
from cnnlab.models.designed import Design, DesignError
from cnnlab.models.blocks import (
    BranchedBlock, Inception, ResidualBlock, SkipBlock, branched_blocks, models_with_branches, residual_blocks,
)
from cnnlab.models.nets import BasicCNN, InceptionNet, ResNet
from cnnlab.models.registry import ModelSpec, count_parameters, create_model, get_model, lecture_models, list_models, register_model
from cnnlab.models.switches import Part, UnknownPart, parts, switched_off

__all__ = [
    "BasicCNN",
    "BranchedBlock",
    "Design",
    "DesignError",
    "Inception",
    "ModelSpec",
    "Part",
    "UnknownPart",
    "get_model",
    "lecture_models",
    "InceptionNet",
    "ResNet",
    "ResidualBlock",
    "SkipBlock",
    "branched_blocks",
    "count_parameters",
    "create_model",
    "list_models",
    "models_with_branches",
    "parts",
    "residual_blocks",
    "register_model",
    "switched_off",
]
