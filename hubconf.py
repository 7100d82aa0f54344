"""torch.hub entry points: one per network in cnnlab's model registry.

    net = torch.hub.load("path/to/cnnlab", "resnet", source="local")                         # fresh weights
    net = torch.hub.load("path/to/cnnlab", "resnet", source="local", checkpoint="runs/...")  # a trained run's

Each returns a plain torch.nn.Module taking normalised (N, C, H, W) batches; `cnnlab.load(path).predict(...)`
does the preparation of pictures for you.
"""

import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch"]

# torch.hub imports this file from the repository root, where the package is one folder down (src/ layout):
# put it first, so the entry points build this checkout's networks even where another cnnlab is installed.
_SRC = str(_Path(__file__).resolve().parent / "src")
if _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)

from cnnlab.models import get_model as _get_model  # noqa: E402
from cnnlab.models import list_models as _list_models  # noqa: E402


def _entry_point(name: str):
    def entry(pretrained: bool = False, checkpoint=None, **kwargs):
        from cnnlab.runs import load

        if checkpoint is None:
            if pretrained:
                raise ValueError(f"cnnlab publishes no pretrained weights: train {name} (cnnlab train --model {name}) "
                                 "and pass its run directory as checkpoint=...")
            return _get_model(name).build(**kwargs)
        if kwargs:
            raise ValueError(f"a checkpoint fixes the network's shape; do not also pass {', '.join(kwargs)}")
        trained = load(checkpoint, "cpu")
        if trained.config.model != name:
            raise ValueError(f"{checkpoint} holds a {trained.config.model}, not a {name}: load it with the "
                             f"{trained.config.model!r} entry point")
        return trained.network

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"""{_get_model(name).summary}

    Args:
        pretrained: cnnlab publishes no weights; True without a checkpoint is refused.
        checkpoint: a run directory or checkpoint file trained as {name}: its weights, in eval mode, on the CPU.
        kwargs: without a checkpoint, the builder's in_channels, num_classes, image_size (MNIST's by default).
    """
    return entry


for _name in _list_models():  # the registry is the one list of networks; hub.list() shows each of them
    globals()[_name] = _entry_point(_name)
