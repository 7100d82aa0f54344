"""A trained model's parts that need no training: its typed record (what an older checkpoint lacks reads as its
default), its class names, the one evaluation (a split in parts adds up to the whole), and the data set's check that
its classes are still those the model was trained on."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.config import make_config
from cnnlab.data import DataError, DatasetEntry, ImageSet, lookup, register_dataset, unregister_dataset
from cnnlab.data.sets.registry import class_difference
from cnnlab.models import create_model
from cnnlab.runs import Checkpoint, CheckpointError, TrainedModel, class_names, save_checkpoint
from cnnlab.runs.forward import evaluate, evaluation_sums


def test_class_names_come_from_the_run_else_from_its_data_set():
    from cnnlab.data.sets.fashion_mnist import SPEC as FASHION_MNIST

    def record(**entries) -> Checkpoint:
        return Checkpoint(model_state={}, config={}, **entries)

    fashion = make_config("resnet", dataset="fashion-mnist")
    assert class_names(record(model_kwargs={"num_classes": 10}), fashion) == FASHION_MNIST.classes  # older runs
    assert class_names(record(), fashion) == FASHION_MNIST.classes  # MNIST's 10 classes where nothing was recorded
    folder = make_config("resnet", dataset="imagefolder:/photos")
    assert class_names(record(model_kwargs={"num_classes": 2}, classes=["cat", "dog"]), folder) == ("cat", "dog")
    assert class_names(record(model_kwargs={"num_classes": 3}), folder) == ("0", "1", "2")


def _minimal(path: Path, **entries) -> Path:
    """A checkpoint as the first cnnlab wrote them: weights and config, and whatever `entries` add."""
    torch.manual_seed(0)
    weights = {k: v.clone() for k, v in create_model("basic_cnn").state_dict().items()}
    save_checkpoint(path, {"model_state": weights, "config": make_config("basic_cnn").to_dict(), **entries})
    return path


def test_an_older_checkpoint_reads_with_defaults_and_is_refused_for_a_resume(tmp_path):
    path = _minimal(tmp_path / "old.pt")
    record = Checkpoint.read(path)
    assert record.model_kwargs == {"in_channels": 1, "num_classes": 10, "image_size": 28}  # MNIST's, as then
    assert record.classes == [] and record.history == [] and record.metrics == {} and record.test_acc is None
    assert record.epoch is None and record.optimizer_state is None and record.source == path
    assert record.train_config.model == "basic_cnn"
    with pytest.raises(CheckpointError, match="older cnnlab and cannot be resumed") as info:
        Checkpoint.read(path, resume=True)
    assert str(path) in str(info.value)

    rows = [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.75}]
    record = Checkpoint.read(_minimal(tmp_path / "history.pt", history=rows))
    assert record.epoch == 2 and record.test_acc == 0.75  # the one cnnlab that wrote no epoch and metrics


def test_an_older_checkpoint_loads_as_an_mnist_model(tmp_path):
    from cnnlab.runs import load

    trained = load(_minimal(tmp_path / "old.pt"), "cpu")
    assert trained.classes == tuple(str(d) for d in range(10)) and trained.describe()["epoch"] is None
    assert trained.predict_prepared(np.zeros((28, 28), np.uint8)).probabilities == pytest.approx(
        torch.softmax(trained.logits(torch.zeros(1, 28, 28, dtype=torch.uint8)), 1)[0].tolist(), abs=1e-6)


def test_a_split_evaluated_in_parts_and_reduced_is_the_whole():
    torch.manual_seed(0)
    model = create_model("basic_cnn").eval()
    cfg = make_config("basic_cnn", device="cpu", eval_batch_size=8)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (30,), generator=g)
    whole = evaluate(model, x, y, cfg)
    parts = [slice(0, 7), slice(7, 20), slice(20, 30)]
    sums = [evaluation_sums(model, x[p], y[p], cfg) for p in parts]
    for i, part in enumerate(parts):  # each "process" evaluates its part; reduce adds the others' sums
        others = sum(s for j, s in enumerate(sums) if j != i)
        got = evaluate(model, x, y, cfg, part=part, reduce=lambda s, others=others: s + others)
        assert got == pytest.approx(whole, rel=1e-6)
    alone = evaluate(model, x, y, cfg, part=parts[0])
    assert alone[1] == pytest.approx(float(sums[0][1] / 7))  # without reduce, the part is the whole
    assert all(math.isnan(v) for v in evaluate(model, x[:0], y[:0], cfg, part=slice(0, 0), reduce=lambda s: s))


def test_a_data_set_whose_classes_changed_is_refused_naming_the_difference():
    found = ("cat", "dog", "owl")

    def load(path, data_dir=None, **_) -> ImageSet:
        x, y = torch.zeros(6, 4, 4, dtype=torch.uint8), torch.arange(6) % 3
        return ImageSet(x, y, x, y, source="the test", name="pets", title="Pets", classes=found, mean=0.5, std=0.25)

    register_dataset(DatasetEntry(name="pets", title="Pets", summary="three pets", load=load,
                                  prepare=lambda picture, c, s: np.zeros((s, s), np.uint8)))
    try:
        pets = lookup("pets")
        assert pets.load(classes=found).classes == found and pets.load(classes=None).classes == found
        with pytest.raises(DataError) as info:
            pets.load(classes=("cat", "dog"))
        assert str(info.value) == ("Pets no longer has the classes the model was trained on: added 'owl' "
                                   "(trained on 2 classes, found 3)")
        with pytest.raises(DataError, match="another order"):
            pets.load(classes=("dog", "cat", "owl"))
    finally:
        unregister_dataset("pets")
    assert class_difference(("a", "b"), ("a", "c")) == "added 'c'; gone 'b' (trained on 2 classes, found 2)"


def test_a_trained_model_is_its_record_and_network():
    torch.manual_seed(0)
    cfg = make_config("basic_cnn", channels_last=False)
    record = Checkpoint(model_state={}, config=cfg.to_dict(), classes=list("abcdefghij"), metrics={"test_acc": 0.9})
    trained = TrainedModel(create_model("basic_cnn").eval(), cfg, record, Path("somewhere"))
    assert trained.classes == tuple("abcdefghij") and trained.test_acc == 0.9
    assert "test acc 90.00%" in repr(trained) and "somewhere" in repr(trained)
    info = trained.describe()
    assert info["classes"] == list("abcdefghij") and info["parameters"] > 0 and "somewhere" not in str(info)
    image = np.zeros((28, 28), np.uint8)
    probabilities = trained.forward_prepared(image)
    assert trained.predict_prepared(image).probabilities == probabilities.tolist()  # one forward for both
