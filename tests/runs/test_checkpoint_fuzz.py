"""Property: random mutations of a real checkpoint's record, re-saved with a correct SHA-256, give either a model that
works or a CheckpointError; never another exception."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab.runs import CheckpointError, load, save_checkpoint
from cnnlab.runs.checkpoint import Checkpoint

from ..support.data import synthetic_mnist

# Values a mutation may put anywhere: every type a pickle of plain data can hold, at the edges of their ranges.
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
)
_TENSORS = st.builds(
    lambda shape, fill, dtype: torch.full(shape, fill).to(dtype),
    st.lists(st.integers(0, 4), max_size=3).map(tuple),
    st.sampled_from([0.0, 1.5, -3.0, math.nan, math.inf]),
    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.float16]),
)
_VALUES = st.recursive(st.one_of(_SCALARS, _TENSORS),
                       lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                       max_leaves=6)


def _paths(state, prefix=()):
    """Every place in the record a mutation may touch: each dict key and list item, however deep (tensors are leaves)."""
    yield prefix
    if isinstance(state, dict):
        for k, v in state.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(state, list):
        for i, v in enumerate(state[:3]):
            yield from _paths(v, (*prefix, i))


def _mutate(state, path, action, value):
    """Apply one mutation at `path` (not the root): delete it, replace it, add a sibling key, or (a tensor) fill a
    copy with `value`'s first number, or reshape it."""
    *parents, last = path
    holder = state
    for k in parents:
        holder = holder[k]
    old = holder[last]
    if action == "delete":
        del holder[last]
    elif action == "replace":
        holder[last] = value
    elif action == "add" and isinstance(holder, dict):
        holder[f"extra_{last}"] = value
    elif action == "poison" and isinstance(old, torch.Tensor) and old.is_floating_point() and old.numel():
        t = old.clone().contiguous()
        t.view(-1)[0] = math.nan
        holder[last] = t
    elif action == "reshape" and isinstance(old, torch.Tensor):
        holder[last] = old.reshape(-1)
    else:
        holder[last] = value


class _Record(dict):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing case: the weights are not worth it
        return f"<the tiny run's checkpoint record: {', '.join(self)}>"


@pytest.fixture(scope="module")
def base_record(tiny_run):
    state = torch.load(tiny_run / "last.pt", weights_only=True)
    return _Record({k: v for k, v in state.items() if k not in ("sha256", "format_version")})


def _copy(x):
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x  # tensors are replaced, never changed in place


EXAMPLES = 150


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def _load_mutated(base_record, tmp_path, outcomes, data):
    state = _copy(base_record)
    paths = [p for p in _paths(state) if p]
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(paths), label="path")
        action = data.draw(st.sampled_from(["delete", "replace", "add", "poison", "reshape"]), label="action")
        try:
            _mutate(state, path, action, data.draw(_VALUES, label="value"))
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed or replaced what this path went through
            pass
    path = tmp_path / "mutated.pt"
    try:
        save_checkpoint(path, state)
    except (ValueError, RecursionError):  # not even picklable/fingerprintable: nothing cnnlab could have written
        return
    try:
        model = load(path, device="cpu")
    except CheckpointError:
        outcomes["refused"] += 1
    else:  # accepted: it must work
        outcomes["loaded"] += 1
        digit = np.zeros((28, 28), dtype=np.uint8)
        digit[6:22, 12:16] = 255  # a stroke: a picture with something in it
        pred = model.predict(digit)
        assert all(math.isfinite(p) for p in pred.probabilities) and len(pred.probabilities) == len(model.classes)
        accuracy = model.evaluate(data=synthetic_mnist(train=10, test=20, seed=1))
        assert 0.0 <= accuracy <= 1.0
    try:
        Checkpoint.read(path, resume=True)
    except CheckpointError:
        pass


def test_mutated_checkpoint_records_load_as_a_working_model_or_a_checkpoint_error(base_record, tmp_path, reliability):
    """Random mutations of a trained basic_cnn's record (a key deleted, replaced by any plain value or tensor, a key
    added, a tensor made NaN or flattened; one to three at a time), each saved with its SHA-256: loading gives a
    model whose predictions and evaluation are finite numbers, or a CheckpointError; a resume's reading gives a
    record or a CheckpointError. No other exception, ever (hypothesis, 150 examples, about 10 s)."""
    outcomes = {"loaded": 0, "refused": 0}
    _load_mutated(base_record, tmp_path, outcomes)
    assert outcomes["refused"] > 0  # the mutations reach the checks
    reliability("checkpoints", "random mutations of a real checkpoint's record (hypothesis): keys deleted, replaced by "
                "any plain value or tensor (NaN, infinite, wrong shape or dtype), keys added, tensors poisoned or "
                "flattened; re-saved with a correct SHA-256", sum(outcomes.values()),
                f"each either loaded as a model whose predictions and evaluation are finite ({outcomes['loaded']}) or "
                f"was refused with a CheckpointError ({outcomes['refused']}); no other exception")
