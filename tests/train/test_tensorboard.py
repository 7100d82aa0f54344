"""--tensorboard: the event files a run writes, read back with TensorBoard's own reader, against metrics.csv."""

import sys

import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install 'cnnlab[tensorboard]')")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from cnnlab.cli import main  # noqa: E402
from cnnlab.runs.rundir import read_metrics  # noqa: E402
from cnnlab.train import Observer, fit, make_config, resume  # noqa: E402
from cnnlab.train.tensorboard import EPOCH_SCALARS, INSTALL  # noqa: E402

from ..support.data import draw_folder  # noqa: E402


def _cfg(**kw):
    # tiny_mnist: 500 training images after the hold-out, so 10 steps an epoch, a loss point every 2
    return make_config("basic_cnn", **{"epochs": 2, "batch_size": 50, "val_size": 100, "device": "cpu", "log_every": 2,
                                       "tensorboard": True, **kw})


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_event_files_hold_what_metrics_csv_holds(tiny_mnist, tmp_path):
    result = fit(_cfg(), tiny_mnist, out_root=tmp_path, progress=False)
    rows = read_metrics(result.run_dir / "metrics.csv")
    scalars = _scalars(result.run_dir)
    assert set(scalars) == {*EPOCH_SCALARS, "lr", "loss/train_steps"}
    for tag, column in EPOCH_SCALARS.items():  # each epoch at the step it ended (metrics.csv keeps 6 digits)
        assert [s for s, _ in scalars[tag]] == [int(r["steps"]) for r in rows] == [10, 20]
        assert [v for _, v in scalars[tag]] == pytest.approx([r[column] for r in rows], rel=1e-5)
    assert scalars["lr"] == [(0, pytest.approx(rows[0]["lr"])), (10, pytest.approx(rows[1]["lr"]))]
    losses = scalars["loss/train_steps"]
    assert [s for s, _ in losses] == list(range(2, 21, 2))
    for row, first in zip(rows, (0, 5)):  # five equal windows average to the epoch's training loss
        assert sum(v for _, v in losses[first:first + 5]) / 5 == pytest.approx(row["train_loss"], rel=1e-5)


def test_without_a_hold_out_there_are_no_validation_scalars(tiny_mnist, tmp_path):
    result = fit(_cfg(epochs=1, val_size=0), tiny_mnist, out_root=tmp_path, progress=False)
    scalars = _scalars(result.run_dir)
    assert "loss/val" not in scalars and "accuracy/val" not in scalars
    assert [s for s, _ in scalars["accuracy/test"]] == [12]  # 600 images, no hold-out: 12 steps


class _PowerCut(Observer):
    """Stops the process in the middle of epoch 3, as a kill would, after the event files got its first steps
    (told before the run's own TensorBoard writer, it stops the run before step 26 is written)."""

    def step(self, step, total_steps, epoch, loss):
        if step == 26:
            raise KeyboardInterrupt


def test_a_resumed_run_replaces_what_the_stopped_process_wrote_after_its_checkpoint(tiny_mnist, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(epochs=3), tiny_mnist, out_root=tmp_path, progress=False, observers=[_PowerCut()])
    (run_dir,) = tmp_path.iterdir()
    assert [s for s, _ in _scalars(run_dir)["loss/train_steps"]][-2:] == [22, 24]  # past epoch 2's checkpoint
    resume(run_dir, tiny_mnist, progress=False)
    scalars = _scalars(run_dir)
    assert [s for s, _ in scalars["loss/train_steps"]] == list(range(2, 31, 2))  # each step once
    assert [s for s, _ in scalars["accuracy/test"]] == [10, 20, 30]
    rows = read_metrics(run_dir / "metrics.csv")
    assert [v for _, v in scalars["accuracy/test"]] == pytest.approx([r["test_acc"] for r in rows], rel=1e-5)


def test_without_the_package_train_says_what_to_install_before_any_run_directory(tmp_path, monkeypatch, capsys):
    folder = draw_folder(tmp_path / "shapes", per_class=4)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as where the extra is not installed
    out = tmp_path / "runs"
    code = main(["train", "--model", "basic_cnn", "--dataset", f"imagefolder:{folder}", "--steps", "1",
                 "--tensorboard", "--out", str(out), "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.strip().splitlines()[-1] == (
        f"cnnlab train: error: writing TensorBoard event files (--tensorboard) needs the tensorboard package: {INSTALL}")
    assert not out.exists() or not any(out.iterdir())


def test_the_flag_is_a_run_setting_kept_in_the_config(tiny_mnist, tmp_path):
    result = fit(_cfg(epochs=1, tensorboard=False), tiny_mnist, out_root=tmp_path, progress=False)
    assert result.config["tensorboard"] is False and not (result.run_dir / "tensorboard").exists()
