"""Observers: what a watcher of a run is told, and a stop that keeps what was trained."""

import json

import pytest

from cnnlab.runs import load
from cnnlab.runs.rundir import read_metrics
from cnnlab.train import Observer, fit, make_config, resume


class Recorder(Observer):
    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.stop_after = stop_after

    def started(self, run_dir, config, total_steps, steps_per_epoch):
        self.calls.append(("started", run_dir, config["model"], total_steps, steps_per_epoch))

    def step(self, step, total_steps, epoch, loss):
        self.calls.append(("step", step, total_steps, epoch, loss))

    def epoch(self, row):
        self.calls.append(("epoch", row))

    def finished(self, summary):
        self.calls.append(("finished", summary))

    def should_stop(self):
        steps = [c[1] for c in self.calls if c[0] == "step"]
        return self.stop_after is not None and bool(steps) and steps[-1] >= self.stop_after

    def kinds(self):
        return [c[0] for c in self.calls]


def _cfg(**kw):
    return make_config("basic_cnn", **{"epochs": 2, "batch_size": 50, "val_size": 100, "device": "cpu", "log_every": 5, **kw})


def test_an_observer_hears_the_run_start_step_end_each_epoch_and_finish(tiny_mnist, tmp_path):
    rec = Recorder()
    result = fit(_cfg(), tiny_mnist, out_root=tmp_path, progress=False, observers=[rec])
    kinds = rec.kinds()
    assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("epoch") == 2
    _, run_dir, model, total, per_epoch = rec.calls[0]
    assert run_dir == result.run_dir and model == "basic_cnn" and total == 2 * per_epoch
    steps = [c for c in rec.calls if c[0] == "step"]
    assert [c[1] for c in steps] == list(range(5, total + 1, 5))[: len(steps)] and len(steps) == total // 5
    rows = read_metrics(result.run_dir / "metrics.csv")
    # The losses told are means over disjoint windows of equal batches: per epoch they average to its loss.
    for row in rows:
        told = [c[4] for c in steps if c[3] == row["epoch"]]
        assert len(told) == per_epoch // 5 and sum(told) / len(told) == pytest.approx(row["train_loss"], rel=1e-5)
    told = [c[1] for c in rec.calls if c[0] == "epoch"]
    assert [r["epoch"] for r in told] == [r["epoch"] for r in rows] == [1, 2]
    assert told[-1]["test_acc"] == pytest.approx(rows[-1]["test_acc"])
    assert rec.calls[-1][1] == json.loads((result.run_dir / "summary.json").read_text())


def test_a_stop_ends_the_run_at_that_step_and_keeps_a_finished_run(tiny_mnist, tmp_path):
    rec = Recorder(stop_after=5)
    result = fit(_cfg(epochs=5), tiny_mnist, out_root=tmp_path, progress=False, observers=[rec])
    assert result.epochs == 1
    rows = read_metrics(result.run_dir / "metrics.csv")
    assert [r["steps"] for r in rows] == [5]  # the epoch in progress became a partial last one
    assert rec.kinds()[-1] == "finished" and rec.kinds().count("epoch") == 1
    assert (result.run_dir / "summary.json").exists() and (result.run_dir / "curves.png").exists()
    model = load(result.run_dir)  # an ordinary run: its model loads and evaluates
    assert model.evaluate(tiny_mnist) == pytest.approx(result.test_acc)


def test_a_stop_after_a_whole_epoch_is_not_extended_by_a_time_budget(tiny_mnist, tmp_path):
    per_epoch = (len(tiny_mnist.train_images) - 100) // 50
    rec = Recorder(stop_after=per_epoch)
    result = fit(_cfg(time_budget=60.0, log_every=per_epoch), tiny_mnist, out_root=tmp_path, progress=False,
                 observers=[rec])
    assert read_metrics(result.run_dir / "metrics.csv")[-1]["steps"] == per_epoch and result.epochs == 1


def test_resume_tells_observers_it_started_again(tiny_mnist, tmp_path):
    first = fit(_cfg(epochs=1), tiny_mnist, out_root=tmp_path, progress=False)
    (first.run_dir / "summary.json").unlink()  # as if stopped after epoch 1 of 1: resume has nothing left
    rec = Recorder()
    resume(first.run_dir, tiny_mnist, progress=False, observers=[rec])
    assert rec.kinds()[0] == "started" and rec.kinds()[-1] == "finished"
