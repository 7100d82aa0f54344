"""Augmentation: one pipeline built from the config. Each augmentation is a function on [0, 1] float batches and
the TrainConfig fields that switch it on and set it; each such field is a `cnnlab train` flag (config.run_flags).
Adding one is a function here and its field there.

The draws are made for a whole global batch and each process takes its rows (`rows=(first, total)`, see
data/tensors/batching.random_affine), so a data-parallel run augments as one process does. The order below is the order
the random numbers are drawn in: changing it changes every seeded run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cnnlab.config import TrainConfig
from cnnlab.data.tensors.batching import cutout, random_affine



@dataclass(frozen=True)
class Augmentation:
    name: str
    fields: tuple[str, ...]  # the config fields that set it; it is on when any of them is non-zero
    apply: Callable[[torch.Tensor, torch.Generator, TrainConfig, "tuple[int, int] | None"], torch.Tensor]

    def on(self, cfg: TrainConfig) -> bool:
        return any(getattr(cfg, f) for f in self.fields)


AUGMENTATIONS = (
    # shift, rotation, scale and mirroring in one affine_grid + grid_sample call
    Augmentation("affine", ("max_shift", "max_rotate", "max_scale", "hflip"),
                 lambda x, g, c, rows: random_affine(x, g, c.max_shift, c.max_rotate, c.max_scale, rows, c.hflip)),
    Augmentation("cutout", ("cutout",), lambda x, g, c, rows: cutout(x, g, c.cutout, rows)),
)


def augmented(cfg: TrainConfig) -> bool:
    """Whether training batches are augmented at all."""
    return any(a.on(cfg) for a in AUGMENTATIONS)


def pipeline(cfg: TrainConfig, generator: torch.Generator,
             rows: tuple[int, int] | None = None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The augmentations cfg switches on, in order, as one function of a [0, 1] batch; None when there are none."""
    active = [a for a in AUGMENTATIONS if a.on(cfg)]
    if not active:
        return None

    def augment(x: torch.Tensor) -> torch.Tensor:
        for a in active:
            x = a.apply(x, generator, cfg, rows)
        return x

    return augment


def training_note(cfg: TrainConfig) -> str:
    """How the training figures differ from the held-out ones, for the curves' legend."""
    notes = (("augmented", augmented(cfg)), ("label-smoothed loss", cfg.label_smoothing),
             ("val/test on images and mirror images", cfg.tta_hflip))
    return ", ".join(n for n, on in notes if on)
