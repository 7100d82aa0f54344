"""The data set entry for Fashion-MNIST: ten kinds of clothing in MNIST's format (each file verified by its
SHA-256), from Debian's dataset-fashion-mnist package or its mirror; mirrored rather than rotated in the default
recipe, and a user's photo of a garment prepared the way the data set was made (data/tensors/pictures.to_fashion)."""

from __future__ import annotations

from cnnlab.data.fetch.idx_sources import IdxSpec, load_idx
from cnnlab.data.fetch.official import OfficialFile
from cnnlab.data.tensors.pictures import to_fashion
from cnnlab.data.sets.registry import DatasetEntry, register_dataset

_F = (60000, 28, 28), (60000,), (10000, 28, 28), (10000,)
SPEC = IdxSpec(
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
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    package="dataset-fashion-mnist",
    mean=0.2860,
    std=0.3530,
)


ENTRY = register_dataset(DatasetEntry(
    name="fashion-mnist", title=SPEC.title,
    summary="ten kinds of clothing, 28x28 grey, in MNIST's format: 60,000 training and 10,000 test images",
    classes=SPEC.classes,
    load=lambda path, data_dir=None, progress=True, **_: load_idx(SPEC, data_dir, progress=progress),
    prepare=lambda picture, in_channels, image_size: to_fashion(picture),
    pixels="white on black, as Fashion-MNIST's images",
    shape=(1, 28),
    # Clothes are photographed upright and may face either way: mirrored instead of rotated or scaled.
    recipe=dict(hflip=True, max_rotate=0.0, max_scale=0.0),
))
