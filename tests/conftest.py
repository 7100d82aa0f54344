"""Shared fixtures: a tiny synthetic MNIST-shaped set for fast tests, and the real MNIST and models trained on it for
the tests marked real_data; the marks that follow from those fixtures; the reliability record.

Markers (pyproject.toml describes each): real_data, browser, gpu, processes, netns, slow. A test carries every one
that applies; `make test-fast` leaves all six out."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data import ImageSet

from .support.data import synthetic_mnist


@pytest.fixture
def tiny_mnist() -> ImageSet:
    """600 training and 200 test images of random noise with random labels: right shapes and dtypes,
    for tests of mechanics (files written, determinism), never of accuracy."""
    return synthetic_mnist(train=600, test=200, seed=1234)


@pytest.fixture
def fashion_named_run(tiny_mnist, tmp_path):
    """A basic_cnn run directory, one epoch on tiny_mnist's noise recorded as Fashion-MNIST (its data set and
    class names): for the mechanics of named classes in predict and serve, never for accuracy."""
    import dataclasses

    from cnnlab.data.sets.fashion_mnist import SPEC as FASHION_MNIST
    from cnnlab.train import fit, make_config

    data = dataclasses.replace(tiny_mnist, name="fashion-mnist", title=FASHION_MNIST.title, classes=FASHION_MNIST.classes)
    cfg = make_config("basic_cnn", dataset="fashion-mnist", epochs=1, batch_size=50, val_size=100, device="cpu")
    return fit(cfg, data, out_root=tmp_path, progress=False).run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished basic_cnn run directory (2 epochs, 4 steps on synthetic noise; ~3 s), trained once per session:
    a real checkpoint record for the tests that take one apart. Copy it before changing anything in it."""
    from cnnlab.train import fit, make_config

    cfg = make_config("basic_cnn", steps=4, batch_size=50, val_size=50, device="cpu")
    return fit(cfg, synthetic_mnist(train=200, test=50, seed=0), out_root=tmp_path_factory.mktemp("tiny"), progress=False).run_dir


@pytest.fixture(scope="session")
def real_mnist() -> ImageSet:
    """The real MNIST, verified by hash, from the user's cache (fetched once if absent)."""
    from cnnlab.data import load_mnist

    return load_mnist(progress=False)


@pytest.fixture(scope="session")
def trained_resnet(real_mnist, tmp_path_factory):
    """A resnet trained for 2 epochs on the real MNIST (about 99% test accuracy; 13 s on 2 idle cores, loading MNIST
    included): the run directory. Shared by the tests that need a model that really reads digits (predict, serve,
    export). Epochs, not a time budget, so that the model is the same on a fast machine and a slow one."""
    from cnnlab.train import fit, make_config

    cfg = make_config("resnet", epochs=2, device="cpu", seed=0)
    result = fit(cfg, real_mnist, out_root=tmp_path_factory.mktemp("runs"), progress=False)
    assert result.test_acc > 0.98, result.test_acc  # the tests below rely on a model that reads digits
    return result.run_dir


@pytest.fixture(scope="session")
def trained_inception(real_mnist, tmp_path_factory):
    """An inception_net trained for one epoch on the real MNIST (19 s on 2 idle cores) with its branch gradients recorded."""
    from cnnlab.train import fit, make_config

    cfg = make_config("inception_net", epochs=1, device="cpu", seed=0, record_branch_grads=True)
    result = fit(cfg, real_mnist, out_root=tmp_path_factory.mktemp("runs"), progress=False)
    assert result.test_acc > 0.97, result.test_acc
    return result.run_dir


# ---- the reliability record: what each fault test tried and what happened, for docs/reliability.md ------

_RECORDS: list[dict] = []


def pytest_addoption(parser):
    parser.addoption(
        "--reliability-log", metavar="PATH",
        help="write what the fault tests tried and saw (JSON), for docs/reliability.py to render",
    )


# Marks that follow from the fixtures a test uses (directly or through other fixtures), so no test can forget them.
REAL_DATA = {"real_mnist", "trained_resnet", "trained_inception"}  # hold the real MNIST, or were trained on it
TRAINED = {"trained_resnet", "trained_inception"}  # 13 and 19 s of training (2 idle cores) before the first that asks
PROCESSES = {"procs"}  # tests/train/conftest.py: training processes, alone or under torchrun


def pytest_collection_modifyitems(config, items):
    no_gpu = None
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if "reliability" in used:  # every test that reports to the record is a reliability test: `-m reliability`
            item.add_marker(pytest.mark.reliability)
        if used & REAL_DATA:
            item.add_marker(pytest.mark.real_data)
        if used & TRAINED:
            item.add_marker(pytest.mark.slow)
        if used & PROCESSES:
            item.add_marker(pytest.mark.processes)
        if item.get_closest_marker("gpu"):
            if no_gpu is None:
                no_gpu = not torch.cuda.is_available()
            if no_gpu:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False here)"))


@pytest.fixture
def reliability(request):
    """record(fault, case, count, outcome): called by a fault test once its assertions have passed, so a
    record exists only for what was tried and behaved as stated."""

    def record(fault: str, case: str, count: int, outcome: str) -> None:
        _RECORDS.append({"fault": fault, "case": case, "count": int(count), "outcome": outcome, "test": request.node.nodeid})

    return record


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("--reliability-log", default=None)
    if path:
        import json

        with open(path, "w") as f:
            json.dump({"exitstatus": int(exitstatus), "records": _RECORDS}, f, indent=1)


@pytest.fixture(autouse=True)
def _threads_as_they_were():
    """A run given --threads sets PyTorch's process-wide count; the next test starts from the count before it."""
    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)

