"""A checkpoint is bounded before it is loaded: a few megabytes on disk that ask for gigabytes (a deflated entry, a
stored one in a sparse file, a storage declared larger than its entry, weights of a far larger network, a flood of
entries, a pickle that makes an object of every byte, values shared so often that a walk over them never ends) are
refused in one line, with no more memory taken than the network the record names could need. Peak memory is
measured in a child process, never estimated."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.models import create_model
from cnnlab.runs import Checkpoint, CheckpointError, load
from cnnlab.runs.checkpoint import MAX_ENTRIES, fingerprint

from ..support.data import synthetic_mnist

GIB = 2**30
ROOT = Path(__file__).resolve().parents[2]
_ZEROS = bytes(16 * 2**20)  # what a zero-filled entry is written in: stored, each chunk becomes a hole in the file
_MARK = 40961  # the length of a placeholder tensor: a number nothing else in the tiny run's record holds


def _record(run: Path) -> dict:
    """A real checkpoint's contents, less its digest."""
    state = torch.load(run / "last.pt", weights_only=True)
    state.pop("sha256")
    return state


def _entries(state: dict) -> dict[str, bytes]:
    """What torch.save writes for `state`, entry by entry, in order."""
    buf = io.BytesIO()
    torch.save(state, buf)
    with zipfile.ZipFile(buf) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _key_of(entries: dict[str, bytes], size: int) -> str:
    """The name of the one storage entry of `size` bytes."""
    (name,) = [n for n, data in entries.items() if "/data/" in n and len(data) == size]
    return name


def _declare(pickle: bytes, old: int, new: int) -> bytes:
    """The record with the length `old` (a placeholder's storage and its one dimension) declared as `new`."""
    was, now = b"M" + struct.pack("<H", old), b"J" + struct.pack("<i", new)
    assert pickle.count(was) == 2, "the placeholder's length appears elsewhere in the record"
    return pickle.replace(was, now)


class _SparseFile(io.FileIO):
    """A file in which every chunk of _ZEROS written becomes a hole: a gigabyte entry costs no disk and no time."""

    def write(self, b) -> int:
        if b is _ZEROS:
            self.seek(len(b), os.SEEK_CUR)
            return len(b)
        return super().write(b)


