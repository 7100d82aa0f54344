"""In-memory batching for small image sets: uint8 tensors on the device, sliced by a permutation.

MNIST is 47 MB as uint8, so the whole set lives on the training device. An epoch is a `randperm`;
a batch is an index into it, normalised (and, for training, augmented) as one tensor operation.
No per-sample Dataset or DataLoader sits on the hot path.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F


def normalize(
    images: torch.Tensor,
    mean: float,
    std: float,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, C, H, W) -> float (N, C, H, W), scaled to [0, 1] then standardised.

    The floats are torch's default dtype (float32 unless changed), so a model built under
    `torch.set_default_dtype(torch.float64)` trains in float64 end to end (the data-parallel tests do that).
    `augment`, if given, runs on the [0, 1] images before standardising, where the background is 0.
    """
    x = images.to(torch.get_default_dtype()).div_(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if augment is not None:
        x = augment(x)
    return x.sub_(mean).div_(std)


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    max_shift: float = 2.0,
    max_rotate: float = 0.0,
    max_scale: float = 0.0,
    rows: tuple[int, int] | None = None,
    hflip: bool = False,
) -> torch.Tensor:
    """Shift each image by up to max_shift pixels, rotate by up to max_rotate degrees and scale by up to
    (1 +- max_scale), all drawn per image; one affine_grid + grid_sample call for the whole batch.

    Works on float images whose background is 0 (apply before normalising): the border fills with 0.
    `rows=(first, total)` says x is rows first.. of a batch of `total` split among processes: the draws are
    made for the whole batch and this part's are used, so every process's generator stays in step and the
    images get the transforms they would get in one process.
    """
    n, _, h, w = x.shape
    if max_shift == 0 and max_rotate == 0 and max_scale == 0 and not hflip:
        return x
    first, total = rows if rows is not None else (0, n)
    u = torch.rand(total, 4, generator=generator, device=x.device, dtype=torch.float32)[first : first + n]
    u = u.mul_(2).sub_(1)
    # Mirroring is drawn only when asked for, so the other transforms draw exactly what they did before.
    mirror = 1.0
    if hflip:
        mirror = torch.rand(total, generator=generator, device=x.device)[first : first + n].lt(0.5).float() * 2 - 1
    angle = u[:, 0] * math.radians(max_rotate)
    scale = 1 + u[:, 1] * max_scale
    # affine_grid works in [-1, 1] coordinates: a shift of s pixels is 2*s/size there.
    tx = u[:, 2] * (2 * max_shift / w)
    ty = u[:, 3] * (2 * max_shift / h)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # x is mirrored by negating the first column (the sampling grid's x coordinate).
    theta = torch.stack([torch.stack([cos * mirror, -sin, tx], 1), torch.stack([sin * mirror, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cutout(
    x: torch.Tensor, generator: torch.Generator, size: int, rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """Blank a size x size square of every image (DeVries and Taylor's cutout), its centre drawn uniformly
    over the image, so a square near an edge is partly outside it. Fills with 0, the background of [0, 1]
    images (apply before normalising). `rows` as in random_affine."""
    n, _, h, w = x.shape
    if size <= 0:
        return x
    first, total = rows if rows is not None else (0, n)
    centre = torch.rand(total, 2, generator=generator, device=x.device, dtype=torch.float32)[first : first + n]
    cy = (centre[:, 0] * h).floor().view(n, 1, 1)
    cx = (centre[:, 1] * w).floor().view(n, 1, 1)
    lo = size // 2  # a square of `size` pixels from centre - lo to centre - lo + size - 1
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    inside = (ys >= cy - lo) & (ys < cy - lo + size) & (xs >= cx - lo) & (xs < cx - lo + size)
    return x.masked_fill(inside.unsqueeze(1), 0.0)


class InMemoryLoader:
    """Batches of (uint8 images, labels) sliced from tensors already on the device.

    Args:
        images: (N, H, W) or (N, C, H, W) uint8 tensor.
        labels: (N,) int64 tensor on the same device.
        batch_size: images per batch.
        shuffle: draw a fresh permutation each epoch from `generator` (else keep the order).
        drop_last: drop the final short batch (keeps every training step the same shape).
        generator: the random source for permutations, so a seed repeats a run exactly.
        part: (first row, rows) of every batch to yield, for a process of a data-parallel run (all
            processes draw the same permutation and each takes its part of each batch); None = all.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        part: tuple[int, int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if shuffle and generator is None:
            raise ValueError("shuffle=True needs a generator (so runs can repeat)")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = generator
        self.part = part

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches()

    def batches(self, start: int = 0, rng_after_order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from batch `start` on. The permutation is drawn as for the whole epoch (the generator
        must be in its state at the epoch's start); `rng_after_order` then puts the generator where it was at
        batch `start`, so that an epoch continued from a checkpoint draws what the unbroken epoch drew."""
        n = len(self.images)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.generator.device)
            order = order.to(self.images.device)
        else:
            order = None
        if rng_after_order is not None and self.generator is not None:
            self.generator.set_state(rng_after_order)
        for i in range(start, len(self)):
            if order is None:
                sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
                yield self.images[sl], self.labels[sl]
            else:
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                if self.part is not None:
                    idx = idx[self.part[0] : self.part[0] + self.part[1]]
                yield self.images[idx], self.labels[idx]
