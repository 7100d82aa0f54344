"""Checkpoints: written atomically, read safely (weights_only), with errors a user can act on."""

from __future__ import annotations

import hashlib
import io
import os
import pickletools
import struct
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

import torch

from cnnlab.atomic import atomic_write_bytes
from cnnlab.config import MAX_IMAGE_SIDE, Range
from cnnlab.errors import CnnlabError
from cnnlab.readfile import FileRefused, NotAFile, open_regular

if TYPE_CHECKING:
    from cnnlab.config import TrainConfig

FORMAT_VERSION = 1  # bump when the checkpoint layout changes


class CheckpointError(CnnlabError):
    """A checkpoint that cannot be used; the message says why."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically, so a crash or a full disk never leaves a half-written
    checkpoint where a good one was. A SHA-256 over everything in it is stored beside it, so a copy
    damaged later (a bad disk, a broken transfer) is refused rather than trained or evaluated on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # into memory first: torch.save fails a full disk in C++ (a RuntimeError), not an OSError
    digest = fingerprint({k: v for k, v in state.items() if k != "format_version"})  # as _read_state checks it
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


def _read_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The contents of a cnnlab checkpoint as torch.load gives them (less the digest), checked as a whole before
    anything uses them: the one bounded reader under `Checkpoint.read`. Accepts a checkpoint file or a run directory
    (its best.pt).

    A checkpoint may come from anyone, so nothing in it is allocated before its size is known to fit the network its
    record names. In order, on one open descriptor of a regular file:

    1. The archive (`_archive`): its central directory, found from the end record, holds at most MAX_ENTRIES entries;
       every entry is stored, never compressed (torch.save stores every entry, so an entry's size is its size on
       disk, and an entry that inflates a few bytes into gigabytes is refused rather than bounded), lies within the
       file, and their sizes add up to no more than the file's; the record (data.pkl) is at most RECORD_LIMIT bytes.
    2. The record's pickle (`_record_cost`): what unpickling it takes, estimated from its opcodes without running
       them, is at most RECORD_LIMIT.
    3. The record, read with every tensor on the meta device (torch.load(map_location="meta"): shapes and declared
       storage sizes, no data read): a dict with model_state, config and a SHA-256, entries of the right types
       (`record_problem` without the tensors' values), a model this cnnlab has, buildable as recorded.
    4. Sizes against that network, built on the meta device (`_limits`): no tensor (its elements or its storage)
       larger than the network's largest or MARGIN; all of them together, and all the archive's tensor entries,
       within twice the network's bytes (the average of the weights beside the trained ones), twice its
       parameters' (AdamW's two moments; SGD keeps one), a step count per
       parameter and MARGIN (the random states, the running sums of the processes); the file within that plus its
       record and the zip's own headers.

    Only then is it read (torch.load(weights_only=True), from the same descriptor: a checkpoint is tensors and plain
    values, never code; torch checks each storage's entry against the size its record declares). Not through
    torch.load(mmap=True): copying tensors out of the mapping peaked at twice their size (a 512 MiB tensor: 1,026 MB,
    against 513 MB read), and a mapped storage declared larger than its entry is cut, unchecked, to the bytes that
    follow it in the file. Its SHA-256 must
    then match, and its record must be one cnnlab writes (`record_problem`: known entries of the right types and
    ranges, a config TrainConfig accepts, finite tensors). Anything else is a CheckpointError in one line naming
    the file.
    """
    path, f = _open_checkpoint(Path(path))
    with f:  # every read below is of this one file, whatever happens to its name meanwhile
        stored, state = _bounded_load(path, f, map_location)
    return _verified(path, stored, state)


def _open_checkpoint(path: Path) -> tuple[Path, IO[bytes]]:
    """The checkpoint file a path names (a run directory: its best.pt), open as a regular file."""
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory without best.pt, not a checkpoint")
    try:  # a named pipe would block torch.load for ever, and a link to /dev/zero never end
        return path, open_regular(path)
    except FileRefused as e:
        raise CheckpointError(f"{path} {e}, not a checkpoint" if isinstance(e, NotAFile) else f"{path}: {e}") from None


