"""A checkpoint is checked as a whole before anything uses it: its digest, every entry of its record, its config,
its tensors, and whether its weights fit the network and the data set it names. Whatever is wrong is one line naming
the file, from every command that reads one."""

from __future__ import annotations

import io
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.runs import CheckpointError, load, save_checkpoint
from cnnlab.runs.checkpoint import Checkpoint


def record(path: Path) -> dict:
    """A checkpoint's contents without what save_checkpoint adds (the digest, the format)."""
    state = torch.load(path, weights_only=True)
    return {k: v for k, v in state.items() if k not in ("sha256", "format_version")}


def resaved(run: Path, tmp_path: Path, change) -> Path:
    """A copy of `run` whose best.pt and last.pt hold its last.pt changed by `change(state)`, written as cnnlab
    writes checkpoints (with a correct SHA-256): only the record's own checks can refuse it."""
    copy = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    shutil.copytree(run, copy)
    state = record(run / "last.pt")
    change(state)
    save_checkpoint(copy / "last.pt", state)
    shutil.copy(copy / "last.pt", copy / "best.pt")
    return copy


def _set(path: str | tuple, value):
    """A change that sets state[a][b]... (path "a.b", or the keys themselves) to value (or to value(old))."""
    def change(state):
        *parents, last = path.split(".") if isinstance(path, str) else path
        d = state
        for k in parents:
            d = d[k]
        d[last] = value(d.get(last)) if callable(value) else value
    return change


def _nan_first(t: torch.Tensor) -> torch.Tensor:
    t = t.clone().contiguous()
    t.view(-1)[0] = float("nan")
    return t


# (case, change, what the message says): crafted checkpoints, each re-saved with a correct SHA-256.
CRAFTED = [
    ("a config that is not a dict", _set("config", [1, 2]), "config must be a dict"),
    ("a config with a setting cnnlab does not know", _set("config.evil", 1), "unknown setting evil"),
    ("norm_std as a string", _set("config.norm_std", "0.3"), "norm_std must be a number"),
    ("norm_std of 0", _set("config.norm_std", 0.0), "norm_std must be a number above 0"),
    ("a learning rate of 1e300 in the config", _set("config.lr", 1e300), "lr must be"),
    ("an unknown model_kwargs key", _set("model_kwargs.depth", 3), "has an entry 'depth'"),
    ("image_size 60000 (14 GB if built)", _set("model_kwargs.image_size", 60000), "image_size must be a whole number from 1 to 512"),
    ("model_state as a list", _set("model_state", lambda v: list(v.values())), "model_state must be a dict"),
    ("NaN weights", _set(("model_state", "conv1.weight"), _nan_first), "not finite"),
    ("an infinite momentum buffer", _set(("optimizer_state", "state", 0, "momentum_buffer"), lambda t: t * math.inf), "not finite"),
    ("a negative epoch", _set("epoch", -1), "epoch must be"),
    ("three class names for ten classes", _set("classes", ["a", "b", "c"]), "names 3 classes"),
    ("an entry cnnlab never writes", _set("payload", "x"), "holds entries a cnnlab checkpoint does not have: payload"),
    ("a newer format", _set("format_version", 2), "newer cnnlab"),
    ("a 3-channel model recorded as trained on MNIST", _set("model_kwargs.in_channels", 3), "recorded as trained on MNIST"),
    ("weights of another shape", _set(("model_state", "fc.weight"), lambda t: t[:, :10]), "do not fit model 'basic_cnn'"),
    ("float64 weights", _set(("model_state", "fc.weight"), lambda t: t.double()), "do not fit model 'basic_cnn'"),
    ("a missing weight", lambda s: s["model_state"].pop("fc.bias"), "missing fc.bias"),
]


def test_crafted_checkpoint_records_get_one_line_from_every_command(tiny_run, tmp_path, capsys, reliability):
    """Each crafted record (a correct SHA-256, so only the record's own checks stand between it and the code that
    uses it) is refused with one line naming the file, from the library and from evaluate, predict, export,
    analyze branches and train --resume alike; never a traceback, a 14 GB allocation or 'nan%'."""
    commands = 0
    for case, change, expect in CRAFTED:
        run = resaved(tiny_run, tmp_path, change)
        with pytest.raises(CheckpointError) as info:
            load(run / "best.pt", device="cpu")
        message = str(info.value)
        assert expect in message and str(run / "best.pt") in message, (case, message)
        assert "\n" not in message and len(message) < 400, (case, message)
        for argv in (["evaluate", str(run)], ["predict", str(run), "x.png"], ["export", str(run), "--format", "torchscript"],
                     ["analyze", "branches", str(run), "--out", str(tmp_path / "a")], ["train", "--resume", str(run)]):
            assert main(argv) == 1, (case, argv)
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and expect in err and "Traceback" not in err, (case, argv, err)
            commands += 1
        assert not (run / "basic_cnn.torchscript.pt").exists()
    reliability("checkpoints", "crafted records, re-saved with a correct SHA-256: " + "; ".join(c for c, _, _ in CRAFTED),
                commands, "each refused with one line naming the file and the entry (its type, range, finiteness, the "
                "network's shapes or the data set's); exit 1 from evaluate, predict, export, analyze branches and "
                "train --resume; nothing built or written")


