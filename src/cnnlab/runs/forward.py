"""A network's forward pass as training and every use after it run it: uint8 images in, the run's standardisation and
memory layout, mirror averaging, logits in batches, and the one evaluation (loss, accuracy) of a split.

The training loop's validation, `TrainedModel.evaluate`, the analyses and export all call these, so a model is fed,
averaged and scored one way.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data.tensors.batching import normalize
from cnnlab.device import autocast, autocast_dtype


def model_input(
    images: torch.Tensor, cfg: TrainConfig, augment: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """uint8 images -> the float batch the model takes: scaled, augmented if asked (on [0, 1] pixels),
    standardised with the run's statistics, in the run's memory layout."""
    x = normalize(images, cfg.norm_mean, cfg.norm_std, augment=augment)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def tta_forward(model: nn.Module, x: torch.Tensor, hflip: bool) -> torch.Tensor:
    """The model's logits for a normalised batch; with hflip, the mean of the logits for the images and
    for their mirror images (test-time augmentation for models trained with mirroring)."""
    logits = model(x)
    if hflip:
        logits = (logits + model(x.flip(-1))) / 2
    return logits


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, cfg: TrainConfig,
                   step: Callable[[int], object] = lambda n: None) -> torch.Tensor:
    """Float32 logits for uint8 images, in batches of cfg.eval_batch_size, without gradients
    (averaged with the mirror images' when cfg.tta_hflip); `step(n)` is told each batch of n images done."""
    model.eval()
    amp_dtype = autocast_dtype(images.device, cfg.amp)
    out = []
    for i in range(0, len(images), cfg.eval_batch_size):
        with autocast(images.device, amp_dtype):
            x = model_input(images[i : i + cfg.eval_batch_size], cfg)
            out.append(tta_forward(model, x, cfg.tta_hflip).float())
        step(len(x))
    return torch.cat(out) if out else torch.empty(0, model.num_classes, device=images.device)


@torch.no_grad()
def evaluation_sums(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """float64 [summed cross-entropy, correct, count] over a split: sums, so that the parts a data-parallel
    run evaluates in each process add up to the whole."""
    logits = predict_logits(model, images, cfg)
    return torch.stack([
        F.cross_entropy(logits, labels, reduction="sum").double(),
        (logits.argmax(1) == labels).sum().double(),
        torch.tensor(float(len(logits)), dtype=torch.float64, device=logits.device),
    ])


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, *,
             part: slice | None = None,
             reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) on a split; NaNs for an empty split.

    Args:
        part: the slice of the split this process evaluates (a data-parallel run's share); None: all of it.
        reduce: adds the float64 [loss sum, correct, count] of every process (an all-reduce); None: this
            process's sums are the whole.
    """
    if len(images) == 0:
        return float("nan"), float("nan")
    if part is not None:
        images, labels = images[part], labels[part]
    sums = evaluation_sums(model, images, labels, cfg)
    if reduce is not None:
        sums = reduce(sums)
    loss_sum, correct, n = sums.tolist()
    return loss_sum / n, correct / n