def _bounded_load(path: Path, f: IO[bytes], map_location: Any) -> tuple[str, Any]:
    """(the SHA-256 its record stores, what torch.load reads from `f`) once the archive, the record read on the meta
    device and the sizes against the network it names are checked (steps 1 to 4 of `_read_state`)."""
    try:
        archive = _archive(path, f)
        stored, shapes = _record(path, _torch_load(f, "meta"))
        _check_sizes(path, archive, shapes)
        return stored, _torch_load(f, map_location)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    except _Refused as e:
        raise CheckpointError(f"{path}: {e}") from None


def _verified(path: Path, stored: str, state: Any) -> dict[str, Any]:
    """The record read whole, once its SHA-256 matches the one read before and its contents are one cnnlab writes."""
    if not isinstance(state, dict) or state.get("sha256") != stored:  # changed between the two reads
        raise CheckpointError(f"{path} changed while it was read; try again once nothing is writing it")
    state.pop("sha256")
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


# What a checkpoint's archive may hold before its record is read: fixed, since the network that sizes the rest is
# named inside the record. A checkpoint of the largest network here (inception_bn: 176 tensors, 89 parameters) has
# 451 entries under AdamW (its weights, two moments and a step count a parameter, two random states, torch's six
# records); its record (data.pkl) is 4.9 KB after an epoch and grows by 133 bytes an epoch, which `_record_cost`
# counts as 1.9 KB: RECORD_LIMIT holds some 8,000 epochs.
MAX_ENTRIES = 4096
RECORD_LIMIT = 16 * 2**20  # the record's pickle, and what unpickling it may take (`_record_cost`)
MARGIN = 2**20  # beyond the network's own tensors: random states (3 x 5,056 bytes), running sums (24 bytes a process)
_SMALL_ENTRY = 4096  # torch's own records beside data.pkl: byteorder, version, .format_version, serialization_id
# An entry's bytes besides its data: local header (30), alignment (<= 68), zip64 field (20), data descriptor (24),
# directory record (46) and its zip64 field (28); its name twice, counted apart.
_ENTRY_OVERHEAD = 256
_DIR_RECORD = 512  # an entry's record in the zip directory at most: 46 bytes, its name (torch's are short), zip64
_MAX_DEPTH = 100  # values within values: a cnnlab record nests 5 deep (optimizer_state.state.0.exp_avg)


class _Refused(Exception):
    """A checkpoint refused before it is loaded; the message says why, after the file's name."""


@dataclass
class _Archive:
    size: int  # the file's, in bytes
    tensors: list[zipfile.ZipInfo]  # the entries under data/: one a storage
    others: list[zipfile.ZipInfo]  # data.pkl and torch's small records
    record_ops: int  # opcodes in data.pkl


def _archive(path: Path, f: IO[bytes]) -> _Archive:
    """The checked zip archive of the checkpoint `path` and its record (data.pkl), read from `f`; a _Refused saying
    why not."""
    size = os.fstat(f.fileno()).st_size
    entries = _entries(f, size, MAX_ENTRIES)
    names = [i.filename for i in entries]
    root = names[0].split("/", 1)[0] + "/" if "/" in names[0] else ""
    records = {n[len(root):] for n in names if n.startswith(root)}
    if "constants.pkl" in records:  # before torch.load, which warns about such files on stderr
        raise CheckpointError(f"{path} is a TorchScript export, not a checkpoint: run it with torch.jit.load, or pass "
                              "the run directory or its best.pt")
    if "data.pkl" not in records:
        raise _Refused("not a PyTorch checkpoint (a zip archive without PyTorch's data.pkl)")
    if len(records) != len(names):
        raise _Refused("not a PyTorch checkpoint (its entries are not one folder's, or one name appears twice)")
    for i in entries:
        if i.compress_type != zipfile.ZIP_STORED or i.flag_bits & 1 or i.compress_size != i.file_size:
            how = {zipfile.ZIP_DEFLATED: "deflated", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}.get(
                i.compress_type, "encrypted" if i.flag_bits & 1 else f"method {i.compress_type}")
            raise _Refused(f"its entry {i.filename[:80]} is compressed ({how}): torch.save stores every entry of a "
                           "checkpoint as it is, so that its size is known before it is read")
        small = RECORD_LIMIT if i.filename == root + "data.pkl" else _SMALL_ENTRY
        if not i.filename.startswith(root + "data/") and i.file_size > small:
            raise _Refused(f"its entry {i.filename[:80]} is {i.file_size:,} bytes; no checkpoint's is over {small:,}")
    claimed = sum(i.file_size for i in entries)
    if claimed > size:
        raise _Refused(f"its entries claim {claimed:,} bytes, more than the file's {size:,}: not an archive torch.save "
                       "wrote")
    f.seek(0)
    with zipfile.ZipFile(f) as z:
        try:
            record = z.read(root + "data.pkl")
        except (zipfile.BadZipFile, EOFError):  # a local header that does not match, a wrong CRC
            raise _Refused("damaged, cannot be read (its record does not match the archive's directory)") from None
    cost, ops = _record_cost(record)
    if cost > RECORD_LIMIT:
        raise _Refused(f"its record would take {cost:,} bytes or more to read; a checkpoint's takes at most "
                       f"{RECORD_LIMIT:,}")
    tensors = [i for i in entries if i.filename.startswith(root + "data/")]
    return _Archive(size, tensors, [i for i in entries if not i.filename.startswith(root + "data/")], ops)


