"""The MNIST-format data sets cnnlab knows by name: their official files, class names, sources and statistics.

Each is recognised by the SHA-256 of its four decompressed IDX files; nothing else counts as that data set.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.data.batching import MNIST_MEAN, MNIST_STD
from cnnlab.data.official import MNIST_FILES, OfficialFile


@dataclass(frozen=True)
class DatasetSpec:
    """A data set in MNIST's four-file IDX layout.

    Args:
        name: the --dataset name, and the cache folder.
        title: how it is written for people.
        files: train images, train labels, test images, test labels (decompressed).
        classes: class names, by label.
        mirrors: base URLs serving NAME.gz, tried in order.
        system_dirs: directories an operating-system package installs the files in (gzipped or not).
        mean, std: pixel statistics of the training images in [0, 1], for normalising.
    """

    name: str
    title: str
    files: tuple[OfficialFile, ...]
    classes: tuple[str, ...]
    mirrors: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()
    mean: float = 0.5
    std: float = 0.5


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    files=MNIST_FILES,
    classes=tuple(str(d) for d in range(10)),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    mean=MNIST_MEAN,
    std=MNIST_STD,
)

_F = (60000, 28, 28), (60000,), (10000, 28, 28), (10000,)
FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    files=(
        OfficialFile("train-images-idx3-ubyte", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", _F[0]),
        OfficialFile("train-labels-idx1-ubyte", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", _F[1]),
        OfficialFile("t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", _F[2]),
        OfficialFile("t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", _F[3]),
    ),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian's dataset-fashion-mnist
    mean=0.2860,
    std=0.3530,
)

DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (MNIST, FASHION_MNIST)}


def title_of(name: str) -> str:
    """How a data set's name is written for people: the spec's title, or the name itself (image folders)."""
    return DATASETS[name].title if name in DATASETS else name


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}, or imagefolder:PATH")
    return DATASETS[name]
