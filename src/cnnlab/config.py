"""Training configuration: one dataclass, and the named recipes that fill it."""

from __future__ import annotations

import math
import typing
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any

from cnnlab.data.sets import mnist
from cnnlab.data.tensors.imageset import ImageSet
from cnnlab.data.sets.registry import Dataset, lookup
from cnnlab.device import DEVICES
from cnnlab.models import get_model
from cnnlab.models.registry import ModelSpec


@dataclass(frozen=True)
class Range:
    """The values a number setting may take: `low` to `high`, both included unless `above` (then only values above
    `low`). Declared once beside the setting, and checked wherever a value comes in: a flag (cli), a library call
    (TrainConfig), a checkpoint's record. The upper bounds keep a value from reaching code that cannot hold it (a seed
    beyond int64, a learning rate beyond float32) or that would allocate without limit (an image side)."""

    low: float
    high: float
    above: bool = False  # low itself is excluded
    whole: bool = False  # whole numbers only

    def problem(self, value: Any) -> str | None:
        """Why `value` is not in the range, in words ("must be ... , got ..."), or None when it is."""
        kind = "a whole number" if self.whole else "a number"
        if isinstance(value, bool) or not isinstance(value, int if self.whole else (int, float)):
            return f"must be {kind}, got {value!r}"
        low_ok = value > self.low if self.above else value >= self.low
        if low_ok and value <= self.high:  # NaN fails both comparisons
            return None
        span = f"above {_number(self.low)} and at most" if self.above else f"from {_number(self.low)} to"
        return f"must be {kind} {span} {_number(self.high)}, got {_number(value)}"


def _number(x: float) -> str:
    """A bound or a value as people read it: 1,000,000 rather than 1e+06; 1e+300 as it is."""
    if isinstance(x, int) or (math.isfinite(x) and x.is_integer() and abs(x) < 1e16):
        return f"{int(x):,}"
    return f"{x:g}"


# Bounds shared by several settings and by the checkpoint record (runs/checkpoint.py).
MAX_IMAGE_SIDE = 512  # see TrainConfig.image_size
MAX_SEED = 2**63 - 1  # torch.manual_seed and a Generator take an int64
MAX_THREADS = 1024  # far above any machine's cores; an absurd count fails inside OpenMP instead of here
MAX_BATCH = 65_536
MAX_EPOCHS = 100_000


def _flag(default: Any, help: str, kind: str | tuple[str, ...], metavar: str | None = None,
          range: Range | None = None) -> Any:
    """A field that `cnnlab train` offers as a flag (--name-with-dashes), its help saying the default. `kind`: how
    the command line parses it ("int", "float", "bool") or the choices; `range`: the values a number may take,
    checked by the command line and by TrainConfig alike. A flag not given keeps the recipe's value. The command
    line reads these (`run_flags`): a setting is declared here once."""
    choices = kind if isinstance(kind, tuple) else None
    return field(default=default, metadata={"help": help, "kind": kind, "metavar": metavar, "range": range,
                                            "choices": choices})


