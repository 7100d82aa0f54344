"""Runs that survive their processes: named runs that a restart finds again, checkpoints within an epoch, and
groups that torchrun's agent starts again after a worker dies."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cnnlab.cli import main
from cnnlab.runs import CheckpointError
from cnnlab.runs.rundir import RunFinished, read_metrics
from cnnlab.train import make_config
from cnnlab.train.events import Observer
from cnnlab.train.run import train


class _Crash(Observer):
    """Stops the process's run with an exception after epoch `after` (as a killed process would stop)."""

    def __init__(self, after: int) -> None:
        self.after = after

    def epoch(self, row) -> None:
        if row["epoch"] == self.after:
            raise KeyboardInterrupt


def _cfg(model="basic_cnn", **kw):
    # One thread: a run repeats bit for bit only at the same thread count, and the default follows the machine's load.
    return make_config(model, **{"epochs": 3, "batch_size": 50, "val_size": 100, "device": "cpu", "threads": 1, **kw})


def _weights(session):
    return session.results[0].network.state_dict()


# ---- --run-name -----------------------------------------------------------------------------------------


def test_a_named_run_lives_in_its_name_and_a_finished_one_is_never_trained_again(tiny_mnist, tmp_path):
    session = train([_cfg(epochs=1, run_name="exp-1")], data=tiny_mnist, out_root=tmp_path, progress=False)
    assert session.results[0].run_dir == tmp_path / "exp-1" and (tmp_path / "exp-1" / "summary.json").exists()
    before = (tmp_path / "exp-1" / "last.pt").read_bytes()
    with pytest.raises(RunFinished, match="exp-1 is finished; evaluate it, or choose another name"):
        train([_cfg(epochs=1, run_name="exp-1")], data=tiny_mnist, out_root=tmp_path, progress=False)
    assert (tmp_path / "exp-1" / "last.pt").read_bytes() == before


