"""Training configuration: one dataclass, and the named recipes that fill it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from cnnlab.models import get_model


@dataclass
class TrainConfig:
    """Everything a run depends on. Stored in config.json and in every checkpoint."""

    model: str = "resnet"  # a name from the model registry
    recipe: str = "default"  # the recipe these values came from ("default", "course"), for the record
    dataset: str = "mnist"  # "mnist", "fashion-mnist" (data/datasets.py), or "imagefolder:PATH" (data/imagefolder.py)
    image_size: int = 0  # imagefolder: the side images are resized to; 0 = inferred (then recorded here)
    epochs: int = 15  # passes over the training split (ignored when time_budget is set)
    steps: int = 0  # optimiser steps for the whole run, the last epoch then partial; 0 = use epochs
    time_budget: float = 0.0  # seconds of wall time for the whole run; the step count is planned to fit; 0 = use epochs
    batch_size: int = 128  # images per optimiser step
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # SGD momentum (AdamW uses it as beta1)
    nesterov: bool = True  # Nesterov momentum for SGD
    weight_decay: float = 5e-4  # L2 penalty (decoupled for AdamW)
    schedule: str = "onecycle"  # "constant", or "onecycle": linear warm-up then linear decay to zero
    warmup_epochs: float = 1.0  # length of the warm-up, in epochs; shorter in short runs (loop._short_run_warmup)
    label_smoothing: float = 0.1  # cross-entropy label smoothing; 0 disables it
    max_shift: float = 2.0  # augmentation: random shift, pixels (0 disables)
    max_rotate: float = 10.0  # augmentation: random rotation, degrees (0 disables)
    max_scale: float = 0.1  # augmentation: random scale, fraction (0 disables)
    hflip: bool = False  # augmentation: mirror half the images left-right (clothes, not digits)
    cutout: int = 0  # augmentation: blank a random square of this many pixels a side in every image (0 disables)
    tta_hflip: bool = False  # evaluate on each image and its mirror image, averaging the logits (with hflip)
    norm_mean: float = 0.1307  # pixel mean and std the images are standardised with: the data set's own,
    norm_std: float = 0.3081  # set from the data when training starts (MNIST's here)
    val_size: int = 5000  # last training images held out for model selection; 0 = none (the course)
    eval_batch_size: int = 1000  # images per batch when evaluating (no gradients, so larger)
    channels_last: bool = True  # NHWC memory layout: faster convolutions on x86 CPUs (measured)
    amp: str = "auto"  # autocast: "auto" = float32 everywhere (bf16 measured slower for these nets on an H200); "bf16"; "off"
    seed: int = 0  # seeds weights, permutations and augmentation; a CPU run repeats exactly
    device: str = "auto"  # "auto", "cpu", "cuda" or "mps"
    threads: int = 0  # CPU threads for PyTorch; 0 keeps PyTorch's default (one per physical core)
    data_dir: str | None = None  # a directory holding the MNIST files, tried before the cache
    log_every: int = 50  # steps between progress-bar loss updates (each costs one host sync)
    record_branch_grads: bool = False  # write branch_grads.json: each Inception branch's squared gradient norm per epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# The course's loop: batch 64, SGD(0.01, momentum 0.5), plain cross-entropy, 10 epochs on all 60,000
# training images, test after every epoch. No augmentation, no schedule, no hold-out.
_COURSE = dict(
    epochs=10,
    batch_size=64,
    optimizer="sgd",
    lr=0.01,
    momentum=0.5,
    nesterov=False,
    weight_decay=0.0,
    schedule="constant",
    warmup_epochs=0.0,
    label_smoothing=0.0,
    max_shift=0.0,
    max_rotate=0.0,
    max_scale=0.0,
    val_size=0,
    channels_last=False,
)

# Our recipe: the architecture is the lecture's; only optimiser, schedule, augmentation, batch size
# and epochs are ours. The epochs are each model's own, in the model registry.
RECIPES = ("default", "course")

# Per data set, what the default recipe changes: Fashion-MNIST's clothes are photographed upright and may
# face either way, so they are mirrored instead of rotated or scaled.
_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion-mnist": dict(hflip=True, max_rotate=0.0, max_scale=0.0),
}


def make_config(model: str, recipe: str = "default", dataset: str = "mnist", **overrides: Any) -> TrainConfig:
    """The config for `model` on `dataset` under a named recipe, with explicit overrides (None means 'keep')."""
    if recipe == "default":
        base = replace(
            TrainConfig(), model=model, recipe=recipe, dataset=dataset, epochs=get_model(model).default_epochs,
            **_DATASET_DEFAULTS.get(dataset, {}),
        )
    elif recipe == "course":
        base = replace(TrainConfig(), model=model, recipe=recipe, dataset=dataset, **_COURSE)
    else:
        raise ValueError(f"unknown recipe {recipe!r}; choose from: {', '.join(RECIPES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **given)