def _setting(default: Any, range: Range | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A field that is no flag of its own, with the values it may take (checked by TrainConfig)."""
    return field(default=default, metadata={"range": range, "choices": choices})


@dataclass
class TrainConfig:
    """Everything a run depends on. Stored in config.json and in every checkpoint."""

    model: str = "resnet"  # a name from the model registry
    # The design of a model that takes one (designed's block, models/designed.py; a family's depth and width,
    # models/resunits.py and models/densenet.py), as its canonical spec, its default when none is given; "" for every other model, and in the record of a run from before designs existed.
    block: str = _flag("", "designed: the block of your own design, e.g. 'inception:1x1=16,5x5=4>24,pool=24' or "
                       "'residual:16,noskip' (default: the lecture's Inception block); the res_* family and "
                       "densenet_bc: depth and width, e.g. 'depth=56,width=16' or 'depth=40,growth=12' (default: each "
                       "model's)", "design", "SPEC")
    recipe: str = _setting("default", choices=("default", "course"))  # the recipe these values came from, for the record
    dataset: str = "mnist"  # a --dataset name of the data set registry (data/sets/registry.py): "mnist", "imagefolder:PATH"...
    # An image folder's side. The lecture's networks are for small pictures (a folder's inferred side is 16..64);
    # 512 leaves room for 224-pixel photos and more, while a crafted value cannot make a network's first layers
    # (their size grows with the side squared) or a folder's images in memory take gigabytes.
    image_size: int = _flag(0, f"imagefolder: resize images to this side, up to {MAX_IMAGE_SIDE}; 0 = inferred "
                            "(default: inferred)", "int", range=Range(0, MAX_IMAGE_SIDE, whole=True))
    # epochs, batch_size, lr, val_size and max_shift are None in an image folder's default recipe until the run
    # starts: then fit_to_data chooses them from the folder's size (a value given explicitly is kept).
    epochs: int | None = _flag(15, "epochs (default: the model's, in the recipe)", "int",
                               range=Range(1, MAX_EPOCHS, whole=True))  # ignored with time_budget
    steps: int = _flag(0, "optimiser steps in all, the last epoch partial; replaces --epochs (default: the recipe's epochs)",
                       "int", range=Range(0, 10**9, whole=True))  # 0 = use epochs
    time_budget: float = _flag(0.0, "plan the run to finish within this wall time per model, measuring its own speed; "
                               "replaces --epochs (default: off)", "float", "SECONDS",
                               range=Range(0, 10**7))  # 0 = use epochs; 10**7 s is 116 days
    batch_size: int | None = _flag(128, "images per step, in all processes together under torchrun (default: the recipe's)",
                                   "int", range=Range(1, MAX_BATCH, whole=True))
    optimizer: str = _setting("sgd", choices=("sgd", "adamw"))  # SGD's momentum is `momentum`; AdamW's beta1 too
    # Far above any rate that trains (0.001..1), and small enough that a step stays a float32 number: a larger
    # rate then ends as the clear "loss stopped being finite" line rather than an overflow inside the optimiser.
    lr: float | None = _flag(0.05, "peak learning rate (default: the recipe's; for an image folder, scaled to its batch)",
                             "float", range=Range(0, 1e6, above=True))
    momentum: float = _setting(0.9, Range(0, 1))  # SGD momentum (AdamW uses it as beta1)
    nesterov: bool = True  # Nesterov momentum for SGD
    weight_decay: float = _setting(5e-4, Range(0, 1))  # L2 penalty (decoupled for AdamW)
    # "constant", or "onecycle": linear warm-up then linear decay to zero
    schedule: str = _setting("onecycle", choices=("constant", "onecycle"))
    # length of the warm-up, in epochs; shorter in short runs (loop._short_run_warmup)
    warmup_epochs: float = _setting(1.0, Range(0, MAX_EPOCHS))
    label_smoothing: float = _setting(0.1, Range(0, 1))  # cross-entropy label smoothing; 0 disables it
    # The gradient's global L2 norm is clipped to this before each step; 0 = off. The lecture's networks see norms of
    # 0.7-1.0 (median) with early spikes to 10; a step taken on such a spike at the peak rate is what made
    # inception_net (no batch norm) diverge and resnet collapse to chance (benchmarks/results/stability.md).
    grad_clip: float = _setting(2.0, Range(0, 1e6))
    # An exponential moving average of the weights (train/average.py), its decay per step warmed up from 0; the run
    # evaluates, selects and saves the average, which is what every use of the run then loads. Off in the recipes: at
    # the end of a one-cycle run, whose rate falls to zero, it gave nothing (docs/results.md); mid-run, or with a
    # constant rate, it is ahead of the trained weights.
    ema: float = _flag(0.0, "keep an exponential moving average of the weights with this decay per step, e.g. 0.999 "
                       "(warmed up: at most (1+n)/(10+n) after n steps); validation, test, best.pt and every use of "
                       "the run take the average; 0 = off (default: off)", "float", "DECAY", range=Range(0, 1))
    # Augmentations (train/augment.py): each is switched on by its fields here, and each field is its flag.
    max_shift: float | None = _flag(2.0, "augmentation: random shift, pixels; 0 = off (default: the recipe's)", "float",
                                    range=Range(0, MAX_IMAGE_SIDE))
    max_rotate: float = _flag(10.0, "augmentation: random rotation, degrees; 0 = off (default: the recipe's)",
                              "float", range=Range(0, 180))
    max_scale: float = _flag(0.1, "augmentation: random scale, a fraction; 0 = off (default: the recipe's)",
                             "float", range=Range(0, 1))  # 1: from nothing to twice the size
    hflip: bool = _flag(False, "augmentation: mirror half the images left-right, for clothes rather than digits "
                        "(default: the recipe's: on for Fashion-MNIST)", "bool")
    cutout: int = _flag(0, "augmentation: blank a random square this many pixels a side in every training image "
                        "(default: off)", "int", "PIXELS", range=Range(0, MAX_IMAGE_SIDE, whole=True))
    tta_hflip: bool = _flag(False, "validate and test on each image and its mirror image, averaging the logits; predict, "
                            "serve and export then do the same (for models trained with mirroring, as on Fashion-MNIST) "
                            "(default: off)", "bool")
    # Pixel mean and std the images are standardised with (pixels scaled to 0..1): the data set's own, set from the
    # data when training starts (MNIST's here).
    norm_mean: float = _setting(mnist.MEAN, Range(0, 1))
    norm_std: float = _setting(mnist.STD, Range(0, 1, above=True))
    # last training images held out for model selection; 0 = none (the course)
    val_size: int | None = _setting(5000, Range(0, 10**9, whole=True))
    # images per batch when evaluating (no gradients, so larger); bounded, since memory grows with it
    eval_batch_size: int = _setting(1000, Range(1, 4096, whole=True))
    channels_last: bool = True  # NHWC memory layout: faster convolutions on x86 CPUs (measured)
    # autocast: "auto" = bfloat16 training steps on a CPU with bfloat16 instructions, where they measured 1.2-1.8x
    # faster, and float32 for everything else (device.training_dtype; on an H200 bf16 measured slower for these
    # nets); "bf16"; "off"
    amp: str = _flag("auto", "autocast; auto = the training steps in bfloat16 on a CPU with bfloat16 instructions, "
                     "AMX or AVX512_BF16 (measured 1.2-1.8x faster there), float32 everywhere else, evaluation in "
                     "float32; bf16 = training and evaluation in bfloat16; off = float32 (default: auto)",
                     ("auto", "bf16", "off"))
    seed: int = _flag(0, "random seed of the weights, the order and the augmentation; a CPU run repeats to the digit on "
                      "the same machine at the same --threads, whatever else runs beside it (default: 0)", "int",
                      range=Range(0, MAX_SEED, whole=True))
    split_seed: int = _flag(0, "imagefolder: seed of the train/test split, kept apart from --seed so that runs with "
                            "different seeds are tested on the same images (default: 0)", "int", "N",
                            range=Range(0, MAX_SEED, whole=True))
    device: str = _setting("auto", choices=DEVICES)  # "auto", "cpu", "cuda" or "mps" (cnnlab.device)
    # CPU threads for PyTorch, the --threads of every command; 0: PyTorch's count (one per core), kept for the whole run,
    # since the thread count changes the last bits of every sum (a run that adapts says so: adapt_threads).
    threads: int = _setting(0, Range(0, MAX_THREADS, whole=True))
    adapt_threads: bool = _flag(False, "CPU: fit the threads to the cores other programs leave free as the run goes, so that "
                                "steps do not wait for a busy core; the digits then depend on that load, and the run "
                                "records the thread counts it used (default: off, the run repeats exactly)", "bool")
    data_dir: str | None = None  # a directory holding the data set's files (or an image folder's new place)
    log_every: int = _setting(50, Range(1, 10**9, whole=True))  # steps between progress-bar loss updates (each a host sync)
    run_name: str | None = _flag(None, "name the run directory OUT/NAME (letters, digits, '.', '_', '-'): a stopped run of "
                                 "that name is continued, a finished one refused; under torchrun it defaults to the "
                                 "rendezvous id and the model, so a group the agent restarts finds its run (default: "
                                 "the time and the model)", "name", "NAME")  # checked by runs/rundir.check_run_name
    checkpoint_every: float = _flag(0.0, "also write last.pt within an epoch, at the first progress update this many "
                                    "seconds after the last checkpoint; 0 = once an epoch (default: 0)", "float",
                                    "SECONDS", range=Range(0, 10**9))
    tensorboard: bool = _flag(False, "also write TensorBoard event files into the run directory's tensorboard/ folder "
                              "(needs pip install 'cnnlab[tensorboard]') (default: off)", "bool")
    record_branch_grads: bool = _flag(False, "models with Inception blocks (inception_net, inception_bn): record each "
                                      "branch's gradient norm per epoch, for analyze branches (default: off)", "bool")

    def __post_init__(self) -> None:
        """Every field checked against its type and its declared values, so that a library call, a flag or a
        checkpoint's record with a value no run can take is refused here, in one line, and not deep in a run."""
        for f in fields(self):
            problem = _field_problem(f, getattr(self, f.name))
            if problem:
                raise ValueError(f"{f.name} {problem}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """The config a run recorded (config.json, a checkpoint). A setting it lacks takes its default (a run from
        before the setting existed); one this cnnlab does not know, or a value of the wrong type or out of range,
        is a ValueError in one line."""
        if not isinstance(d, dict):
            raise ValueError(f"a run's config is a mapping of settings, not {type(d).__name__}")
        unknown = sorted(str(k) for k in d if k not in _FIELDS)
        if unknown:
            raise ValueError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)[:200]}")
        if "split_seed" not in d:  # a run from before split_seed: its image folder was split by its seed
            d = {**d, "split_seed": d.get("seed", 0)}
        if "grad_clip" not in d:  # a run from before grad_clip trained without it, and resumes so
            d = {**d, "grad_clip": 0.0}
        return cls(**d)


_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _field_problem(f: Field, value: Any) -> str | None:
    """Why `value` cannot be field `f`'s (its type, its choices, its range), or None."""
    allowed = _TYPES[f.name]
    if value is None:
        return None if type(None) in allowed else "must be given, got None"
    if bool in allowed:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if str in allowed:
        if not isinstance(value, str):
            return f"must be text, got {value!r}"
        choices = f.metadata.get("choices")
        return None if not choices or value in choices else f"must be one of {', '.join(choices)}, got {value!r}"
    number = f.metadata.get("range") or Range(-math.inf, math.inf, whole=int in allowed)
    return number.problem(value)


def _types() -> dict[str, tuple[type, ...]]:
    """Each field's allowed Python types, from its annotation (`int | None` allows int and None)."""
    hints = typing.get_type_hints(TrainConfig)
    return {name: typing.get_args(h) if typing.get_args(h) else (h,) for name, h in hints.items()}


_TYPES = _types()


def setting_range(name: str) -> Range:
    """The values TrainConfig's number field `name` may take (for a command line option that sets it)."""
    return _FIELDS[name].metadata["range"]


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
    grad_clip=0.0,
    max_shift=0.0,
    max_rotate=0.0,
    max_scale=0.0,
    val_size=0,
    channels_last=False,
)

# Our recipe: the architecture is the lecture's; only optimiser, schedule, augmentation, batch size
# and epochs are ours. The epochs are each model's own, in the model registry.
RECIPES = ("default", "course")

# A run with a time budget is usually short (99% on MNIST within one epoch is its purpose): it warms up for a tenth
# of an epoch and peaks at twice the recipe's rate. Measured on MNIST, 3 seeds, 250-400 steps: resnet 98.73% at
# lr 0.05 and 98.97% at 0.1 after 250 steps; inception_net 98.72% and 98.98% after 400 (the gradient clipped to
# norm 2, which is what makes the higher rate safe: without it resnet fell to chance at 0.2).
_BUDGET_LR_SCALE = 2.0
_BUDGET_WARMUP_EPOCHS = 0.1


@dataclass(frozen=True)
class RunSpec:
    """What one run is, its names resolved once: the model's registry entry, the data set's, and the config. The
    config keeps the names as strings only to be saved (config.json, checkpoints); everything that runs reads the
    entries."""

    model: ModelSpec
    dataset: Dataset
    config: TrainConfig


def resolve(cfg: TrainConfig) -> RunSpec:
    """A config's names looked up in their registries (a ValueError naming the choices when one is unknown), its
    block design checked against its model."""
    entry = get_model(cfg.model)
    return RunSpec(entry, lookup(cfg.dataset), _with_block(entry, cfg))


def make_spec(model: str | ModelSpec, recipe: str = "default", dataset: str | Dataset = "mnist",
              **overrides: Any) -> RunSpec:
    """The run of `model` on `dataset` under a named recipe, with explicit overrides (None means 'keep'). Names
    are looked up here, once; an entry already looked up is taken as it is."""
    entry = model if isinstance(model, ModelSpec) else get_model(model)
    data = dataset if isinstance(dataset, Dataset) else lookup(dataset)
    return RunSpec(entry, data, _with_block(entry, _recipe(entry, recipe, data, overrides)))


def _with_block(model: ModelSpec, cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its block as the model records it: a design's canonical spec (its default for none), "" for a
    model that takes no design (a ValueError when one was given to it)."""
    block = model.check_block(cfg.block)
    return cfg if block == cfg.block else replace(cfg, block=block)


def make_config(model: str, recipe: str = "default", dataset: str = "mnist", **overrides: Any) -> TrainConfig:
    """The config for `model` on `dataset` under a named recipe, with explicit overrides (None means 'keep')."""
    return make_spec(model, recipe, dataset, **overrides).config


def _recipe(model: ModelSpec, recipe: str, dataset: Dataset, overrides: dict[str, Any]) -> TrainConfig:
    if recipe == "default":
        base = replace(
            TrainConfig(), model=model.name, recipe=recipe, dataset=dataset.name,
            **{"epochs": model.default_epochs, **dataset.entry.recipe},  # the data set's changes
        )
        if overrides.get("time_budget"):
            base = replace(base, warmup_epochs=_BUDGET_WARMUP_EPOCHS,
                           lr=None if base.lr is None else base.lr * _BUDGET_LR_SCALE)  # a folder's is fitted later
    elif recipe == "course":
        base = replace(TrainConfig(), model=model.name, recipe=recipe, dataset=dataset.name, **_COURSE)
    else:
        raise ValueError(f"unknown recipe {recipe!r}; choose from: {', '.join(RECIPES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **given)


def for_data(spec: RunSpec, data: ImageSet) -> tuple[TrainConfig, str | None]:
    """A new run's config once its data are loaded, and what was chosen from them and why (fit_note): the data
    decide what it is trained on (an image folder's absolute path), how it is standardised, an image folder's size,
    how many images are held out, and what a folder's recipe left open (batch size, learning rate, epochs;
    fit_to_data)."""
    cfg = replace(spec.config, dataset=data.name, norm_mean=data.mean, norm_std=data.std)
    if spec.dataset.entry.takes_path:  # recorded, so that evaluate and resume rebuild the same split and size
        cfg = replace(cfg, image_size=int(data.train_images.shape[-1]))
    cfg = fit_to_data(cfg, len(data.train_images), spec.model.default_epochs)
    if cfg.val_size >= len(data.train_images) // 2:
        # MNIST's 5,000 held-out images would be most of a small folder: hold out a tenth instead.
        cfg = replace(cfg, val_size=len(data.train_images) // 10)
    return cfg, fit_note(spec.config, cfg, len(data.train_images))


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


def fit_to_data(cfg: TrainConfig, n_images: int, default_epochs: int) -> TrainConfig:
    """Fill the fields a data set's recipe left open (None; an image folder's) from its number of training
    images (before the hold-out) and the model's default epochs; fields already set, such as values the user
    gave, are kept."""
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
        epochs = min(_MAX_EPOCHS, max(default_epochs, enough))
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
