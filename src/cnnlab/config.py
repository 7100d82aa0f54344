"""Training configuration: one dataclass, and the named recipes that fill it."""

from __future__ import annotations

import math
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any

from cnnlab.data.registry import lookup
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
    dataset: str = "mnist"  # a --dataset name of the data set registry (data/registry.py): "mnist", "imagefolder:PATH"...
    image_size: int = _flag(0, "imagefolder: resize images to this side (default: inferred)", "positive_int")
    # epochs, batch_size, lr, val_size and max_shift are None in an image folder's default recipe until the run
    # starts: then fit_to_data chooses them from the folder's size (a value given explicitly is kept).
    epochs: int | None = _flag(15, "epochs (default: the model's, in the recipe)", "positive_int")  # ignored with time_budget
    steps: int = _flag(0, "optimiser steps in all, the last epoch partial; replaces --epochs (default: the recipe's epochs)",
                       "positive_int")  # 0 = use epochs
    time_budget: float = _flag(0.0, "plan the run to finish within this wall time per model, measuring its own speed; "
                               "replaces --epochs (default: off)", "positive_float", "SECONDS")  # 0 = use epochs
    batch_size: int | None = _flag(128, "images per step, in all processes together under torchrun (default: the recipe's)",
                            "positive_int")
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float | None = _flag(0.05, "peak learning rate (default: the recipe's; for an image folder, scaled to its batch)",
                             "positive_float")
    momentum: float = 0.9  # SGD momentum (AdamW uses it as beta1)
    nesterov: bool = True  # Nesterov momentum for SGD
    weight_decay: float = 5e-4  # L2 penalty (decoupled for AdamW)
    schedule: str = "onecycle"  # "constant", or "onecycle": linear warm-up then linear decay to zero
    warmup_epochs: float = 1.0  # length of the warm-up, in epochs; shorter in short runs (loop._short_run_warmup)
    label_smoothing: float = 0.1  # cross-entropy label smoothing; 0 disables it
    # Augmentations (train/augment.py): each is switched on by its fields here, and each field is its flag.
    max_shift: float | None = _flag(2.0, "augmentation: random shift, pixels; 0 = off (default: the recipe's)", "non_negative_float")
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
    val_size: int | None = 5000  # last training images held out for model selection; 0 = none (the course)
    eval_batch_size: int = 1000  # images per batch when evaluating (no gradients, so larger)
    channels_last: bool = True  # NHWC memory layout: faster convolutions on x86 CPUs (measured)
    # autocast: "auto" = float32 everywhere (bf16 measured slower for these nets on an H200); "bf16"; "off"
    amp: str = _flag("auto", "autocast; auto = float32 (bfloat16 measured slower for these networks, even on an H200) "
                     "(default: auto)", ("auto", "bf16", "off"))
    seed: int = _flag(0, "random seed of the weights, the order and the augmentation; a CPU run repeats exactly on the "
                      "same kind of CPU (default: 0)", "int")
    split_seed: int = _flag(0, "imagefolder: seed of the train/test split, kept apart from --seed so that runs with "
                            "different seeds are tested on the same images (default: 0)", "int", "N")
    device: str = "auto"  # "auto", "cpu", "cuda" or "mps" (cnnlab.device)
    threads: int = 0  # CPU threads for PyTorch; 0 keeps PyTorch's default (one per physical core)
    data_dir: str | None = None  # a directory holding the data set's files (or an image folder's new place)
    log_every: int = 50  # steps between progress-bar loss updates (each costs one host sync)
    tensorboard: bool = _flag(False, "also write TensorBoard event files into the run directory's tensorboard/ folder "
                              "(needs pip install 'cnnlab[tensorboard]') (default: off)", "bool")
    record_branch_grads: bool = _flag(False, "models with Inception blocks (inception_net, inception_bn): record each "
                                      "branch's gradient norm per epoch, for analyze branches (default: off)", "bool")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        if "split_seed" not in d:  # a run from before split_seed: its image folder was split by its seed
            d = {**d, "split_seed": d.get("seed", 0)}
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

