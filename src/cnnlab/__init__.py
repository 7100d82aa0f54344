"""cnnlab: the networks of the lecture "CNN, advanced", trained fast on real MNIST.

The Python API (cnnlab/api.py):
    fit(model, dataset, **settings)  train a network and return it     list_models()    what can be trained
    load(path)                       a trained model from a run        list_datasets()  what it can be trained on
    TrainedModel: .predict(pictures) .evaluate() .curves() .classes;   Prediction: .name .label .top(k)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Where each public name lives. They are imported on first use: `import cnnlab` stays instant (no torch, no
# trainer), and a notebook pays for training only when it trains.
_HOME = {
    "fit": "cnnlab.api",
    "load": "cnnlab.api",
    "list_models": "cnnlab.api",
    "list_datasets": "cnnlab.api",
    "TrainedModel": "cnnlab.runs.trained",
    "Prediction": "cnnlab.runs.prediction",
}

__all__ = [*_HOME, "__version__"]

# Names a user may call as functions (cnnlab.train(...)) are subpackages' names, which a function cannot take over.
_SUBPACKAGE_HINTS = {
    "train": "to train a model, call cnnlab.fit(...)",
    "models": "cnnlab.list_models() lists the models",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value  # looked up once
        return value
    if name in _SUBPACKAGE_HINTS:  # reached only while the subpackage is not imported; from-imports then import it
        raise AttributeError(f"cnnlab.{name} is a subpackage (import cnnlab.{name}); {_SUBPACKAGE_HINTS[name]}")
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
