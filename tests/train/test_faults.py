"""Training that is killed, that diverges, and checkpoints that are not what they claim to be."""

from __future__ import annotations

import io
import random
import shutil
import time
import zipfile

import pytest
import torch

from cnnlab.cli import main
from cnnlab.train import NonFiniteLoss, fit, make_config
from cnnlab.runs import Checkpoint, CheckpointError, load, save_checkpoint
from cnnlab.runs.rundir import read_metrics

from ..support.data import synthetic_mnist
from ..support.runs import saved_weights


# ---- kill -9 at random points, then --resume: the same weights, bit for bit ------------------------------

ARGS = ["--epochs", "4", "--images", "4000", "--model", "resnet"]  # about 1 s an epoch: room to land kills


def _kill_moments(rng: random.Random, seconds: float) -> list[tuple[str, object]]:
    """(label, when) pairs: a delay after start (within a run of `seconds`), or a condition on the run directory."""
    delays = [("at a random moment", round(rng.uniform(0.4, 0.95) * seconds, 2)) for _ in range(4)]
    return [
        ("as the first last.pt appears", lambda d: any(d.glob("*/last.pt"))),
        ("while last.pt is being replaced", lambda d: any(d.glob("*/last.pt")) and any(d.glob("*/.last.pt.*.tmp"))),
        ("after the second epoch's metrics row", lambda d: any(len(f.read_text().splitlines()) >= 3 for f in d.glob("*/metrics.csv"))),
        *delays,
    ]


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_ends_bit_identical(procs, tmp_path, reliability):
    whole = tmp_path / "whole"
    whole.mkdir()
    t = time.monotonic()
    procs.run(procs.command(1, ["fit", str(whole), *ARGS]))
    seconds = time.monotonic() - t
    reference = saved_weights(whole / "rank0.pt")
    rng = random.Random(2026)
    outcomes = []
    for i, (label, when) in enumerate(_kill_moments(rng, seconds)):
        out = tmp_path / f"broken{i}"
        # The machine is shared: a run can end before its moment comes (sooner than the reference did, or
        # with a checkpoint write too quick to be caught). Then it is run again on a fresh directory, a timed
        # moment drawn earlier, so every outcome counted is a real kill at the moment named.
        for attempt in range(4):
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            t0 = time.monotonic()
            p = procs.start(procs.command(1, ["fit", str(out), *ARGS]), log=out / "log")
            if callable(when):
                killed = procs.kill_when(p, lambda: when(out), poll=0.001, may_end=True)
            else:
                killed = procs.kill_when(p, lambda: time.monotonic() - t0 >= when, poll=0.01, may_end=True)
                when = round(when * 0.6, 2)
            if killed:
                break
        else:
            pytest.fail(f"{label}: every run ended before the moment to kill it")
        runs = list(out.glob("*-resnet"))
        if not runs or not (runs[0] / "last.pt").exists():
            # killed before the first checkpoint: nothing to resume, and a fresh run is the remedy
            outcomes.append(f"{label}: before any checkpoint (nothing to resume)")
            continue
        run_dir = runs[0]
        epoch = torch.load(run_dir / "last.pt", weights_only=True)["epoch"]
        procs.run(procs.command(1, ["resume", str(out), str(run_dir), *ARGS]))
        got = saved_weights(out / "rank0.pt")
        assert all(torch.equal(got[k], reference[k]) for k in reference), f"killed {label}: weights differ"
        assert [int(r["epoch"]) for r in read_metrics(run_dir / "metrics.csv")] == [1, 2, 3, 4]
        assert not list(run_dir.glob(".*.tmp")), "a temporary file outlived the resume"
        outcomes.append(f"{label}: resumed from epoch {epoch}")
    resumed = [o for o in outcomes if "resumed" in o]
    assert len(resumed) >= 5, outcomes
    reliability(
        "training", "kill -9 during training (random moments, during a checkpoint write), then --resume", len(outcomes),
        f"{len(resumed)} resumed and ended with weights bit-identical to an unbroken run; metrics.csv with each epoch once "
        f"({'; '.join(outcomes)})",
    )


# ---- a loss that becomes NaN --------------------------------------------------------------------------