def make_config(model: str, recipe: str = "default", dataset: str = "mnist", **overrides: Any) -> TrainConfig:
    """The config for `model` on `dataset` under a named recipe, with explicit overrides (None means 'keep')."""
    if recipe == "default":
        base = replace(
            TrainConfig(), model=model, recipe=recipe, dataset=dataset,
            **{"epochs": get_model(model).default_epochs, **lookup(dataset).entry.recipe},  # the data set's changes
        )
    elif recipe == "course":
        base = replace(TrainConfig(), model=model, recipe=recipe, dataset=dataset, **_COURSE)
    else:
        raise ValueError(f"unknown recipe {recipe!r}; choose from: {', '.join(RECIPES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **given)


# The recipe's learning rate is for this batch; fit_to_data scales it to the batch a run takes.
_BASE_BATCH, _BASE_LR = 128, 0.05
_BATCHES = (128, 64, 32, 16, 8)  # the batch sizes fit_to_data chooses from, largest first
_MIN_STEPS_PER_EPOCH = 16  # fewer, and one epoch is one or two noisy steps (batch 128 on 192 images: one)
_MIN_STEPS = 600  # a run's optimiser steps at least, however small the data
_MAX_EPOCHS = 300  # ... but a handful of images is not passed over forever
_MAX_HOLD_OUT = 5000  # MNIST's hold-out: the most a set needs to choose an epoch with
_BASE_SIDE = 28  # the recipe's shift (max_shift) is for images this size
_FITTED = ("epochs", "batch_size", "lr", "val_size", "max_shift")  # what a recipe may leave to fit_to_data


def hold_out(n_images: int) -> int:
    """Training images to hold out for validation: a tenth, but a fifth (up to 100) of a small set, so that a
    few hundred images still choose their epoch on a few dozen, not on a handful."""
    return min(_MAX_HOLD_OUT, max(n_images // 10, min(n_images // 5, 100)))


def scaled_lr(batch_size: int) -> float:
    """The recipe's peak learning rate for `batch_size`: square-root scaling from 0.05 at batch 128, never above."""
    return _BASE_LR * min(1.0, math.sqrt(batch_size / _BASE_BATCH))


def fitted_batch(n_train: int) -> int:
    """The largest batch that gives at least _MIN_STEPS_PER_EPOCH steps an epoch (else the smallest)."""
    return next((b for b in _BATCHES if n_train // b >= _MIN_STEPS_PER_EPOCH), _BATCHES[-1])


def fit_to_data(cfg: TrainConfig, n_images: int) -> TrainConfig:
    """Fill the fields a data set's recipe left open (None; an image folder's) from its number of training
    images (before the hold-out); fields already set, such as values the user gave, are kept."""
    if all(getattr(cfg, f) is not None for f in _FITTED):
        return cfg
    val_size = hold_out(n_images) if cfg.val_size is None else cfg.val_size
    n_train = max(1, n_images - val_size)
    batch_size = fitted_batch(n_train) if cfg.batch_size is None else cfg.batch_size
    lr = scaled_lr(batch_size) if cfg.lr is None else cfg.lr
    epochs = cfg.epochs
    if epochs is None:
        steps_per_epoch = max(1, n_train // batch_size)
        enough = math.ceil(_MIN_STEPS / steps_per_epoch)
        epochs = min(_MAX_EPOCHS, max(get_model(cfg.model).default_epochs, enough))
    max_shift = cfg.max_shift
    if max_shift is None:  # the same share of the picture as the recipe's 2 pixels of a 28-pixel digit
        max_shift = round(TrainConfig.max_shift * max(cfg.image_size, _BASE_SIDE) / _BASE_SIDE, 1)
    return replace(cfg, val_size=val_size, batch_size=batch_size, lr=lr, epochs=epochs, max_shift=max_shift)


def fit_note(given: TrainConfig, fitted: TrainConfig, n_images: int) -> str | None:
    """One line on what fit_to_data chose for `given` and why; None when nothing was left to choose."""
    if all(getattr(given, f) is not None for f in _FITTED):
        return None
    yours = " (given)"
    n_train = n_images - fitted.val_size
    steps = max(1, n_train // fitted.batch_size)
    parts = [
        f"batch {fitted.batch_size}" + (f" ({steps} steps an epoch)" if given.batch_size is None else yours),
        f"lr {fitted.lr:.3g}" + (
            f" ({_BASE_LR} at batch {_BASE_BATCH}, scaled by the square root of the batch)" if given.lr is None else yours
        ),
    ]
    if not (fitted.steps or fitted.time_budget):
        parts.append(f"{fitted.epochs} epochs" + (f" ({fitted.epochs * steps} steps)" if given.epochs is None else yours))
    if given.max_shift is None:
        parts.append(f"shifted up to {fitted.max_shift:g} pixels ({TrainConfig.max_shift:g} at {_BASE_SIDE}, scaled to the images)")
    share = round(100 * fitted.val_size / max(1, n_images))
    parts.append(f"{share}% held out for validation ({fitted.val_size} images)" if given.val_size is None
                 else f"{fitted.val_size} images held out for validation{yours}")
    return f"image folder of {n_images:,} training images: " + ", ".join(parts)
