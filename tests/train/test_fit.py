import json
import math
from dataclasses import replace

import pytest
import torch

from cnnlab.config import TrainConfig
from cnnlab.train import fit, make_config
from cnnlab.device import bfloat16_units
from cnnlab.runs import Checkpoint, CheckpointError, evaluate, load, save_checkpoint
from cnnlab.train.parts import make_splits
from cnnlab.runs.rundir import read_metrics


def _quick(model="basic_cnn", **kw):
    kw = {"epochs": 1, "batch_size": 50, "val_size": 100, "device": "cpu", **kw}
    return make_config(model, **kw)


def test_fit_writes_a_complete_run_directory(tiny_mnist, tmp_path):
    cfg = _quick(epochs=2)
    result = fit(cfg, tiny_mnist, out_root=tmp_path, progress=False)
    run = result.run_dir
    assert run.parent == tmp_path and run.name.endswith("-basic_cnn")
    for name in ("config.json", "metrics.csv", "summary.json", "best.pt", "last.pt", "curves.png"):
        assert (run / name).stat().st_size > 0, name
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["val_acc"]) and math.isfinite(r["test_acc"]) for r in rows)
    record = Checkpoint.read(run, resume=True)  # a run directory means its best.pt; resume: it has a resume's states
    assert record.config == cfg.to_dict()
    assert record.epoch == result.best_epoch
    assert record.model_kwargs == {"in_channels": 1, "num_classes": 10, "image_size": 28}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parameters"] == 8490 and summary["epochs"] == 2
    assert summary["precision"] == ("bfloat16" if bfloat16_units() else "float32")  # --amp auto: bf16 on bf16 CPUs


def test_a_run_reports_the_float32_evaluation_of_what_it_saved_whatever_its_steps_ran_in(tiny_mnist, tmp_path):
    for amp, precision in (("auto", "bfloat16" if bfloat16_units() else "float32"), ("off", "float32")):
        result = fit(_quick(amp=amp), tiny_mnist, out_root=tmp_path, progress=False)
        assert result.precision == precision
        trained = load(result.run_dir, "cpu")
        _, acc = evaluate(trained.network, tiny_mnist.test_images, tiny_mnist.test_labels, replace(trained.config, amp="off"))
        assert acc == result.test_acc, amp