_EOCD = struct.Struct("<4s4H2LH")  # the end record: signature, disks, entries (this disk, all), size, offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # signature, size, versions, disks, entries (this disk, all), size, offset


def _entries(f: IO[bytes], size: int, limit: int) -> list[zipfile.ZipInfo]:
    """The entries of the zip archive in `f` (`size` bytes), once its end record shows at most `limit` of them and a
    central directory that ends where the end record begins (as torch.save writes it: nothing before the first
    entry, no comment after the last record), so that reading the directory costs at most its few bytes an entry."""
    f.seek(0)
    head = f.read(4)
    if not head:
        raise _Refused("the file is empty, not a checkpoint")
    if head != b"PK\x03\x04":
        raise _Refused("not a PyTorch checkpoint (a checkpoint is a zip archive; this file is not one)")
    tail_size = min(size, _EOCD.size + _ZIP64_LOCATOR.size + _ZIP64_EOCD.size)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    if len(tail) < _EOCD.size or tail[-_EOCD.size:][:4] != b"PK\x05\x06":
        f.seek(max(0, size - 2**16 - _EOCD.size))
        if b"PK\x05\x06" in f.read():  # an end record followed by a comment or by other bytes
            raise _Refused("not an archive torch.save wrote (bytes follow its end record)")
        raise _Refused("truncated: the archive ends early (an interrupted write, copy or download?)")
    _, _, _, _, count, dir_size, dir_offset, _ = _EOCD.unpack(tail[-_EOCD.size:])
    dir_end = size - _EOCD.size
    locator = tail[-_EOCD.size - _ZIP64_LOCATOR.size:-_EOCD.size]
    if len(tail) == tail_size == _EOCD.size + _ZIP64_LOCATOR.size + _ZIP64_EOCD.size and locator[:4] == b"PK\x06\x07":
        record = _ZIP64_EOCD.unpack(tail[:_ZIP64_EOCD.size])
        if record[0] != b"PK\x06\x06":
            raise _Refused("damaged, cannot be read (its zip64 end record is missing)")
        count, dir_size, dir_offset = record[7], record[8], record[9]
        dir_end -= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size
    if count > limit:
        raise _Refused(f"holds {count:,} entries; a checkpoint has at most {limit:,}")
    if dir_offset + dir_size != dir_end or dir_size > count * _DIR_RECORD:
        raise _Refused("damaged, cannot be read (its zip directory is not where its end record says)")
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as z:
            entries = z.infolist()
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error):
        raise _Refused("damaged, cannot be read (its zip directory is broken)") from None
    if len(entries) != count or not entries:
        raise _Refused("damaged, cannot be read (its zip directory does not hold the entries its end record counts)")
    for i in entries:
        if i.header_offset + 30 + len(i.filename) + i.compress_size > dir_offset:
            raise _Refused(f"damaged, cannot be read (its entry {i.filename[:80]} reaches past the archive's data)")
    return entries


# What each pickle opcode may cost once unpickled, at most (measured through torch's weights-only unpickler, on
# floods of each: an empty set 238 bytes, an empty list or dict 74, a tensor rebuilt from memoised parts 570, a memo
# entry 34): a slot in a container, the stack or the memo for every opcode, the object it makes besides.
_OP_COST = 64
_MADE_COST = {
    **dict.fromkeys(("EMPTY_SET", "FROZENSET", "ADDITEMS"), 256),
    **dict.fromkeys(("EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "LIST", "DICT", "TUPLE", "TUPLE1", "TUPLE2",
                     "TUPLE3"), 128),
    **dict.fromkeys(("REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "BINPERSID", "PERSID", "GLOBAL", "STACK_GLOBAL",
                     "INST", "OBJ"), 1024),  # a tensor, a storage, an OrderedDict, a class looked up
}


