"""Checkpoints: written atomically, read safely (weights_only), with errors a user can act on."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from cnnlab.atomic import atomic_write_bytes
from cnnlab.readfile import FileRefused, NotAFile, open_regular

FORMAT_VERSION = 1  # bump when the checkpoint layout changes


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says why."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically, so a crash or a full disk never leaves a half-written
    checkpoint where a good one was. A SHA-256 over everything in it is stored beside it, so a copy
    damaged later (a bad disk, a broken transfer) is refused rather than trained or evaluated on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # into memory first: torch.save fails a full disk in C++ (a RuntimeError), not an OSError
    torch.save({"format_version": FORMAT_VERSION, **state, "sha256": fingerprint(state)}, buf)
    atomic_write_bytes(path, buf.getbuffer())


def fingerprint(obj: Any) -> str:
    """SHA-256 over a checkpoint's contents: every tensor's dtype, shape and bytes, every other value's repr,
    dict keys in sorted order. The same state gives the same digest in any process."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # reshape: a 0-d tensor cannot be viewed as bytes
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                h.update(repr(k).encode())
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    walk(obj)
    return h.hexdigest()


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
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory without best.pt, not a checkpoint")
    try:  # a named pipe would block torch.load for ever, and a link to /dev/zero never end
        open_regular(path).close()
    except FileRefused as e:
        raise CheckpointError(f"{path} {e}, not a checkpoint" if isinstance(e, NotAFile) else f"{path}: {e}") from None
    if archive_kind(path) == "torchscript":  # before torch.load, which warns about such files on stderr
        raise CheckpointError(f"{path} is a TorchScript export, not a checkpoint: run it with torch.jit.load, "
                              "or pass the run directory or its best.pt")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds for a bad file; the user needs one sentence
        raise CheckpointError(f"{path}: {_unreadable(path, e)}") from None
    if not isinstance(state, dict) or "model_state" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a cnnlab checkpoint (a PyTorch file without model_state and config)")
    stored = state.pop("sha256", None)
    if stored is not None and stored != fingerprint({k: v for k, v in state.items() if k != "format_version"}):
        raise CheckpointError(f"{path} is damaged: its contents do not match the SHA-256 stored with them")
    return state


def archive_kind(path: str | Path) -> str | None:
    """What kind of PyTorch zip archive a file is: "torchscript" (torch.jit.save), "pickle" (torch.save, as
    checkpoints are) or None (not a zip, or not PyTorch's). torch.jit.save writes a constants.pkl beside the
    data.pkl that both write, one folder down (torch.serialization._is_torchscript_zip tests the same)."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as z:
            records = {n.split("/", 1)[-1] for n in z.namelist()}
    except (OSError, zipfile.BadZipFile):
        return None
    if "constants.pkl" in records:
        return "torchscript"
    return "pickle" if "data.pkl" in records else None


def _unreadable(path: Path, err: Exception) -> str:
    """Why torch.load could not read a file, in words a user can act on."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not head:
        return "the file is empty, not a checkpoint"
    if head != b"PK\x03\x04":
        return "not a PyTorch checkpoint (a checkpoint is a zip archive; this file is not one)"
    if not zipfile.is_zipfile(path):
        return "truncated: the archive ends early (an interrupted write, copy or download?)"
    with zipfile.ZipFile(path) as z:
        if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist()):
            return "not a PyTorch checkpoint (a zip archive without PyTorch's data.pkl)"
    message = str(err)
    if "Unsupported global" in message or "not an allowed global" in message:
        return ("holds Python objects other than tensors and plain values, so it was not loaded "
                "(weights_only: loading it could run code)")
    first = (message.strip().splitlines() or [type(err).__name__])[0]
    return f"damaged, cannot be read ({first[:160]})"


@dataclass
class Checkpoint:
    """What a training run writes after every epoch (last.pt, and best.pt for the best epoch so far): the layout of
    the file, and the part of it a resume needs. Readers that only use the model (evaluate, predict, export)
    take `load_checkpoint`'s dict; a resume takes this record, so a file without what it needs is refused once."""

    model_state: dict[str, torch.Tensor]  # float32 weights on the CPU, whatever the device trained on
    model_kwargs: dict[str, int]  # in_channels, num_classes, image_size: what create_model needs
    config: dict[str, Any]  # the run's TrainConfig, as a dict
    classes: list[str]  # class names, by label
    epoch: int  # epochs finished
    steps: int  # optimiser steps taken
    steps_per_epoch: int  # a resume on other data (another number of batches) is refused
    total_steps: int  # the run's planned length: a time-budget run resumes to the plan it had
    world_size: int  # processes that trained it (a resume may use another number)
    metrics: dict[str, float]  # this epoch's row of metrics.csv
    history: list[dict[str, Any]]  # every epoch's row so far
    best: dict[str, float]  # the best epoch so far: its validation score, number and test accuracy
    optimizer_state: dict[str, Any]
    schedule_state: dict[str, Any]
    rng: dict[str, torch.Tensor]  # the global torch state and the run's generator (permutations, augmentation)
    branch_grads: list[dict[str, Any]] = field(default_factory=list)  # --record-branch-grads, per epoch

    # What a resume cannot do without; a checkpoint from before they were written cannot be resumed.
    RESUME_KEYS = ("optimizer_state", "schedule_state", "rng", "steps", "history", "best", "total_steps")

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, {f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def for_resume(cls, path: str | Path) -> "Checkpoint":
        """The record in `path`, refused in one line if it lacks what a resume needs."""
        state = load_checkpoint(path)
        missing = [k for k in cls.RESUME_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"{path} was written by an older cnnlab and cannot be resumed (no {', '.join(missing)})")
        history = list(state["history"])
        defaults = dict(  # written by every cnnlab that wrote RESUME_KEYS but one: filled as that one trained
            model_kwargs={}, classes=[], branch_grads=[], world_size=1, metrics=history[-1] if history else {},
            epoch=len(history), steps_per_epoch=None,
        )
        known = {f.name for f in fields(cls)}
        return cls(**{**defaults, **{k: v for k, v in state.items() if k in known}})
