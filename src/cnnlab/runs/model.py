"""A trained model: loaded from a checkpoint or a run directory, then logits, mirror averaging and evaluation.

Everything that uses a model after training (evaluate, predict, serve, export, the analyses, and the training loop's
own validation) goes through here, so a model is loaded, standardised and evaluated one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data import MNIST as ImageSet
from cnnlab.data import load_data
from cnnlab.data.batching import normalize
from cnnlab.device import autocast, autocast_dtype, resolve_device
from cnnlab.models import create_model, list_models
from cnnlab.runs.checkpoint import CheckpointError, load_checkpoint


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
def predict_logits(model: nn.Module, images: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Float32 logits for uint8 images, in batches of cfg.eval_batch_size, without gradients
    (averaged with the mirror images' when cfg.tta_hflip)."""
    model.eval()
    amp_dtype = autocast_dtype(images.device, cfg.amp)
    out = []
    for i in range(0, len(images), cfg.eval_batch_size):
        with autocast(images.device, amp_dtype):
            x = model_input(images[i : i + cfg.eval_batch_size], cfg)
            out.append(tta_forward(model, x, cfg.tta_hflip).float())
    return torch.cat(out) if out else torch.empty(0, model.num_classes)


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


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) on a split; NaNs for an empty split."""
    if len(images) == 0:
        return float("nan"), float("nan")
    loss_sum, correct, n = evaluation_sums(model, images, labels, cfg).tolist()
    return loss_sum / n, correct / n


@dataclass
class TrainedModel:
    """A checkpoint's network in eval mode on a device, with the config it was trained under and its record."""

    network: nn.Module
    config: TrainConfig
    state: dict[str, Any] = field(repr=False)
    source: Path

    @property
    def classes(self) -> tuple[str, ...]:
        return class_names(self.state, self.config)

    @property
    def model_kwargs(self) -> dict[str, int]:
        """in_channels, num_classes, image_size (MNIST's for checkpoints from before they were recorded)."""
        return {"in_channels": 1, "num_classes": 10, "image_size": 28, **self.state.get("model_kwargs", {})}

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for uint8 images shaped like the training data, mirror-averaged as the model was trained."""
        return predict_logits(self.network, images.to(next(self.network.parameters()).device), self.config)


def training_data(cfg: TrainConfig, data_dir: str | None = None, progress: bool = False, recorded: bool = True) -> ImageSet:
    """The data set a run trains or was trained on, as its config records it (an image folder at its recorded size
    and split). `data_dir`: where the files are, or an image folder's new place; `recorded`: the config comes from a
    trained run, so a folder that is gone gets told how to name its new place (a new run passes False)."""
    return load_data(cfg.dataset, data_dir, image_size=cfg.image_size, seed=cfg.seed, progress=progress, recorded=recorded)


def load(checkpoint: str | Path, device: str = "auto") -> TrainedModel:
    """The trained model in a checkpoint file or a run directory (its best.pt), on `device` (see cnnlab.device)."""
    network, cfg, state = load_model(checkpoint, device)
    return TrainedModel(network, cfg, state, Path(checkpoint))


def load_model(checkpoint: str | Path, device: str = "auto") -> tuple[torch.nn.Module, TrainConfig, dict]:
    """The model of a checkpoint, its config, and the checkpoint itself; on the chosen device, in eval mode
    (`load` wraps the three in a TrainedModel)."""
    dev = resolve_device(device)
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(state["config"])
    cfg.device = str(dev)
    if cfg.model not in list_models():
        raise CheckpointError(f"{checkpoint} holds model {cfg.model!r}, which this cnnlab does not have "
                              f"(it has: {', '.join(list_models())})")
    model = create_model(cfg.model, **state.get("model_kwargs", {}))
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()] or [str(e)]
        raise CheckpointError(f"{checkpoint}: the weights do not fit model {cfg.model!r} ({lines[0][:160]})") from None
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), cfg, state


def class_names(state: dict, cfg: TrainConfig) -> tuple[str, ...]:
    """The class names of a checkpoint's model, by label: as recorded in training, else its data set's
    (checkpoints from before they were recorded), else the labels' numbers."""
    from cnnlab.data.datasets import DATASETS

    n = int(state.get("model_kwargs", {}).get("num_classes", 10))
    if len(state.get("classes") or ()) == n:
        return tuple(str(c) for c in state["classes"])
    if cfg.dataset in DATASETS and len(DATASETS[cfg.dataset].classes) == n:
        return tuple(DATASETS[cfg.dataset].classes)
    return tuple(str(i) for i in range(n))
