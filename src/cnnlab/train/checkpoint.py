"""Checkpoints: written atomically, read safely (weights_only), with errors a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnlab.atomic import atomic_writer
from cnnlab.models import create_model
from cnnlab.train.config import TrainConfig
from cnnlab.train.runtime import resolve_device

FORMAT_VERSION = 1  # bump when the checkpoint layout changes


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says why."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically, so a crash or a full disk never leaves a half-written
    checkpoint where a good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as f:
        torch.save({"format_version": FORMAT_VERSION, **state}, f)


def checkpoint_dir(path: str | Path) -> Path:
    """The directory a checkpoint argument points into: the run directory itself, or the file's folder."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a cnnlab checkpoint. Accepts a checkpoint file or a run directory (its best.pt).

    Uses torch.load(weights_only=True): a checkpoint is tensors and plain values, never code.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds for a bad file; the user needs one sentence
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable cnnlab checkpoint ({reason[:200]})") from None
    if not isinstance(state, dict) or "model_state" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a cnnlab checkpoint (no model_state/config)")
    return state


def load_model(checkpoint: str | Path, device: str = "auto") -> tuple[torch.nn.Module, TrainConfig, dict]:
    """The model of a checkpoint, its config, and the checkpoint itself; on the chosen device, in eval mode."""
    dev = resolve_device(device)
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(state["config"])
    cfg.device = str(dev)
    model = create_model(cfg.model, **state.get("model_kwargs", {}))
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{checkpoint}: the weights do not fit model {cfg.model!r} ({first})") from None
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), cfg, state