def _write(path: Path, entries: dict[str, bytes | int], deflate: tuple[str, ...] = (), mode: str = "w",
           zip64: bool = True) -> Path:
    """A zip archive of `entries`: bytes stored as they are; an int, that many zero bytes, stored as holes or deflated
    when named in `deflate` (with zip64 fields, as torch.save writes large entries). mode "a" adds to an archive
    already there."""
    with _SparseFile(path, "r+" if mode == "a" else "w") as f, zipfile.ZipFile(f, mode, compresslevel=9) as z:
        for name, data in entries.items():
            if isinstance(data, bytes):
                z.writestr(name, data)
                continue
            assert data % len(_ZEROS) == 0
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
            with z.open(info, "w", force_zip64=zip64) as w:
                for _ in range(data // len(_ZEROS)):
                    w.write(_ZEROS)
    return path


def _digest(state: dict, at: tuple, size: int) -> str:
    """The SHA-256 cnnlab's fingerprint gives `state` once the tensor at `at` holds `size` zero bytes (uint8), worked
    out as anyone can, without those bytes in memory: the digest is no secret."""
    h = hashlib.sha256()

    def walk(x, where: tuple) -> None:
        if where == at:
            h.update(f"T{torch.uint8}{(size,)}".encode())
            for start in range(0, size, len(_ZEROS)):
                h.update(memoryview(_ZEROS)[: min(len(_ZEROS), size - start)])
        elif isinstance(x, torch.Tensor):
            t = x.detach().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                h.update(repr(k).encode())
                walk(x[k], (*where, k))
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                walk(v, where)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    walk({k: v for k, v in state.items() if k != "format_version"}, ())
    return h.hexdigest()


def _crafted(run: Path, out: Path) -> list[tuple[str, Path, str]]:
    """(case, file, what its refusal says) for every crafted form, written into `out`."""
    base = _record(run)
    forms = []

    # rng.torch a 1 GiB zero tensor, deflated (about 1 MB on disk), with a correct SHA-256 and with none
    state = {**base, "rng": {**base["rng"], "torch": torch.zeros(_MARK, dtype=torch.uint8)}}
    assert _digest(state, ("rng", "torch"), _MARK) == fingerprint({k: v for k, v in state.items()
                                                                  if k != "format_version"})
    signed = _entries({**state, "sha256": _digest(state, ("rng", "torch"), GIB)})
    unsigned = _entries(state)
    big = _key_of(signed, _MARK)
    pickle = next(n for n in signed if n.endswith("/data.pkl"))
    common = _write(out / "common.zip", {n: (GIB if n == big else d) for n, d in signed.items() if n != pickle},
                    deflate=(big,))
    for case, entries in (("signed", signed), ("unsigned", unsigned)):
        path = out / f"deflated-{case}.pt"
        shutil.copy(common, path)
        _write(path, {pickle: _declare(entries[pickle], _MARK, GIB)}, mode="a")
        forms.append((f"rng.torch a deflated 1 GiB zero tensor, {case}", path, "is compressed (deflated)"))
    assert (out / "deflated-signed.pt").stat().st_size < 8 * 2**20

    # the same tensor stored, in a sparse file: 1 GiB long, a few kilobytes on disk
    path = _write(out / "sparse.pt", {n: (GIB if n == big else _declare(d, _MARK, GIB) if n == pickle else d)
                                      for n, d in signed.items()})
    forms.append(("rng.torch a stored 1 GiB tensor in a sparse file", path, "rng.torch is 1,073,741,824 bytes"))

    # a storage its record declares far larger than its entry
    path = _write(out / "declared.pt", {n: (_declare(d, _MARK, GIB) if n == pickle else d) for n, d in signed.items()})
    forms.append(("rng.torch's storage declared 1 GiB, its entry 40 KB", path, "rng.torch is 1,073,741,824 bytes"))

    # a central directory that claims a 1 GiB entry the file does not hold
    data = bytearray((out / "declared.pt").read_bytes())
    at = data.rindex(big.encode()) - 46  # the entry's record in the central directory
    assert data[at:at + 4] == b"PK\x01\x02"
    data[at + 20:at + 28] = struct.pack("<LL", GIB, GIB)
    (out / "claims.pt").write_bytes(data)
    forms.append(("a central directory claiming a 1 GiB entry", out / "claims.pt", "reaches past the archive's data"))

    # an entry no tensor refers to: 1 GiB stored where no walk over the record looks
    path = _write(out / "hidden.pt", {**signed, "archive/data/999": GIB})
    forms.append(("an unreferenced 1 GiB stored entry", path, "its tensors come to"))

    # weights of a network far larger than the record's: a 256 MiB fc.weight for basic_cnn's 20 KB one
    n = 12289  # float32 elements
    state = {**base, "model_state": {**base["model_state"], "fc.weight": torch.zeros(n)}}
    entries = _entries({**state, "sha256": "0" * 64})
    weight = _key_of(entries, 4 * n)
    path = _write(out / "weights.pt", {k: (GIB // 4 if k == weight else _declare(d, n, GIB // 16) if k == pickle else d)
                                       for k, d in entries.items()})
    forms.append(("a 256 MiB fc.weight in a basic_cnn checkpoint", path, "model_state.fc.weight is 268,435,456 bytes"))

    # each tensor within the network's largest, together eight times all it can hold
    extra = {1000 + i: {"momentum_buffer": torch.zeros(2**18)} for i in range(8)}
    optimizer = base["optimizer_state"]
    state = {**base, "optimizer_state": {**optimizer, "state": {**optimizer["state"], **extra}}}
    path = _write(out / "many.pt", _entries({**state, "sha256": "0" * 64}))
    forms.append(("eight 1 MiB optimiser tensors beside a 34 KB network", path, "its tensors come to"))

    # a flood of entries
    path = _write(out / "flood.pt", {**signed, **{f"archive/junk/{i}": b"" for i in range(MAX_ENTRIES + 1000)}})
    forms.append((f"{MAX_ENTRIES + 1000} empty entries", path, f"entries; a checkpoint has at most {MAX_ENTRIES:,}"))

    # a record whose unpickling makes an empty set (238 bytes) of every byte: 1 MiB of them
    record = unsigned[pickle]
    assert record.endswith(b"u.")
    sets = record[:-2] + b"X\x07\x00\x00\x00payload(" + b"\x8f" * 2**20 + b"lu."
    path = _write(out / "sets.pt", {n: (sets if n == pickle else d) for n, d in signed.items()})
    forms.append(("a record of 1 MiB empty sets", path, "its record would take"))

    # values shared 64 levels deep: a few hundred bytes, 2**64 values to walk (the digest walks every one)
    shared: dict = {"x": 0}
    for _ in range(64):
        shared = {"a": shared, "b": shared}
    state = {**base, "optimizer_state": {**base["optimizer_state"], "param_groups": shared}}
    path = _write(out / "shared.pt", _entries({**state, "sha256": "0" * 64}))
    forms.append(("values shared 64 levels deep", path, "shares values so often"))

    # lists nested 50,000 deep (100 KB of pickle), where the record's own checks do not look
    record = _entries({**base, "schedule_state": {"x": "DEEPDEEP"}, "sha256": "0" * 64})
    deep = record[pickle].replace(b"X\x08\x00\x00\x00DEEPDEEP", b"]" * 50_000 + b"a" * 49_999)
    path = _write(out / "deep.pt", {**record, pickle: deep})
    forms.append(("lists nested 50,000 deep", path, "nests values over 100 deep"))
    return forms


@pytest.fixture(scope="module")
def crafted(tiny_run, tmp_path_factory):
    return _crafted(tiny_run, tmp_path_factory.mktemp("crafted"))


# Loads the real checkpoint first (what any load imports and builds once is not counted), then each crafted one: the
# peak resident memory during the load above the memory resident just before it. The peak is the kernel's high-water
# mark, reset before each load (clear_refs 5) and read as VmHWM; getrusage's ru_maxrss is the same mark, but a child
# inherits its parent's across fork and exec (under pytest it began 69 MB above the child's resident memory, which
# would hide an allocation that size), and it cannot be reset.
_MEASURE = r"""
import json, sys
import torch, cnnlab
from cnnlab.runs import Checkpoint, CheckpointError

def high_water():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

Checkpoint.read(sys.argv[1])
for path in sys.argv[2:]:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = high_water()
    try:
        Checkpoint.read(path)
        message = None
    except CheckpointError as e:
        message = str(e)
    print(json.dumps({"message": message, "peak_growth": high_water() - before}), flush=True)
"""

# What the measurement itself may add, besides the model's twice: the record's few kilobytes unpickled, the zip
# directory, the allocator's arenas. The crafted files ask for 8 MiB to 1 GiB (one of them, for a walk without end).
_SLACK = 6 * 2**20


@pytest.mark.processes  # measured in a fresh process
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable high-water mark")
def test_crafted_checkpoints_are_refused_before_their_size_is_allocated(tiny_run, crafted, reliability):
    with torch.device("meta"):
        model_bytes = sum(t.nbytes for t in create_model("basic_cnn").state_dict().values())
    files = [str(tiny_run / "best.pt"), *(str(p) for _, p, _ in crafted)]
    result = subprocess.run([sys.executable, "-c", _MEASURE, *files], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(crafted)
    for (case, path, expect), seen in zip(crafted, lines):
        message = seen["message"]
        assert message is not None, f"{case}: loaded"
        assert expect in message and str(path) in message, (case, message)
        assert "\n" not in message and len(message) < 400, (case, message)
        assert seen["peak_growth"] <= 2 * model_bytes + _SLACK, (case, seen)
    worst = max(s["peak_growth"] for s in lines)
    reliability("checkpoints", "crafted archives: " + "; ".join(c for c, _, _ in crafted), len(crafted),
                f"each refused in one line naming the file and what is wrong, before its size was allocated (peak "
                f"resident memory, measured in a child process: at most {worst / 2**20:.1f} MiB above the level "
                f"before the load, for files that ask for 8 MiB to 1 GiB)")


def test_commands_and_torch_hub_refuse_a_crafted_run_in_one_line(tiny_run, crafted, tmp_path, capsys, reliability):
    """evaluate and predict on a run directory whose best.pt is a deflated 1 GiB tensor, and torch.hub.load with it
    as checkpoint: one line, exit 1 (hub: a CheckpointError), nothing allocated on its behalf (measured above)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    _, planted, expect = crafted[0]
    for name in ("best.pt", "last.pt"):
        shutil.copy(planted, run / name)
    for argv in (["evaluate", str(run)], ["predict", str(run), "x.png"], ["evaluate", str(run / "last.pt")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expect in err and "Traceback" not in err, (argv, err)
    with pytest.raises(CheckpointError, match="is compressed"):
        torch.hub.load(str(ROOT), "basic_cnn", source="local", checkpoint=str(run))
    reliability("checkpoints", "a run directory whose best.pt and last.pt are a deflated 1 GiB tensor with a correct "
                "SHA-256", 4, "evaluate and predict exit 1 with one line naming the file; torch.hub.load raises a "
                "CheckpointError")


def test_real_checkpoints_load_within_their_bounds(tiny_run, tmp_path):
    """What training writes loads: SGD's checkpoints (one moment a parameter) and AdamW's (two and a step count) of
    a network with batch-norm buffers, best.pt and last.pt, and one written within an epoch (its position)."""
    from cnnlab.train import fit, make_config

    record = Checkpoint.read(tiny_run)
    assert record.epoch >= 1 and "momentum_buffer" in record.optimizer_state["state"][0]
    load(tiny_run / "last.pt", "cpu")
    cfg = make_config("resnet_bn", steps=6, batch_size=50, val_size=50, device="cpu", optimizer="adamw",
                      checkpoint_every=1e-9, log_every=1)
    run = fit(cfg, synthetic_mnist(train=200, test=50, seed=0), out_root=tmp_path, progress=False).run_dir
    record = Checkpoint.read(run / "last.pt", resume=True)
    assert {"exp_avg", "exp_avg_sq", "step"} <= set(record.optimizer_state["state"][0])
    assert Checkpoint.read(run / "last.prev.pt").position is not None  # the checkpoint before, within epoch 2
    load(run, "cpu")


def test_a_stored_archive_is_checked_entry_by_entry(tiny_run, tmp_path):
    """Each check of the archive on its own: a compressed record, one of torch's small records over its size,
    entries that overlap (each within the file, together more than it), 16 MiB that no entry accounts for, bytes
    after the archive's end, are refused naming the file."""
    entries = _entries({**_record(tiny_run), "sha256": "0" * 64})
    pickle = next(n for n in entries if n.endswith("/data.pkl"))
    version = next(n for n in entries if n.endswith("/version"))
    cases = []
    path = tmp_path / "deflated-record.pt"
    with zipfile.ZipFile(path, "w") as z:
        for n, d in entries.items():
            z.writestr(n, d, compress_type=zipfile.ZIP_DEFLATED if n == pickle else zipfile.ZIP_STORED)
    cases.append((path, "data.pkl is compressed (deflated)"))
    path = _write(tmp_path / "big-version.pt", {**entries, version: b"3" + b" " * 5000})
    cases.append((path, "version is 5,001 bytes"))
    path = _write(tmp_path / "overlap.pt", {**entries, "archive/data/a": bytes(1024), "archive/data/b": len(_ZEROS)})
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        a, directory = z.getinfo("archive/data/a"), z.start_dir
    at = data.rindex(b"archive/data/a") - 46  # its record in the central directory: it now spans b's 16 MiB too
    data[at + 20:at + 28] = struct.pack("<LL", *[directory - a.header_offset - 30 - len(a.filename)] * 2)
    path.write_bytes(data)
    cases.append((path, "its entries claim"))
    path = _write(tmp_path / "gap.pt", {**entries, "archive/data/gap": len(_ZEROS)}, zip64=False)
    data = bytearray(path.read_bytes())
    at = data.rindex(b"archive/data/gap") - 46  # its directory record says it holds nothing: 16 MiB no entry holds
    data[at + 16:at + 28] = bytes(12)  # its CRC and sizes
    path.write_bytes(data)
    cases.append((path, "the file is 16,"))
    path = tmp_path / "trailing.pt"
    path.write_bytes((tmp_path / "big-version.pt").read_bytes() + b"\0" * 100)
    cases.append((path, "bytes follow its end record"))
    for path, expect in cases:
        with pytest.raises(CheckpointError) as info:
            Checkpoint.read(path)
        assert expect in str(info.value) and str(path) in str(info.value), (path, info.value)
