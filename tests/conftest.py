"""Shared fixtures: a tiny synthetic MNIST-shaped set for fast tests, and the real MNIST for slow ones."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data import MNIST


@pytest.fixture
def tiny_mnist() -> MNIST:
    """600 training and 200 test images of random noise with random labels: right shapes and dtypes,
    for tests of mechanics (files written, determinism), never of accuracy."""
    g = torch.Generator().manual_seed(1234)
    return MNIST(
        train_images=torch.randint(0, 256, (600, 28, 28), dtype=torch.uint8, generator=g),
        train_labels=torch.randint(0, 10, (600,), generator=g),
        test_images=torch.randint(0, 256, (200, 28, 28), dtype=torch.uint8, generator=g),
        test_labels=torch.randint(0, 10, (200,), generator=g),
        source="synthetic (tests)",
    )


@pytest.fixture(scope="session")
def real_mnist() -> MNIST:
    """The real MNIST, verified by hash, from the user's cache (fetched once if absent)."""
    from cnnlab.data import load_mnist

    return load_mnist(progress=False)
