"""Unpickle NumPy arrays without letting the pickle run code.

A pickle names callables ("globals") that the loader imports and calls; an ordinary ``pickle.load`` will call
``os.system`` if the file asks. This loader admits only the three globals that rebuilding an ndarray needs and
refuses any other before it is imported.
"""

from __future__ import annotations

import pickle
from typing import IO, Any, Callable

import numpy as np

from cnnlab.data.errors import DataError

try:  # NumPy >= 2 moved the implementation to numpy._core; numpy.core is a deprecated alias there.
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

# (module, name) as written in the pickle -> the object in the installed NumPy. Pickles made under NumPy 1.x say
# numpy.core.multiarray, those made under NumPy 2 say numpy._core.multiarray; both mean the same function.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(DataError):
    """The pickle asked for something other than NumPy array reconstruction."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An Unpickler whose only importable globals are those in :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global; refuse every other one without importing it."""
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise UnsafePickleError(
                f"refused to unpickle {module}.{name}: only NumPy array reconstruction is allowed ({allowed})"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids: they would hand control to an external resolver."""
        raise UnsafePickleError(f"refused persistent id {pid!r} in pickle")


def load_numpy_pickle(file: IO[bytes]) -> Any:
    """Load a pickle made of tuples, lists, numbers, strings and NumPy arrays.

    Args:
        file: binary file object positioned at the pickle.

    Raises:
        UnsafePickleError: the pickle names any other global.
        DataError: the stream is not a valid pickle.
    """
    # latin1 is what NumPy documents for Python 2 pickles: it maps their byte strings 1:1 to the array buffers.
    unpickler = NumpyOnlyUnpickler(file, encoding="latin1")
    try:
        return unpickler.load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataError(f"corrupt pickle: {type(err).__name__}: {err}") from None