def _record_cost(record: bytes) -> tuple[int, int]:
    """(an upper bound on the bytes unpickling `record` takes, its number of opcodes), from its opcodes alone: a
    pickle can make a large object of every byte (an empty set of one, a tensor of five), and share one object
    everywhere (a reference of two), so its length alone bounds neither. Stops counting past RECORD_LIMIT."""
    cost = ops = 0
    try:
        for op, arg, _ in pickletools.genops(record):
            ops += 1
            cost += _OP_COST + _MADE_COST.get(op.name, 0)
            if isinstance(arg, (str, bytes, bytearray)):
                cost += 4 * len(arg)  # a str of n UTF-8 bytes takes at most 4n once decoded
            elif isinstance(arg, int):
                cost += arg.bit_length() // 8
            if cost > RECORD_LIMIT:
                break
    except (ValueError, KeyError, UnicodeDecodeError, struct.error):  # not a pickle, or one cut short
        raise _Refused("damaged, cannot be read (its record is not a whole pickle)") from None
    return cost, ops


def _torch_load(f: IO[bytes], map_location: Any) -> Any:
    """torch.load of the file `f` (weights only), or a _Refused saying in words why not."""
    f.seek(0)
    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds for a bad file; the user needs one sentence
        raise _Refused(_unreadable(e)) from None


def _record(path: Path, state: Any) -> tuple[str, dict[str, Any]]:
    """(the stored SHA-256, the record without it) of a checkpoint read on the meta device, checked for the types
    of its entries (the tensors' values are not read yet)."""
    if not isinstance(state, dict) or "model_state" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a cnnlab checkpoint (a PyTorch file without model_state and config)")
    stored = state.pop("sha256", None)
    if stored is None:  # every checkpoint cnnlab has written carries one (since the first release of the format)
        raise CheckpointError(f"{path} has no SHA-256 of its contents, which every checkpoint cnnlab writes carries: "
                              "it was changed after it was written, or is not cnnlab's")
    if not isinstance(stored, str):
        raise CheckpointError(f"{path} is damaged: its SHA-256 is not one")
    problem = record_problem(state, values=False)
    if problem:
        raise CheckpointError(f"{path} is not a valid cnnlab checkpoint: {problem}")
    return stored, state


@dataclass
class _Limits:
    model: str
    network: int  # the network's tensors, bytes
    largest: int  # no tensor of a checkpoint may be larger
    total: int  # nor all of them together


def _limits(path: Path, state: dict[str, Any]) -> _Limits:
    """What a checkpoint of the network its record names may hold, from that network built on the meta device."""
    from cnnlab.config import TrainConfig
    from cnnlab.models import create_model, list_models

    cfg = TrainConfig.from_dict(state["config"])  # record_problem has checked it
    name = cfg.model
    if name not in list_models():
        raise CheckpointError(f"{path} holds model {name!r}, which this cnnlab does not have "
                              f"(it has: {', '.join(list_models())})")
    try:
        with torch.device("meta"):
            network = create_model(name, block=cfg.block, **state.get("model_kwargs", {}))
    except (ValueError, RuntimeError) as e:  # model_kwargs the network cannot take
        raise CheckpointError(f"{path}: model {name!r} cannot be built as recorded ({str(e)[:200]})") from None
    tensors = list(network.state_dict().values())
    params = list(network.parameters())
    own = sum(t.nbytes for t in tensors)
    return _Limits(name, own, max(max((t.nbytes for t in tensors), default=0), MARGIN),  # the weights twice (the
                   2 * own + 2 * sum(p.nbytes for p in params) + 8 * len(params) + MARGIN)  # average), the optimiser's


