"""The one builder of synthetic MNIST-shaped data for the tests: uint8 noise images and random labels.

Used by the `tiny_mnist` fixture, the fault and fuzz tests, and tests/train/ddp_worker.py (a script that torchrun
runs outside pytest, so it imports this module by path: keep it free of pytest and of other test modules).
"""

from __future__ import annotations

import torch

from cnnlab.data import ImageSet
from cnnlab.data.sets.mnist import SPEC as MNIST


def synthetic_mnist(train: int = 600, test: int = 200, seed: int = 1234) -> ImageSet:
    """`train` training and `test` test images of random noise (28x28 uint8) with random labels 0..9.

    Right shapes and dtypes, for tests of mechanics (files written, determinism, servers that must not fail), never
    of accuracy. The same (train, test, seed) gives the same tensors on every machine and in every process: the
    distributed tests rely on that. The draws come in a fixed order (train images, train labels, test images, test
    labels) from one generator seeded with `seed`.
    """
    g = torch.Generator().manual_seed(seed)
    return ImageSet(
        train_images=torch.randint(0, 256, (train, 28, 28), dtype=torch.uint8, generator=g),
        train_labels=torch.randint(0, 10, (train,), generator=g),
        test_images=torch.randint(0, 256, (test, 28, 28), dtype=torch.uint8, generator=g),
        test_labels=torch.randint(0, 10, (test,), generator=g),
        source="synthetic (tests)",
        name="mnist",
        title="MNIST",
        classes=MNIST.classes,
        mean=MNIST.mean,
        std=MNIST.std,
    )
