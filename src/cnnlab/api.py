"""The Python API in five names: fit, load, list_models, list_datasets, and the TrainedModel that fit and load return.

    import cnnlab
    model = cnnlab.fit("resnet", steps=50)        # train (a short run), saved in runs/<time>-resnet/
    print(model.predict("digit.png"))              # Prediction('7', 98.7%; then '1' 0.6%, '2' 0.3%)
    model = cnnlab.load("runs/<time>-resnet")      # later, from its run directory or a checkpoint

`cnnlab train`, `cnnlab predict` and the rest of the command line are layers over the same functions
(cnnlab.train.run.train, cnnlab.runs.load, cnnlab.inference.Predictor).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from cnnlab.runs.trained import TrainedModel


# Why `fit` and not `train` (and `list_models`, not `models`): cnnlab.train and cnnlab.models are subpackages, and
# importing any module under one (cnnlab.cli does; so does every model load) makes Python set the package attribute
# of that name to the subpackage, replacing a function of that name. A name no subpackage has cannot be shadowed,
# whatever was imported first.
def fit(model: str = "resnet", dataset: str = "mnist", *, recipe: str = "default", out: str | Path = "runs",
        progress: bool = True, **settings: Any) -> TrainedModel:
    """Train `model` (a name from `list_models()`) on `dataset` (one from `list_datasets()`) into a new run directory
    under `out`, and return the trained model as `load` reads it back (the epoch chosen by validation accuracy).

    `recipe`: "default" (ours) or "course" (the lecture's loop). `settings`: any TrainConfig field, as for
    `cnnlab train` (steps=50, epochs=3, seed=1, batch_size=256, time_budget=60, device="cpu", ...).
    """
    from cnnlab.config import TrainConfig, make_spec
    from cnnlab.train.run import train

    known = [f.name for f in fields(TrainConfig) if f.name not in ("model", "recipe", "dataset")]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise TypeError(f"fit() has no setting {', '.join(unknown)}; the settings are: {', '.join(known)}")
    spec = make_spec(model, recipe, dataset, **settings)  # the names looked up once, here
    session = train([spec], out_root=out, progress=progress)
    return load(session.results[0].run_dir, spec.config.device)


def load(path: str | Path, device: str = "auto") -> TrainedModel:
    """The trained model in a run directory (its best.pt) or a checkpoint file, on `device` ("auto", "cpu",
    "cuda", "mps"). Raises cnnlab.runs.CheckpointError, saying why, for anything else."""
    from cnnlab.runs.trained import load as load_trained

    return load_trained(path, device)


def list_models() -> dict[str, str]:
    """The networks `fit` trains (the model registry), by name, each with its one-line description."""
    from cnnlab.models import get_model, list_models as registered

    return {name: get_model(name).summary for name in registered()}


def list_datasets() -> dict[str, str]:
    """What `fit(dataset=...)` and `cnnlab train --dataset` accept, each with one line about it: the data set
    registry's entries (data/sets/registry.py)."""
    from cnnlab.data import entries

    return {e.name + (":PATH" if e.takes_path else ""): e.summary for e in entries()}
