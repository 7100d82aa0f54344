"""Training configuration: one dataclass, and the named recipes that fill it."""

from __future__ import annotations

from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any

from cnnlab.models import get_model


def _flag(default: Any, help: str, kind: str | tuple[str, ...], metavar: str | None = None) -> Any:
    """A field that `cnnlab train` offers as a flag (--name-with-dashes), its help saying the default. `kind`:
    how the command line parses it ("int", "positive_int", "positive_float", "non_negative_float", "bool") or the
    choices. A flag not given keeps the recipe's value. The command line reads these (`run_flags`): a setting is
    declared here once."""
    return field(default=default, metadata={"help": help, "kind": kind, "metavar": metavar})


@dataclass
class TrainConfig:
    """Everything a run depends on. Stored in config.json and in every checkpoint."""

    model: str = "resnet"  # a name from the model registry
    recipe: str = "default"  # the recipe these values came from ("default", "course"), for the record
    dataset: str = "mnist"  # "mnist", "fashion-mnist" (data/datasets.py), or "imagefolder:PATH" (data/imagefolder.py)
    image_size: int = _flag(0, "imagefolder: resize images to this side (default: inferred)", "positive_int")
    epochs: int = _flag(15, "epochs (default: the model's, in the recipe)", "positive_int")  # ignored with time_budget
    steps: int = _flag(0, "optimiser steps in all, the last epoch partial; replaces --epochs (default: the recipe's epochs)",
                       "positive_int")  # 0 = use epochs
    time_budget: float = _flag(0.0, "plan the run to finish within this wall time per model, measuring its own speed; "
                               "replaces --epochs (default: off)", "positive_float", "SECONDS")  # 0 = use epochs
    batch_size: int = _flag(128, "images per step, in all processes together under torchrun (default: the recipe's)",
                            "positive_int")
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = _flag(0.05, "peak learning rate (default: the recipe's)", "positive_float")
    momentum: float = 0.9  # SGD momentum (AdamW uses it as beta1)
    nesterov: bool = True  # Nesterov momentum for SGD
    weight_decay: float = 5e-4  # L2 penalty (decoupled for AdamW)
    schedule: str = "onecycle"  # "constant", or "onecycle": linear warm-up then linear decay to zero
    warmup_epochs: float = 1.0  # length of the warm-up, in epochs; shorter in short runs (loop._short_run_warmup)
    label_smoothing: float = 0.1  # cross-entropy label smoothing; 0 disables it
    # Augmentations (train/augment.py): each is switched on by its fields here, and each field is its flag.
    max_shift: float = _flag(2.0, "augmentation: random shift, pixels; 0 = off (default: the recipe's)", "non_negative_float")
    max_rotate: float = _flag(10.0, "augmentation: random rotation, degrees; 0 = off (default: the recipe's)",
                              "non_negative_float")
    max_scale: float = _flag(0.1, "augmentation: random scale, a fraction; 0 = off (default: the recipe's)",
                             "non_negative_float")
    hflip: bool = _flag(False, "augmentation: mirror half the images left-right, for clothes rather than digits "
                        "(default: the recipe's: on for Fashion-MNIST)", "bool")
    cutout: int = _flag(0, "augmentation: blank a random square this many pixels a side in every training image "
                        "(default: off)", "positive_int", "PIXELS")
    tta_hflip: bool = _flag(False, "validate and test on each image and its mirror image, averaging the logits; predict, "
                            "serve and export then do the same (for models trained with mirroring, as on Fashion-MNIST) "
                            "(default: off)", "bool")
    norm_mean: float = 0.1307  # pixel mean and std the images are standardised with: the data set's own,
    norm_std: float = 0.3081  # set from the data when training starts (MNIST's here)
    val_size: int = 5000  # last training images held out for model selection; 0 = none (the course)
    eval_batch_size: int = 1000  # images per batch when evaluating (no gradients, so larger)
    channels_last: bool = True  # NHWC memory layout: faster convolutions on x86 CPUs (measured)
    # autocast: "auto" = float32 everywhere (bf16 measured slower for these nets on an H200); "bf16"; "off"
    amp: str = _flag("auto", "autocast; auto = float32 (bfloat16 measured slower for these networks, even on an H200) "
                     "(default: auto)", ("auto", "bf16", "off"))
    seed: int = _flag(0, "random seed of the weights, the order and the augmentation; a CPU run repeats exactly on the "
                      "same kind of CPU (default: 0)", "int")
    device: str = "auto"  # "auto", "cpu", "cuda" or "mps" (cnnlab.device)
    threads: int = 0  # CPU threads for PyTorch; 0 keeps PyTorch's default (one per physical core)
    data_dir: str | None = None  # a directory holding the data set's files (or an image folder's new place)
    log_every: int = 50  # steps between progress-bar loss updates (each costs one host sync)
    record_branch_grads: bool = _flag(False, "models with Inception blocks (inception_net, inception_bn): record each "
                                      "branch's gradient norm per epoch, for analyze branches (default: off)", "bool")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def run_flags() -> list[Field]:
    """The fields `cnnlab train` offers as flags: what a run is (so --resume, which takes them from the run,
    refuses them), in declaration order."""
    return [f for f in fields(TrainConfig) if "help" in f.metadata]


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
