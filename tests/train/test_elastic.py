"""Runs that survive their processes: named runs that a restart finds again, checkpoints within an epoch, and
groups that torchrun's agent starts again after a worker dies."""

from __future__ import annotations

import pytest
import torch

from cnnlab.cli import main
from cnnlab.runs.rundir import RunFinished, read_metrics
from cnnlab.train import make_config
from cnnlab.train.events import Observer
from cnnlab.train.session import train


class _Crash(Observer):
    """Stops the process's run with an exception after epoch `after` (as a killed process would stop)."""

    def __init__(self, after: int) -> None:
        self.after = after

    def epoch(self, row) -> None:
        if row["epoch"] == self.after:
            raise KeyboardInterrupt


def _cfg(**kw):
    return make_config("basic_cnn", **{"epochs": 3, "batch_size": 50, "val_size": 100, "device": "cpu", **kw})


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