def _check_sizes(path: Path, archive: _Archive, state: dict[str, Any]) -> None:
    """Every tensor of a record read on the meta device, and the archive's tensor entries, within what the
    network the record names can need (`_limits`); values shared over and over refused before any walk meets them."""
    limits = _limits(path, state)
    about = f"a {limits.model} checkpoint as recorded (the network's tensors are {limits.network:,} bytes)"
    total, work, budget = 0, 0, 16 * archive.record_ops + 10_000
    stack: list[tuple[str, int, Any]] = [("", 0, state)]
    while stack:
        where, depth, x = stack.pop()
        work += 1 + (len(x) if isinstance(x, (str, bytes)) else 0)
        if work > budget:  # each value of a pickle is an opcode or two; sharing makes a walk of it exponential
            raise _Refused("its record shares values so often that reading it would never end: not cnnlab's")
        if depth > _MAX_DEPTH:
            raise _Refused(f"its record nests values over {_MAX_DEPTH} deep (at {where[:80]}): not cnnlab's")
        if isinstance(x, torch.Tensor):
            size = max(x.nbytes, x.untyped_storage().nbytes())  # its elements, or the storage read for them
            if size > limits.largest:
                raise _Refused(f"{where or 'a tensor'} is {size:,} bytes; no tensor of {about} is over "
                               f"{limits.largest:,}")
            total += size
            stack.extend((f"{where}.{str(k)[:40]}", depth + 1, v) for k, v in vars(x).items())
        elif isinstance(x, dict):
            stack.extend((f"{where}.{str(k)[:40]}" if where else str(k)[:40], depth + 1, v) for k, v in x.items())
            stack.extend((where, depth + 1, k) for k in x)
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend((f"{where}[{i}]", depth + 1, v) for i, v in enumerate(x))
    tensors = max(total, sum(i.file_size for i in archive.tensors))  # the entries: tensors hidden where no walk looks
    if tensors > limits.total:
        raise _Refused(f"its tensors come to {tensors:,} bytes, more than {about} holds ({limits.total:,} at most)")
    need = (limits.total + sum(i.file_size for i in archive.others) + _EOCD.size + _ZIP64_LOCATOR.size
            + _ZIP64_EOCD.size + sum(_ENTRY_OVERHEAD + 2 * len(i.filename) for i in archive.tensors + archive.others))
    if archive.size > need:
        raise _Refused(f"the file is {archive.size:,} bytes, more than {about} needs ({need:,} at most)")


