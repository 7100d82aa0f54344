"""Checkpoints: written atomically, read safely (weights_only), with errors a user can act on."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from cnnlab.atomic import atomic_write_bytes
from cnnlab.config import MAX_IMAGE_SIDE, Range
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
    digest = fingerprint({k: v for k, v in state.items() if k != "format_version"})  # as load_checkpoint checks it
    torch.save({"format_version": FORMAT_VERSION, **state, "sha256": digest}, buf)
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
    """Read a cnnlab checkpoint, checked as a whole before anything uses it. Accepts a checkpoint file or a run
    directory (its best.pt).

    Uses torch.load(weights_only=True): a checkpoint is tensors and plain values, never code. Its SHA-256 must be
    there and match, and its record must be one cnnlab writes (`record_problem`): known entries of the right types
    and ranges, a config TrainConfig accepts, finite tensors. Anything else is a CheckpointError in one line naming
    the file.
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
    if stored is None:  # every checkpoint cnnlab has written carries one (since the first release of the format)
        raise CheckpointError(f"{path} has no SHA-256 of its contents, which every checkpoint cnnlab writes carries: "
                              "it was changed after it was written, or is not cnnlab's")
    try:
        digest = fingerprint({k: v for k, v in state.items() if k != "format_version"})
    except (RecursionError, ValueError):  # nested thousands deep, or an integer too long to print
        raise CheckpointError(f"{path} is not a cnnlab checkpoint (it holds values nested too deeply or numbers "
                              "too long for one)") from None
    if stored != digest:
        raise CheckpointError(f"{path} is damaged: its contents do not match the SHA-256 stored with them")
    problem = record_problem(state)
    if problem:
        raise CheckpointError(f"{path} is not a valid cnnlab checkpoint: {problem}")
    return state


def record_problem(state: dict[str, Any]) -> str | None:
    """What makes a checkpoint's contents (as torch.load gave them, less the digest) other than cnnlab writes them,
    in words; None when nothing does. Checks every entry's type and range, the config (TrainConfig.from_dict), and
    that every tensor is finite. Whether the weights fit their network is `weights_problem`'s question, asked where
    the network is built."""
    from cnnlab.config import TrainConfig

    version = state.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        return (f"written by a newer cnnlab (format {version}; this one reads format {FORMAT_VERSION})" if newer
                else f"format_version {version!r} is not one cnnlab writes")
    unknown = sorted(str(k) for k in state if k not in _RECORD_KEYS)
    if unknown:
        return f"holds entries a cnnlab checkpoint does not have: {', '.join(unknown)[:160]}"
    for key, check in _ENTRY_CHECKS.items():
        if key in state:
            problem = check(state[key])
            if problem:
                return f"{key} {problem}"
    try:
        TrainConfig.from_dict(state["config"])
    except ValueError as e:
        return f"its config is not one cnnlab can run: {str(e)[:200]}"
    classes, kwargs = state.get("classes") or [], state.get("model_kwargs", {})
    if classes and len(classes) != kwargs.get("num_classes", 10):
        return f"it names {len(classes)} classes for a model of {kwargs.get('num_classes', 10)}"
    for where, t in _tensors(state, ""):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"{where} holds numbers that are not finite (NaN or infinity): the weights are broken"
    return None


def weights_problem(model: torch.nn.Module, weights: Any) -> str | None:
    """Why `weights` (a checkpoint's model_state) cannot be loaded into `model`, or None: every name the model
    has, none it lacks, each of the model's shape and dtype. Only reads the model's shapes, so a model built on
    the meta device is checked without allocating it."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    extra = [k for k in weights if k not in expected]
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "")] if missing else []) + \
                ([f"unexpected {', '.join(extra[:3])}" + (" ..." if len(extra) > 3 else "")] if extra else [])
        return "; ".join(parts)[:200]
    for k, want in expected.items():
        got = weights[k]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            return (f"{k} is {got.dtype} {tuple(got.shape)}, the model's is {want.dtype} {tuple(want.shape)}")[:200]
    return None


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path, name: str) -> None:
    """Load a checkpoint's model_state into `model` (network `name`), or refuse in one line naming the file."""
    problem = weights_problem(model, weights)
    if problem:
        raise CheckpointError(f"{path}: the weights do not fit model {name!r} ({problem})")
    model.load_state_dict(weights)


# What each entry of the record may hold (the types cnnlab writes; ranges where a value sizes something).
_COUNT = Range(0, 10**12, whole=True)
_MODEL_KWARGS = {
    "in_channels": Range(1, 16, whole=True),  # grey 1, RGB 3; an image folder has no more
    "num_classes": Range(2, 100_000, whole=True),
    "image_size": Range(1, MAX_IMAGE_SIDE, whole=True),  # see TrainConfig.image_size
}


def _number_problem(v: Any) -> str | None:
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) else f"must be a number, got {v!r}"[:120]