def test_same_seed_repeats_a_cpu_run_exactly_and_another_seed_does_not(tiny_mnist, tmp_path):
    # One thread given: a run repeats bit for bit at the same thread count, and the default follows the machine's load.
    runs = [fit(_quick(seed=s, threads=1), tiny_mnist, out_root=tmp_path, progress=False) for s in (3, 3, 4)]
    weights = [Checkpoint.read(r.run_dir / "last.pt").model_state for r in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert runs[0].history[0]["train_loss"] == runs[1].history[0]["train_loss"]


def test_selection_uses_validation_never_test(tiny_mnist, tmp_path):
    result = fit(_quick(epochs=3), tiny_mnist, out_root=tmp_path, progress=False)
    vals = [r["val_acc"] for r in result.history]
    best = max(range(3), key=lambda i: (vals[i], i))  # best validation accuracy, ties to the later epoch
    assert result.best_epoch == best + 1
    assert result.test_acc == result.history[best]["test_acc"]


def test_validation_split_is_the_last_training_images(tiny_mnist):
    s = make_splits(tiny_mnist, 100, torch.device("cpu"))
    assert torch.equal(s.val_x, tiny_mnist.train_images[-100:])
    assert len(s.train_x) == 500 and len(s.test_x) == 200
    with pytest.raises(ValueError):
        make_splits(tiny_mnist, 600, torch.device("cpu"))


def test_course_recipe_is_the_course():
    cfg = make_config("resnet", "course")
    assert (cfg.batch_size, cfg.optimizer, cfg.lr, cfg.momentum, cfg.epochs) == (64, "sgd", 0.01, 0.5, 10)
    assert cfg.val_size == 0 and cfg.label_smoothing == 0 and cfg.schedule == "constant"
    assert cfg.max_shift == cfg.max_rotate == cfg.max_scale == 0 and not cfg.nesterov
    assert make_config("resnet", "course", epochs=2).epochs == 2
    with pytest.raises(ValueError, match="unknown recipe"):
        make_config("resnet", "fast")


def test_diverging_loss_stops_with_a_clear_error(tiny_mnist, tmp_path):
    with pytest.raises(FloatingPointError, match="epoch 1"):  # 1e6: the largest rate a config takes
        fit(_quick(lr=1e6, schedule="constant", label_smoothing=0.0), tiny_mnist, out_root=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # stopped in its first epoch: nothing kept


def test_a_cutout_as_large_as_the_images_is_refused_before_any_run_directory(tiny_mnist, tmp_path):
    with pytest.raises(ValueError, match=r"cutout must be smaller than the images \(28 pixels a side\), got 28"):
        fit(_quick(cutout=28), tiny_mnist, out_root=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Checkpoint.read(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        Checkpoint.read(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a cnnlab checkpoint"):
        Checkpoint.read(other)


def test_truncated_checkpoint_is_refused_and_saving_is_atomic(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model_state": {"w": torch.arange(1000.0)}, "config": {"model": "resnet"}})
    good = path.read_bytes()
    (tmp_path / "t.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError):
        Checkpoint.read(tmp_path / "t.pt")

    class Boom:  # an object torch.save cannot pickle: the write fails part-way
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"model_state": {}, "config": {}, "bad": Boom()})
    assert path.read_bytes() == good  # the old checkpoint survived
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_one_epoch_on_real_mnist_learns(real_mnist, tmp_path):
    result = fit(make_config("basic_cnn", epochs=1, device="cpu"), real_mnist, out_root=tmp_path, progress=False)
    assert result.test_acc > 0.97


def test_a_time_budget_run_plans_its_steps_and_records_them(tiny_mnist, tmp_path):
    cfg = _quick(time_budget=4.0, batch_size=20)
    result = fit(cfg, tiny_mnist, out_root=tmp_path, progress=False)
    rows = read_metrics(result.run_dir / "metrics.csv")
    assert rows and [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[-1]["steps"] == Checkpoint.read(result.run_dir / "last.pt").total_steps
    assert all(r["time"] > 1e9 for r in rows)  # wall-clock stamps, to line runs up across processes
    assert result.epochs == len(rows)


def test_mirror_test_time_augmentation_averages_the_logits_of_both_images(tiny_mnist):
    from cnnlab.models import create_model
    from cnnlab.runs import predict_logits

    torch.manual_seed(0)
    model = create_model("resnet_bn")
    images = tiny_mnist.test_images[:40]
    plain = make_config("resnet_bn", device="cpu")
    tta = make_config("resnet_bn", device="cpu", tta_hflip=True)
    straight = predict_logits(model, images, plain)
    mirrored = predict_logits(model, images.flip(-1), plain)
    assert not torch.allclose(straight, mirrored, atol=1e-3)  # the network is not mirror-symmetric
    assert torch.allclose(predict_logits(model, images, tta), (straight + mirrored) / 2, atol=1e-5)


def test_recording_branch_gradients_without_inception_blocks_names_the_models_that_have_them(tiny_mnist, tmp_path):
    from cnnlab.models import models_with_branches

    with pytest.raises(ValueError, match=rf"Inception blocks \({', '.join(models_with_branches())}\); resnet has none"):
        fit(_quick("resnet", record_branch_grads=True), tiny_mnist, out_root=tmp_path, progress=False)


def test_resuming_a_run_killed_during_its_finish_completes_the_finish(tiny_mnist, tmp_path):
    """kill -9 while curves.png was being written leaves summary.json, a temporary file and no curves: the resume
    finds the run finished, removes the half-written file and draws the curves (CI once caught the file left)."""
    from cnnlab.train import resume

    run = fit(_quick(), tiny_mnist, out_root=tmp_path, progress=False).run_dir
    (run / "curves.png").unlink()
    (run / ".curves.png.x1y2z3.tmp").write_bytes(b"\x89PNG half")
    result = resume(run, tiny_mnist, progress=False)
    assert result.epochs == 1 and not list(run.glob(".*.tmp"))
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_the_gradient_is_clipped_to_the_recipes_norm_before_each_step(tiny_mnist):
    """Plain SGD at lr 1: a step moves the weights by exactly the gradient it took, so the move's norm is the
    clipped norm (the raw gradient of a fresh network on these batches is far larger at this loss scale)."""
    import time

    from cnnlab.config import resolve
    from cnnlab.train.distributed import SINGLE
    from cnnlab.train.loop import EpochPosition, StepHooks, train_one_epoch
    from cnnlab.train.parts import build_parts

    cfg = _quick(lr=1.0, momentum=0.0, weight_decay=0.0, schedule="constant", grad_clip=0.01, label_smoothing=0.0,
                 channels_last=False, steps=1, batch_size=50, val_size=0)
    parts = build_parts(resolve(cfg), tiny_mnist, SINGLE, torch.device("cpu"), time.perf_counter())
    model = parts.model
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    train_one_epoch(parts, 1, StepHooks([]), EpochPosition(parts.generator.get_state(), cfg.lr))
    moved = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
    assert moved.norm().item() == pytest.approx(0.01, rel=1e-3)


def test_grad_clip_is_the_recipes_off_in_the_course_and_off_for_runs_recorded_before_it():
    assert make_config("resnet").grad_clip == 2.0
    assert make_config("resnet", "course").grad_clip == 0.0
    old = make_config("resnet").to_dict()
    del old["grad_clip"]
    assert TrainConfig.from_dict(old).grad_clip == 0.0  # a resumed old run continues as it trained


def test_a_time_budget_run_warms_up_briefly_at_twice_the_rate_unless_told_otherwise():
    plain, budget = make_config("resnet"), make_config("resnet", time_budget=8.0)
    assert (budget.lr, budget.warmup_epochs) == (2 * plain.lr, 0.1)
    assert make_config("resnet", time_budget=8.0, lr=0.03).lr == 0.03
    assert make_config("resnet", "course", time_budget=8.0).lr == make_config("resnet", "course").lr
    assert make_config("resnet", dataset="imagefolder:/photos", time_budget=8.0).lr is None  # fitted to the folder


def test_a_resume_that_fails_before_training_leaves_the_run_directory_unlocked(tiny_mnist, tmp_path):
    """The lock a resume takes is released however its start fails, not when the garbage collector gets to it: the
    failure is kept here, as a notebook keeps its last traceback (and with it the failed run's frames)."""
    import dataclasses

    from cnnlab.train import resume

    from ..support.runs import as_stopped

    run = as_stopped(fit(_quick(), tiny_mnist, out_root=tmp_path, progress=False).run_dir)
    fewer = dataclasses.replace(tiny_mnist, train_images=tiny_mnist.train_images[:300],
                                train_labels=tiny_mnist.train_labels[:300])
    with pytest.raises(CheckpointError, match="batches per epoch") as failed:
        resume(run, fewer, progress=False)
    assert failed.value.__traceback__ is not None
    result = resume(run, tiny_mnist, progress=False)  # not RunDirBusy
    assert result.run_dir == run and (run / "summary.json").exists()