def test_a_diverging_run_stops_naming_epoch_and_step_and_keeps_its_last_good_checkpoint(
    tiny_mnist, noise_folder, tmp_path, capsys, reliability
):
    # lr ramps up linearly over all 5 epochs; find a rate at which the loss blows up after epoch 1, so
    # there is a good checkpoint to keep. Deterministic on a CPU: the same rate every run.
    for lr in (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 1e4):
        cfg = make_config("basic_cnn", epochs=5, warmup_epochs=5, lr=lr, batch_size=50, val_size=100, device="cpu",
                          label_smoothing=0.0, log_every=5)
        out = tmp_path / f"lr{lr:g}"
        try:
            fit(cfg, tiny_mnist, out_root=out, progress=False)
        except NonFiniteLoss as e:
            if e.epoch >= 2:
                err = e
                break
    else:
        pytest.fail("no learning rate made the loss diverge after the first epoch")
    assert f"at step {err.step} (epoch {err.epoch})" in str(err) and "--lr" in str(err)
    assert (err.epoch - 1) * 10 < err.step <= err.epoch * 10  # 500 images / 50: 10 steps an epoch
    (run,) = out.glob("*-basic_cnn")
    record = Checkpoint.read(run / "last.pt")
    assert record.epoch == err.epoch - 1  # the last good epoch, untouched
    assert all(torch.isfinite(v).all() for v in record.model_state.values())
    assert len(read_metrics(run / "metrics.csv")) == err.epoch - 1
    # through the CLI, on a folder of noise (6 steps an epoch): it blows up at step 3, so the last steps are margin
    code = main(["train", "--model", "basic_cnn", "--dataset", f"imagefolder:{noise_folder}", "--lr", "1e6", "--steps", "6",
                 "--out", str(tmp_path / "cli"), "--no-progress", "--batch-size", "4"])
    err_line = capsys.readouterr().err
    assert code == 1 and err_line.count("\n") == 1 and "stopped being a finite number at step" in err_line, err_line
    assert not list((tmp_path / "cli").glob("*")), "a run that never finished an epoch left its directory"
    reliability("training", "loss becomes NaN or infinite (learning rate 1e6, or ramped up to blow up in a later epoch)", 2,
                f"stopped with 'the training loss stopped being a finite number at step N (epoch E)'; exit 1; the last "
                f"good checkpoint (epoch {err.epoch - 1}) and its metrics kept")


# ---- checkpoints that are not what they claim -----------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    run = fit(make_config("basic_cnn", steps=2, batch_size=50, val_size=50, device="cpu"), synthetic_mnist(train=200, test=50, seed=0),
              out_root=tmp_path_factory.mktemp("runs"), progress=False).run_dir
    return run / "best.pt"


class _RunsCode:
    def __reduce__(self):
        return (open, ("/tmp/cnnlab-pwned-by-checkpoint", "w"))


def _bad_checkpoints(good: bytes, tmp_path) -> list[tuple[str, bytes, str]]:
    """(case, file content, what the message must say)."""
    cases = [
        ("an empty file", b"", "empty"),
        ("random bytes", random.Random(0).randbytes(5000), "not a PyTorch checkpoint"),
        ("a text file", b"epoch,loss\n1,0.5\n", "not a PyTorch checkpoint"),
        ("a PNG image", bytes.fromhex("89504e470d0a1a0a") + b"\0" * 100, "not a PyTorch checkpoint"),
    ]
    for frac in (0.02, 0.25, 0.5, 0.75, 0.98):
        cases.append((f"truncated to {frac:.0%}", good[: int(len(good) * frac)], "truncated"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "hello")
    cases.append(("a zip archive of something else", buf.getvalue(), "not a PyTorch checkpoint"))
    buf = io.BytesIO()
    torch.save({"model_state": {}, "config": {}, "payload": _RunsCode()}, buf)
    cases.append(("a checkpoint carrying code (pickle __reduce__)", buf.getvalue(), "not loaded"))
    buf = io.BytesIO()
    torch.save([1, 2, 3], buf)
    cases.append(("a PyTorch file that is not a cnnlab checkpoint", buf.getvalue(), "not a cnnlab checkpoint"))
    state = {k: v for k, v in torch.load(io.BytesIO(good), weights_only=True).items() if k not in ("sha256", "format_version")}

    def saved(changed: dict) -> bytes:  # a well-formed checkpoint, written as cnnlab writes them
        save_checkpoint(tmp_path / "made.pt", changed)
        return (tmp_path / "made.pt").read_bytes()

    cases.append(("basic_cnn weights in a resnet checkpoint", saved(dict(state, config={**state["config"], "model": "resnet"})),
                  "do not fit model 'resnet'"))
    cases.append(("a checkpoint of a model cnnlab does not have",
                  saved(dict(state, config={**state["config"], "model": "vgg99"})), "'vgg99'"))
    relabelled = dict(torch.load(io.BytesIO(good), weights_only=True), epoch=99)  # edited without a new digest
    buf = io.BytesIO()
    torch.save(relabelled, buf)
    cases.append(("a checkpoint edited after it was written", buf.getvalue(), "do not match the SHA-256"))
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = b"\xff" * 64
    cases.append(("64 bytes overwritten in the middle", bytes(corrupt), "damaged"))
    return cases


def test_bad_checkpoints_get_one_clear_line_and_run_no_code(good_checkpoint, tmp_path, capsys, reliability):
    import os

    marker = "/tmp/cnnlab-pwned-by-checkpoint"
    if os.path.exists(marker):
        os.remove(marker)
    cases = _bad_checkpoints(good_checkpoint.read_bytes(), tmp_path)
    for i, (case, content, expect) in enumerate(cases):
        path = tmp_path / f"case{i}.pt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            load(path, device="cpu")
        message = str(info.value)
        assert expect in message and str(path) in message, (case, message)
        assert "\n" not in message and len(message) < 400, (case, message)
        for command in (["evaluate", str(path)], ["predict", str(path), "x.png"], ["export", str(path), "--format", "onnx"]):
            assert main(command) == 1, (case, command)
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and expect in err, (case, command, err)
    assert not os.path.exists(marker), "loading a checkpoint ran code from it"
    reliability("checkpoints", "; ".join(c for c, _, _ in cases), len(cases),
                "each refused with one line naming the problem (empty, not a PyTorch checkpoint, truncated, damaged, "
                "code not loaded, weights that do not fit, unknown model); exit 1 from evaluate, predict and export; no code run")
