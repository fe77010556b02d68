"""The server step writes each round's params and scaled step into reused arrays,
bit for bit what the plain numpy expressions give, and read-only."""

from __future__ import annotations

import numpy as np

from fedlake.core.params import frozen
from fedlake.core.recycle import SMALLEST
from fedlake.core.state import _stepped
from fedlake.core.transform import scale

D = SMALLEST // 2  # float32 values: large enough to be pooled


def _vectors(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=D).astype(np.float32), rng.normal(size=D).astype(np.float32)


def test_stepped_matches_numpy_bit_for_bit_and_is_frozen() -> None:
    params, step = _vectors(0)
    out = _stepped(frozen(params), step)
    np.testing.assert_array_equal(out.view(np.uint32), (params + step).view(np.uint32))
    assert not out.flags.writeable and frozen(out) is out


def test_stepped_reuses_last_rounds_array_once_let_go() -> None:
    params, step = _vectors(1)
    first = _stepped(params, step)
    address = first.ctypes.data
    second = _stepped(first, step)  # the old params are still held: a different array
    assert second.ctypes.data != address
    expected = (first + step).copy()
    del first
    third = _stepped(second, step)
    assert third.ctypes.data == address  # the first round's array, free again
    np.testing.assert_array_equal(third, second + step)
    np.testing.assert_array_equal(second, expected)  # untouched by the reuse


def test_stepped_falls_back_for_other_dtypes() -> None:
    params, step = _vectors(2)
    out = _stepped(params, step.astype(np.float64))
    np.testing.assert_array_equal(out, (params + step.astype(np.float64)).astype(np.float32))
    assert out.dtype == np.float32 and not out.flags.writeable


def test_scale_is_exact_and_pooled() -> None:
    vec, _ = _vectors(3)
    rng = np.random.default_rng(0)
    same, _ = scale(1.0).update(vec, None, params=vec, rng=rng)
    assert same is vec  # x * 1.0f is x: no pass, no array
    halved, _ = scale(0.7).update(vec, None, params=vec, rng=rng)
    expected = (vec * np.float32(0.7)).astype(np.float32)
    np.testing.assert_array_equal(halved.view(np.uint32), expected.view(np.uint32))
    wide, _ = scale(0.7).update(vec.astype(np.float64), None, params=vec, rng=rng)
    np.testing.assert_array_equal(
        wide, (vec.astype(np.float64) * np.float32(0.7)).astype(np.float32)
    )