def test_a_stopped_named_run_is_continued_by_the_same_command_and_ends_as_an_unbroken_one(tiny_mnist, tmp_path, capsys):
    whole = train([_cfg(run_name="whole")], data=tiny_mnist, out_root=tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train([_cfg(run_name="broken")], data=tiny_mnist, out_root=tmp_path, progress=False, observers=[_Crash(2)])
    again = train([_cfg(run_name="broken")], data=tiny_mnist, out_root=tmp_path, progress="lines")
    assert "resuming" in capsys.readouterr().out
    assert again.results[0].run_dir == tmp_path / "broken"
    a, b = _weights(again), _weights(whole)
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert [int(r["epoch"]) for r in read_metrics(tmp_path / "broken" / "metrics.csv")] == [1, 2, 3]


def test_a_named_run_stopped_before_its_first_checkpoint_starts_afresh_in_its_directory(tiny_mnist, tmp_path):
    run = tmp_path / "early"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,steps\n1,10\n")  # a row written just before a kill, with no last.pt
    train([_cfg(epochs=2, run_name="early")], data=tiny_mnist, out_root=tmp_path, progress=False)
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == [1, 2]


def test_a_group_the_agent_restarts_after_its_run_finished_ends_it_again_training_nothing(tiny_mnist, tmp_path, monkeypatch):
    first = train([_cfg(epochs=1, run_name="done")], data=tiny_mnist, out_root=tmp_path, progress=False)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    again = train([_cfg(epochs=1, run_name="done")], data=tiny_mnist, out_root=tmp_path, progress=False)
    a, b = _weights(again), _weights(first)
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert len(read_metrics(tmp_path / "done" / "metrics.csv")) == 1


@pytest.mark.parametrize("name", ["a/b", "..", "", "tab\there", "x" * 201, "ünï"])
def test_a_run_name_that_is_not_one_plain_folder_name_is_one_line_and_exit_2(name, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["train", "--run-name", name, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "a run name is one folder name" in err, err
    assert not list(tmp_path.iterdir())


def test_a_run_name_for_several_models_is_refused_in_one_line(capsys, tmp_path):
    assert main(["train", "--model", "lecture", "--run-name", "x", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a run name names one run" in err, err


# ---- --checkpoint-every: last.pt within an epoch --------------------------------------------------------


class _CrashAtStep(Observer):
    """Stops the run with an exception at a step (as a kill would), once a checkpoint within an epoch is behind it."""

    def __init__(self, step: int) -> None:
        self.at = step

    def step(self, step, total_steps, epoch, loss) -> None:
        if step >= self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("model,extra", [
    ("basic_cnn", {}),
    ("inception_net", {"record_branch_grads": True, "cutout": 6}),
])
def test_a_run_stopped_within_an_epoch_resumes_from_there_and_ends_bit_identical(tiny_mnist, tmp_path, model, extra):
    # 500 training images, batch 50: 10 steps an epoch; a checkpoint at every 2nd step (any interval has passed)
    cfg = _cfg(model=model, log_every=2, **extra)
    whole = train([cfg], data=tiny_mnist, out_root=tmp_path / "whole", progress=False)
    often = dict(run_name="broken", checkpoint_every=1e-9)
    with pytest.raises(KeyboardInterrupt):
        train([replace(cfg, **often)], data=tiny_mnist, out_root=tmp_path, progress=False,
              observers=[_CrashAtStep(15)])
    state = torch.load(tmp_path / "broken" / "last.pt", weights_only=True)
    assert (state["epoch"], state["position"]["step"], state["steps"]) == (1, 4, 14)  # the boundary before step 16
    assert (tmp_path / "broken" / "last.prev.pt").exists()
    again = train([replace(cfg, **often)], data=tiny_mnist, out_root=tmp_path, progress=False)
    a, b = _weights(again), _weights(whole)
    assert all(torch.equal(a[k], b[k]) for k in b), "weights differ from the unbroken run"
    rows, ref = read_metrics(tmp_path / "broken" / "metrics.csv"), read_metrics(whole.results[0].run_dir / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for r, w in zip(rows, ref):  # the row of the epoch that was cut equals the unbroken one's
        assert {k: r[k] for k in ("steps", "train_loss", "train_acc", "lr", "test_acc")} == \
               {k: w[k] for k in ("steps", "train_loss", "train_acc", "lr", "test_acc")}
    if extra.get("record_branch_grads"):
        import json

        got = json.loads((tmp_path / "broken" / "branch_grads.json").read_text())["epochs"]
        assert got == json.loads((whole.results[0].run_dir / "branch_grads.json").read_text())["epochs"]


MID = ["--epochs", "3", "--images", "4000", "--model", "resnet", "--log-every", "5"]  # about 1 s an epoch


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_within_an_epoch_then_the_same_command_ends_bit_identical(procs, tmp_path, reliability):
    import random
    import time

    procs.run(procs.command(1, ["fit", str(tmp_path), *MID]))
    reference = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rng, outcomes = random.Random(18), []
    for i in range(2):
        out = tmp_path / f"k{i}"
        out.mkdir()
        cmd = procs.command(1, ["train", str(out), *MID, "--run-name", "r", "--checkpoint-every", "0.2"])
        delay = rng.uniform(0.0, 1.5)
        p = procs.start(cmd, log=out / "log")
        seen: list[float] = []

        def ready() -> bool:  # `delay` seconds after the first checkpoint (within epoch 1: 0.2 s into it)
            if not seen and (out / "r" / "last.pt").exists():
                seen.append(time.monotonic())
            return bool(seen) and time.monotonic() - seen[0] >= delay

        if not procs.kill_when(p, ready, may_end=True):
            continue
        state = torch.load(out / "r" / "last.pt", weights_only=True)
        where = f"epoch {state['epoch'] + 1} step {state['position']['step']}" if state["position"] else f"end of epoch {state['epoch']}"
        procs.run(cmd)  # the same command continues the named run
        got = torch.load(out / "rank0.pt", weights_only=True)
        assert all(torch.equal(got[k], reference[k]) for k in reference), f"killed at {where}: weights differ"
        assert [int(r["epoch"]) for r in read_metrics(out / "r" / "metrics.csv")] == [1, 2, 3]
        outcomes.append(where)
    within = [o for o in outcomes if "step" in o]
    assert within, outcomes
    reliability("training", "kill -9 after a checkpoint within an epoch (--checkpoint-every 0.2), then the same command "
                "with --run-name", len(outcomes), f"each continued from last.pt ({'; '.join(outcomes)}) and ended with weights "
                "bit-identical to an unbroken run without checkpoints within epochs; metrics.csv with each epoch once")


# ---- torchrun --max-restarts: the agent starts the group again and the run continues -----------------------

ELASTIC = ["--epochs", "3", "--images", "6000", "--float64", "--log-every", "5"]  # float64: see test_distributed.py


def _rank_pid(procs, agent, rank: int) -> int | None:
    for pid in procs.descendants(agent.pid):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None


@pytest.mark.slow
def test_under_torchrun_max_restarts_a_killed_worker_costs_no_human_action(procs, tmp_path, reliability):
    import os
    import random
    import sys
    import time

    def torchrun(out, *extra):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=1",
                "--monitor-interval=0.1", str(procs.command(1, [])[1]), "train", str(out), *ELASTIC, *extra]

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    whole.mkdir(), broken.mkdir()
    procs.run(torchrun(whole))
    agent = procs.start(torchrun(broken, "--checkpoint-every", "0.3"), log=tmp_path / "broken.log")
    end = time.monotonic() + 120
    while not any(broken.glob("*/last.pt")):
        assert agent.poll() is None and time.monotonic() < end, (tmp_path / "broken.log").read_text()
        time.sleep(0.02)
    time.sleep(random.Random(5).uniform(0.0, 1.0))  # a random step after the first checkpoint
    rank = random.Random(6).choice([0, 1])
    os.kill(_rank_pid(procs, agent, rank), 9)
    t = time.monotonic()
    agent.wait(timeout=180)
    log = (tmp_path / "broken.log").read_text()
    assert agent.returncode == 0, log
    (run,) = [d for d in broken.iterdir() if d.is_dir()]  # one run directory, named after the rendezvous
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == [1, 2, 3]
    a, b = (torch.load(d / "rank0.pt", weights_only=True) for d in (broken, whole))
    diff = max((a[k] - b[k]).abs().max().item() for k in b)
    assert diff < 1e-10, diff
    reliability("distributed training", f"rank {rank} of a 2-process run under torchrun --max-restarts 1 killed (kill -9) "
                "after a checkpoint within an epoch", 1,
                f"the agent started the group again, which found its run and resumed; exit 0 {time.monotonic() - t:.0f} s "
                f"later, one run directory, each epoch once, final weights within {diff:.0e} of an unbroken run (float64)")


def test_a_damaged_last_pt_falls_back_to_the_one_before_it_or_is_refused_in_one_line(tiny_mnist, tmp_path, capsys):
    cfg = _cfg(log_every=2)
    whole = train([cfg], data=tiny_mnist, out_root=tmp_path / "whole", progress=False)
    named = replace(cfg, run_name="r", checkpoint_every=1e-9)
    with pytest.raises(KeyboardInterrupt):
        train([named], data=tiny_mnist, out_root=tmp_path, progress=False, observers=[_CrashAtStep(15)])
    last = tmp_path / "r" / "last.pt"
    damaged = bytearray(last.read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = b"\xff" * 64
    last.write_bytes(damaged)
    again = train([named], data=tiny_mnist, out_root=tmp_path, progress="lines")
    out = capsys.readouterr().out
    assert "last.pt could not be used" in out and "continuing from the checkpoint before it, last.prev.pt" in out, out
    a, b = _weights(again), _weights(whole)
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert [int(r["epoch"]) for r in read_metrics(tmp_path / "r" / "metrics.csv")] == [1, 2, 3]
    # with no checkpoint before it, a damaged last.pt is refused in one line
    (tmp_path / "r" / "summary.json").unlink()
    (tmp_path / "r" / "last.prev.pt").unlink()
    last.write_bytes(damaged)
    with pytest.raises(CheckpointError) as info:
        train([named], data=tiny_mnist, out_root=tmp_path, progress=False)
    assert "\n" not in str(info.value) and "last.pt is damaged" in str(info.value), info.value

