"""The in-memory form every data set takes, whatever its source: uint8 images and int64 labels, its name and title
in the data set registry, class names and pixel statistics. Training normalises it per batch on the device."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False, repr=False)  # eq=False: == on tensors has no single truth value
class ImageSet:
    train_images: torch.Tensor  # (N, H, W) grey or (N, C, H, W), uint8
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor  # (M, ...) uint8
    test_labels: torch.Tensor  # (M,) int64
    source: str  # where the files came from, for logs and reports, e.g. "cache /root/.cache/cnnlab/mnist"
    name: str  # as --dataset names it (an image folder's with its absolute path): a registry lookup
    title: str  # how people write it ("MNIST"; a folder is known by its name)
    classes: tuple[str, ...]  # class names, by label
    mean: float  # pixel mean and standard deviation of the training images in [0, 1]
    std: float

    def __repr__(self) -> str:
        return (
            f"ImageSet(name={self.name!r}, train={tuple(self.train_images.shape)}, test={tuple(self.test_images.shape)}, "
            f"source={self.source!r})"
        )