def _dict_of(value_problem, keys: Any = None, need: tuple[str, ...] = ()):
    """A check that a value is a dict with str keys (from `keys` when given, holding `need`) whose values pass."""

    def check(d: Any) -> str | None:
        if not isinstance(d, dict):
            return f"must be a dict, got {type(d).__name__}"
        for k, v in d.items():
            if not isinstance(k, str) or (keys is not None and k not in keys):
                return f"has an entry {k!r} it should not have"[:120]
            problem = value_problem(k, v)
            if problem:
                return f"{k} {problem}"
        lacking = [k for k in need if k not in d]
        return f"lacks {', '.join(lacking)}" if lacking else None

    return check


def _list_of(item_problem):
    def check(items: Any) -> str | None:
        if not isinstance(items, list):
            return f"must be a list, got {type(items).__name__}"
        for i, item in enumerate(items):
            problem = item_problem(item)
            if problem:
                return f"[{i}] {problem}"
        return None

    return check


def _tensor_problem(_: str, t: Any) -> str | None:
    if not isinstance(t, torch.Tensor):
        return f"must be a tensor, got {type(t).__name__}"
    if t.layout != torch.strided or t.is_complex():
        return f"must be a dense real tensor, got {t.layout} {t.dtype}"
    return None


def _row_value_problem(_: str, v: Any) -> str | None:
    return None if v is None else _number_problem(v)


_ROW = _dict_of(_row_value_problem)
# A checkpoint within an epoch: where in it (see Checkpoint.position).
_POSITION = {
    "step": _COUNT.problem,
    "sums": lambda t: _tensor_problem("", t) or (None if t.dim() == 2 and t.shape[1] == 3 else "must be (processes, 3)"),
    "rng_at_start": lambda t: _tensor_problem("", t) or (None if t.dtype == torch.uint8 else "must be bytes"),
    "lr": _number_problem,
    "elapsed": _number_problem,
    "recorder": lambda v: None if v is None or isinstance(v, dict) else "must be a dict",
}
_ENTRY_CHECKS = {
    "model_state": lambda d: "is empty" if d == {} else _dict_of(_tensor_problem)(d),
    "model_kwargs": _dict_of(lambda k, v: _MODEL_KWARGS[k].problem(v), keys=_MODEL_KWARGS),
    "config": lambda d: None if isinstance(d, dict) else f"must be a dict, got {type(d).__name__}",
    "classes": _list_of(lambda c: None if isinstance(c, str) and 0 < len(c) <= 255 else f"must be a name, got {c!r}"[:120]),
    "epoch": _COUNT.problem,
    "steps": _COUNT.problem,
    "steps_per_epoch": lambda v: None if v is None else Range(1, 10**12, whole=True).problem(v),
    "total_steps": _COUNT.problem,
    "world_size": Range(1, 10**6, whole=True).problem,
    "metrics": _ROW,
    "history": _list_of(_ROW),
    "best": _dict_of(_row_value_problem, need=("val", "epoch", "test")),
    "optimizer_state": _dict_of(lambda k, v: None, need=("state", "param_groups")),
    "schedule_state": _dict_of(lambda k, v: None),
    "rng": _dict_of(lambda k, t: _tensor_problem(k, t) or (None if t.dtype == torch.uint8 else "must be bytes"),
                    keys=("torch", "generator"), need=("torch", "generator")),
    "branch_grads": _list_of(lambda r: None if isinstance(r, dict) else "must be a dict"),
    "position": lambda p: None if p is None else _dict_of(lambda k, v: _POSITION[k](v), keys=_POSITION,
                                                          need=("step", "sums", "rng_at_start", "lr", "elapsed"))(p),
}


def _tensors(obj: Any, where: str):
    """Every tensor in a checkpoint's contents, with where it is (model_state.fc.weight)."""
    if isinstance(obj, torch.Tensor):
        yield where, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{where}[{i}]")


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
    if "Weights only load failed" in message or "Unsupported global" in message:
        # torch's weights_only unpickler refused it. Its message goes on to suggest weights_only=False, which
        # would run whatever the file holds: not a thing to tell a user about a file from who knows where.
        return ("holds pickled Python objects other than tensors and plain data (code, perhaps), which were not "
                "loaded: a cnnlab checkpoint never does")
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
    # Written within an epoch (--checkpoint-every): where in epoch `epoch` + 1 it was (train/loop.EpochPosition's
    # fields, the running sums of every process, the learning rate the epoch began with, the time trained);
    # None after a whole epoch. `steps` then counts the steps taken within the epoch too.
    position: dict[str, Any] | None = None

    # What a resume cannot do without; a checkpoint from before they were written cannot be resumed.
    RESUME_KEYS = ("optimizer_state", "schedule_state", "rng", "steps", "history", "best", "total_steps")
    source: ClassVar[Path | None] = None  # the file it was read from (for_resume sets it; not part of the record)

    @property
    def finished(self) -> bool:
        """Whether the run had taken every step it planned: its last epoch is written, nothing is left to train."""
        return self.steps >= self.total_steps

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
        ckpt = cls(**{**defaults, **{k: v for k, v in state.items() if k in known}})
        ckpt.source = Path(path)
        return ckpt


_RECORD_KEYS = {f.name for f in fields(Checkpoint)} | {"format_version"}
