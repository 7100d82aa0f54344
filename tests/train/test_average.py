"""The average of the weights (--ema): its arithmetic, what a run evaluates and saves, and what it resumes from."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.runs import Checkpoint, CheckpointError, load
from cnnlab.train import fit, make_config, resume, train
from cnnlab.train.events import Observer
from cnnlab.train.average import WeightAverage

from ..support.runs import as_stopped


def _quick(**kw):
    return make_config("basic_cnn", **{"epochs": 2, "batch_size": 50, "val_size": 100, "device": "cpu",
                                       "threads": 1, "ema": 0.999, **kw})


def test_each_update_moves_the_average_by_its_warmed_up_decay_and_copies_integer_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(1, 40):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(4, 3))  # batch norm's running statistics and step count move too
        d = min(0.9, (1 + n) / (10 + n))
        assert average.current_decay() == pytest.approx(d)
        average.update()
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v if v.is_floating_point() else v.clone()
    got = average.model.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-6)
    assert got["1.num_batches_tracked"].item() == 39
    assert average.updates == 39 and not any(p.requires_grad for p in average.model.parameters())
    with pytest.raises(ValueError):
        WeightAverage(model, decay=0.0)


def test_a_run_evaluates_selects_and_saves_the_average_and_resumes_the_trained_weights(tiny_mnist, tmp_path):
    result = fit(_quick(), tiny_mnist, out_root=tmp_path, progress=False)
    last = Checkpoint.read(result.run_dir / "last.pt", resume=True)
    assert last.trained_state is not None
    assert any(not torch.equal(last.model_state[k], last.trained_state[k]) for k in last.model_state)
    # what a user loads is the average, and it scores what the run recorded for its epoch
    for name in ("best.pt", "last.pt"):
        trained = load(result.run_dir / name, "cpu")
        record = Checkpoint.read(result.run_dir / name)
        assert all(torch.equal(trained.network.state_dict()[k], record.model_state[k]) for k in record.model_state)
        assert trained.evaluate(tiny_mnist) == pytest.approx(record.test_acc)
    assert all(torch.equal(result.network.state_dict()[k], last.model_state[k]) for k in last.model_state)


class _CrashAtStep(Observer):
    """Stops the run with an exception at a step, as a kill would."""

    def step(self, step, total_steps, epoch, loss) -> None:
        if step >= 15:
            raise KeyboardInterrupt


def test_a_run_stopped_within_an_epoch_continues_the_average_and_ends_as_one_that_never_stopped(tiny_mnist, tmp_path):
    # 500 training images, batch 50: 10 steps an epoch; last.pt within the epoch at every 2nd step
    cfg = _quick(epochs=3, log_every=2)
    whole = train([cfg], data=tiny_mnist, out_root=tmp_path / "whole", progress=False).results[0]
    named = replace(cfg, run_name="broken", checkpoint_every=1e-9)
    with pytest.raises(KeyboardInterrupt):
        train([named], data=tiny_mnist, out_root=tmp_path, progress=False, observers=[_CrashAtStep()])
    assert Checkpoint.read(tmp_path / "broken" / "last.pt").position["step"] == 4  # within the second epoch
    again = train([named], data=tiny_mnist, out_root=tmp_path, progress=False).results[0]
    a, b = (Checkpoint.read(r.run_dir / "last.pt") for r in (again, whole))
    for state in ("model_state", "trained_state"):
        x, y = getattr(a, state), getattr(b, state)
        assert all(torch.equal(x[k], y[k]) for k in y), state
    assert [r["test_acc"] for r in again.history] == [r["test_acc"] for r in whole.history]


def test_without_an_average_the_run_keeps_its_trained_weights_alone(tiny_mnist, tmp_path):
    result = fit(_quick(ema=0.0), tiny_mnist, out_root=tmp_path, progress=False)
    last = Checkpoint.read(result.run_dir / "last.pt")
    assert last.trained_state is None
    assert all(torch.equal(result.network.state_dict()[k], last.model_state[k]) for k in last.model_state)


def test_the_average_is_off_unless_asked_for_and_off_for_runs_recorded_before_it():
    assert make_config("resnet").ema == 0.0 and make_config("resnet", "course").ema == 0.0
    asked = make_config("resnet", ema=0.999).to_dict()
    assert asked["ema"] == 0.999
    del asked["ema"]
    assert TrainConfig.from_dict(asked).ema == 0.0  # a resumed old run continues as it trained
    with pytest.raises(ValueError, match="ema"):
        make_config("resnet", ema=1.5)


def test_a_checkpoint_whose_weights_and_config_disagree_on_the_average_is_refused_in_one_line(tiny_mnist, tmp_path):
    run = as_stopped(fit(_quick(), tiny_mnist, out_root=tmp_path, progress=False).run_dir)
    record = Checkpoint.read(run / "last.pt", resume=True)
    record.trained_state = None
    record.save(run / "last.pt")
    with pytest.raises(CheckpointError) as info:
        resume(run, tiny_mnist, progress=False)
    assert "average of its weights" in str(info.value) and "\n" not in str(info.value)


def test_a_decay_out_of_range_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "basic_cnn", "--ema", "2", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--ema" in err and "from 0 to 1" in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())