def test_a_checkpoint_without_its_digest_is_refused_naming_the_file(tiny_run, tmp_path, capsys):
    """Every checkpoint cnnlab writes carries a SHA-256; one without it was changed by someone (deleting the digest
    must not switch the check off)."""
    path = tmp_path / "best.pt"
    torch.save({k: v for k, v in torch.load(tiny_run / "best.pt", weights_only=True).items() if k != "sha256"}, path)
    with pytest.raises(CheckpointError, match="has no SHA-256") as info:
        Checkpoint.read(path)
    assert str(path) in str(info.value)
    assert main(["predict", str(path), "x.png"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


class _Pwn:
    """Pickled as a call to `fn(*args)`: what a checkpoint carrying code looks like."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class _Custom:
    """A plain object of a class that is not cnnlab's: loading it would import and build it."""


def test_code_in_a_checkpoint_is_named_as_such_and_never_loaded(tiny_run, tmp_path, reliability):
    """Pickled code in seven forms: the message says the file holds objects other than tensors and plain data,
    which were not loaded, and never passes on torch's advice to load it with weights_only=False."""
    marker = tmp_path / "pwned"
    good = torch.load(tiny_run / "best.pt", weights_only=True)
    forms = {
        "os.system": _Pwn(os.system, f"touch {marker}"),
        "builtins.exec": _Pwn(exec, f"open({str(marker)!r}, 'w')"),
        "builtins.eval": _Pwn(eval, f"open({str(marker)!r}, 'w')"),
        "builtins.open": _Pwn(open, str(marker), "w"),
        "subprocess.call": _Pwn(__import__("subprocess").call, ["touch", str(marker)]),
        "an object of another class": _Custom(),
        "a config replaced by code": None,
    }
    for name, payload in forms.items():
        state = dict(good)
        if payload is None:
            state["config"] = _Pwn(os.system, f"touch {marker}")
        else:
            state["payload"] = payload
        path = tmp_path / "code.pt"
        buf = io.BytesIO()
        torch.save(state, buf)
        path.write_bytes(buf.getvalue())
        with pytest.raises(CheckpointError) as info:
            load(path, "cpu")
        message = str(info.value)
        assert "holds pickled Python objects other than tensors and plain data" in message, (name, message)
        assert "not loaded" in message and "weights_only" not in message and str(path) in message, (name, message)
    assert not marker.exists(), "loading a checkpoint ran code from it"
    reliability("checkpoints", f"code pickled into a checkpoint, {len(forms)} forms: " + ", ".join(forms), len(forms),
                "refused in one line saying the file holds pickled objects other than tensors and plain data, which "
                "were not loaded; torch's advice to set weights_only=False is not passed on; no code ran")


def test_a_config_checks_its_fields_for_library_users_too():
    """TrainConfig refuses a value of the wrong type or out of its declared range, however it is made."""
    from cnnlab.config import TrainConfig, make_config

    for bad, expect in [(dict(lr=1e300), "lr must be"), (dict(seed=10**23), "seed must be"), (dict(threads=-5), "threads"),
                        (dict(image_size=100_000), "image_size"), (dict(lr="0.1"), "lr must be a number"),
                        (dict(amp="fp8"), "amp must be one of"), (dict(epochs=True), "epochs must be a whole number")]:
        with pytest.raises(ValueError, match=expect):
            make_config("resnet", **bad)
    with pytest.raises(ValueError, match="unknown setting"):
        TrainConfig.from_dict({"model": "resnet", "surprise": 1})
    with pytest.raises(ValueError, match="mapping"):
        TrainConfig.from_dict(["resnet"])
    assert TrainConfig.from_dict({"model": "resnet"}).split_seed == 0  # a setting it lacks takes its default


def test_a_resume_checkpoint_remembers_its_file_and_whether_the_run_had_finished(tiny_run):
    ckpt = Checkpoint.read(tiny_run / "last.pt", resume=True)
    assert ckpt.source == tiny_run / "last.pt" and ckpt.finished
