"""The data set registry: each data set cnnlab trains on is an entry, in one file of its own under data/
(mnist.py, fashion_mnist.py, imagefolder.py). An entry says where the data come from and how they are verified
(its loader), its title and class names, the changes the default recipe needs for it, and how predict and serve
prepare a user's picture for a model trained on it.

A `--dataset` string is looked up once (`lookup`), and the `Dataset` it gives is passed on from there: no other
module compares data set names. An entry that `takes_path` is named `NAME:PATH` (`imagefolder:photos`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cnnlab.data.errors import DataError
from cnnlab.data.tensors.imageset import ImageSet

# Loader: (path given after "NAME:", or None; data_dir; image_size; split_seed; progress; recorded) -> ImageSet.
#   data_dir: where the files are (a named set's IDX files), or an image folder's new place when it has moved.
#   recorded: the name comes from a trained run, so a place that is gone may be told how to name its new one.
Loader = Callable[..., ImageSet]
# Picture preparation: (a user's picture as a path, bytes, PIL image or array; in_channels; image_size) -> the
# uint8 image the model reads, (H, W) grey or (C, H, W).
Preparer = Callable[[Any, int, int], np.ndarray]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered data set.

    Args:
        name: the --dataset name (the part before ':' for one that takes a path).
        title: how people write it.
        summary: one line for lists (`cnnlab.datasets()`, --help).
        load: its loader (see Loader).
        prepare: how a user's picture becomes what a model trained on it reads.
        classes: its class names when known before loading (a folder's come from its sub-folders).
        recipe: what the default recipe changes for it (TrainConfig fields).
        takes_path: named NAME:PATH, and recorded with the absolute path.
        pixels: how its images look, for an exported model's contract ("white on black, as MNIST's images").
        shape: (channels, side) of every image, for a set whose images all have one (a folder's are chosen when
            it is loaded): a model recorded as trained on it must take that shape.
    """

    name: str
    title: str
    summary: str
    load: Loader
    prepare: Preparer
    classes: tuple[str, ...] = ()
    recipe: dict[str, Any] = field(default_factory=dict)
    takes_path: bool = False
    pixels: str = "as the data set's images"
    shape: tuple[int, int] | None = None


@dataclass(frozen=True)
class Dataset:
    """A looked-up --dataset string: its entry, and the path an entry that takes one was given."""

    entry: DatasetEntry
    path: str | None = None

    @property
    def name(self) -> str:
        return f"{self.entry.name}:{self.path}" if self.entry.takes_path else self.entry.name

    @property
    def title(self) -> str:
        return self.name if self.entry.takes_path else self.entry.title  # a folder is known by its path

    @property
    def shown(self) -> str:
        """The name, not the place: what a server may tell anyone ("imagefolder:photos", never the folder's path)."""
        return f"{self.entry.name}:{Path(self.path).name}" if self.entry.takes_path else self.entry.name

    def load(self, data_dir: str | None = None, *, image_size: int = 0, split_seed: int = 0, progress: bool = True,
             recorded: bool = True, classes: Sequence[str] | None = None) -> ImageSet:
        """Its images and labels, split (see Loader for the arguments).

        `classes`: the class names a trained model has, by label (None or empty: not checked). A folder whose classes
        changed since (one added, removed, renamed, or the order changed) would be scored under the wrong labels:
        refused with a DataError that names the difference."""
        data = self.entry.load(self.path, data_dir=data_dir, image_size=image_size, split_seed=split_seed,
                               progress=progress, recorded=recorded)
        if classes and tuple(classes) != tuple(data.classes):
            raise DataError(f"{data.title} no longer has the classes the model was trained on: "
                            f"{class_difference(tuple(classes), tuple(data.classes))}")
        return data

    def prepare(self, picture: Any, in_channels: int = 1, image_size: int = 28) -> np.ndarray:
        return self.entry.prepare(picture, in_channels, image_size)


def class_difference(trained: tuple[str, ...], found: tuple[str, ...]) -> str:
    """How the classes `found` in a data set differ from those a model was `trained` on, in words."""
    def names(xs) -> str:
        shown = ", ".join(repr(x) for x in xs[:5])
        return shown + (f" and {len(xs) - 5} more" if len(xs) > 5 else "")

    added = [c for c in found if c not in trained]
    removed = [c for c in trained if c not in found]
    parts = ([f"added {names(added)}"] if added else []) + ([f"gone {names(removed)}"] if removed else [])
    if not parts:  # the same names, in another order: every label would mean another class
        parts = [f"the same {len(found)} classes in another order ({names(found)} against {names(trained)})"]
    return "; ".join(parts) + f" (trained on {len(trained)} classes, found {len(found)})"


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"data set {entry.name!r} is already registered")
    if ":" in entry.name:
        raise ValueError(f"a data set's name cannot hold ':' ({entry.name!r})")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_dataset(name: str) -> None:
    """Remove an entry (a test that registered its own)."""
    _REGISTRY.pop(name, None)


def entries() -> list[DatasetEntry]:
    """Every registered data set, in registration order."""
    return list(_REGISTRY.values())


def usage() -> str:
    """What --dataset accepts, for help texts and errors."""
    return ", ".join(e.name + (":PATH" if e.takes_path else "") for e in _REGISTRY.values())


def lookup(name: str) -> Dataset:
    """The data set a --dataset string names (ValueError naming the choices when none does)."""
    key, sep, path = name.partition(":")
    entry = _REGISTRY.get(key)
    if entry is None or entry.takes_path != bool(sep) or (sep and not path):
        raise ValueError(f"unknown dataset {name!r}; choose from: {usage()}")
    return Dataset(entry, path if sep else None)