def record_problem(state: dict[str, Any], values: bool = True) -> str | None:
    """What makes a checkpoint's contents (as torch.load gave them, less the digest) other than cnnlab writes them,
    in words; None when nothing does. Checks every entry's type and range, the config (TrainConfig.from_dict), and
    (`values`) that every tensor is finite: False for a record read on the meta device, whose tensors have shapes
    but no values yet. Whether the weights fit their network is `weights_problem`'s question, asked where the
    network is built."""
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
    for where, t in _tensors(state, "") if values else ():
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
    "trained_state": lambda d: None if d is None else "is empty" if d == {} else _dict_of(_tensor_problem)(d),
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
    checkpoints are) or None (not a regular file, not a zip, or not PyTorch's). torch.jit.save writes a
    constants.pkl beside the data.pkl that both write, one folder down (torch.serialization._is_torchscript_zip
    tests the same). Its zip directory is read as a checkpoint's is (`_entries`), within 65,535 entries."""
    try:
        with open_regular(path) as f:
            names = [i.filename for i in _entries(f, os.fstat(f.fileno()).st_size, 2**16 - 1)]
    except (FileRefused, OSError, _Refused):
        return None
    records = {n.split("/", 1)[-1] for n in names}
    if "constants.pkl" in records:
        return "torchscript"
    return "pickle" if "data.pkl" in records else None


def _unreadable(err: Exception) -> str:
    """Why torch.load could not read an archive whose directory was in order, in words a user can act on."""
    message = str(err)
    if "Weights only load failed" in message or "Unsupported global" in message:
        # torch's weights_only unpickler refused it. Its message goes on to suggest weights_only=False, which
        # would run whatever the file holds: not a thing to tell a user about a file from who knows where.
        return ("holds pickled Python objects other than tensors and plain data (code, perhaps), which were not "
                "loaded: a cnnlab checkpoint never does")
    first = (message.strip().splitlines() or [type(err).__name__])[0]
    return f"damaged, cannot be read ({first[:160]})"


# What a model takes when its checkpoint does not say: MNIST's, as every run did before model_kwargs were recorded.
MNIST_MODEL_KWARGS = {"in_channels": 1, "num_classes": 10, "image_size": 28}


@dataclass(kw_only=True)
class Checkpoint:
    """What a training run writes after every epoch (last.pt, and best.pt for the best epoch so far): the layout of
    the file, and the typed record every reader uses (`Checkpoint.read`: a trained model's loading, export, a
    resume). An entry a checkpoint of an older cnnlab lacks reads as its default below; what a resume cannot do
    without (RESUME_KEYS) is refused once, by `read(path, resume=True)`, so it is never None in a resumed run."""

    model_state: dict[str, torch.Tensor]  # float32 weights on the CPU, whatever the device trained on
    # A run that keeps an average of its weights (--ema): model_state is the average, the run's model, and these are
    # the weights the optimiser trains, which a resume continues from. None otherwise (model_state is those).
    trained_state: dict[str, torch.Tensor] | None = None
    # in_channels, num_classes, image_size: what create_model needs (MNIST's where a checkpoint does not say)
    model_kwargs: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any]  # the run's TrainConfig, as a dict (`train_config` reads it)
    classes: list[str] = field(default_factory=list)  # class names, by label (none recorded: [])
    epoch: int | None = None  # epochs finished (recorded, else the history's length; None without either)
    steps: int | None = None  # optimiser steps taken
    steps_per_epoch: int | None = None  # a resume on other data (another number of batches) is refused
    total_steps: int | None = None  # the run's planned length: a time-budget run resumes to the plan it had
    world_size: int = 1  # processes that trained it (a resume may use another number)
    metrics: dict[str, float] = field(default_factory=dict)  # this epoch's row of metrics.csv (else the history's last)
    history: list[dict[str, Any]] = field(default_factory=list)  # every epoch's row so far
    best: dict[str, float] | None = None  # the best epoch so far: its validation score, number and test accuracy
    optimizer_state: dict[str, Any] | None = None
    schedule_state: dict[str, Any] | None = None
    rng: dict[str, torch.Tensor] | None = None  # the global torch state and the run's generator (permutations, augmentation)
    branch_grads: list[dict[str, Any]] = field(default_factory=list)  # --record-branch-grads, per epoch
    # Written within an epoch (--checkpoint-every): where in epoch `epoch` + 1 it was (train/loop.EpochPosition's
    # fields, the running sums of every process, the learning rate the epoch began with, the time trained);
    # None after a whole epoch. `steps` then counts the steps taken within the epoch too.
    position: dict[str, Any] | None = None

    # What a resume cannot do without; a checkpoint from before they were written cannot be resumed.
    RESUME_KEYS = ("optimizer_state", "schedule_state", "rng", "steps", "history", "best", "total_steps")
    source: ClassVar[Path | None] = None  # the path it was read from (`read` sets it; not part of the record)

    def __post_init__(self) -> None:
        self.model_kwargs = {**MNIST_MODEL_KWARGS, **self.model_kwargs}

    @classmethod
    def read(cls, path: str | Path, *, resume: bool = False) -> "Checkpoint":
        """The record in a checkpoint file or a run directory (its best.pt), checked as a whole first (the bounded
        reading, its SHA-256 and `record_problem`: see `_read_state`); a CheckpointError in one line naming the file
        otherwise. `resume`: also refused, in one line, when it lacks what a resume needs (RESUME_KEYS)."""
        state = _read_state(path)
        if resume:
            missing = [k for k in cls.RESUME_KEYS if k not in state]
            if missing:
                raise CheckpointError(
                    f"{path} was written by an older cnnlab and cannot be resumed (no {', '.join(missing)})")
        history = state.get("history")
        derived = dict(  # an entry one older cnnlab did not write: as that one trained
            metrics=history[-1] if history else {}, epoch=len(history) if history is not None else None,
        )
        known = {f.name for f in fields(cls)}
        ckpt = cls(**{**derived, **{k: v for k, v in state.items() if k in known}})
        ckpt.source = Path(path)
        return ckpt

    @property
    def finished(self) -> bool:
        """Whether the run had taken every step it planned: its last epoch is written, nothing is left to train."""
        return self.steps >= self.total_steps

    @property
    def train_config(self) -> "TrainConfig":
        """The run's config, as a TrainConfig (record_problem has checked that it is one)."""
        from cnnlab.config import TrainConfig

        return TrainConfig.from_dict(self.config)

    @property
    def test_acc(self) -> float | None:
        """The test accuracy recorded with its epoch (None in a checkpoint without metrics)."""
        return self.metrics.get("test_acc")

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, {f.name: getattr(self, f.name) for f in fields(self)})


_RECORD_KEYS = {f.name for f in fields(Checkpoint)} | {"format_version"}
