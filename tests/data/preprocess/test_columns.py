"""as_numeric / as_categorical / kind_of: how raw values become numbers or category strings."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedlake.data.preprocess.columns import as_categorical, as_numeric, kind_of


def _same(a: np.ndarray, b: list[float]) -> bool:
    return bool(np.array_equal(a, np.asarray(b, dtype=np.float64), equal_nan=True))


def test_numeric_arrays_pass_through_as_float64() -> None:
    out = as_numeric(np.array([1, 2, 3], dtype=np.int32))
    assert out.dtype == np.float64
    assert _same(out, [1.0, 2.0, 3.0])
    assert _same(as_numeric(np.array([[1.5], [2.5]])), [1.5, 2.5])  # flattened


def test_numeric_non_finite_values_become_nan() -> None:
    assert _same(
        as_numeric(np.array([1.0, np.inf, -np.inf, np.nan])), [1.0, np.nan, np.nan, np.nan]
    )


def test_numeric_mixed_object_values() -> None:
    values = [1, None, 2.5, float("nan"), float("inf"), "", "  ", np.float32(4.0), np.int64(7)]
    assert _same(as_numeric(values), [1.0, np.nan, 2.5, np.nan, np.nan, np.nan, np.nan, 4.0, 7.0])


def test_numeric_pandas_na_is_missing() -> None:
    # A DataFrame built from Python ints with pd.NA holds an object column: serving rows look so.
    frame = pd.DataFrame({"age": [30, pd.NA, 41]})
    assert frame["age"].dtype == object
    assert _same(as_numeric(frame["age"].to_numpy()), [30.0, np.nan, 41.0])
    assert _same(as_numeric(pd.array([1, None], dtype="Int64").to_numpy()), [1.0, np.nan])


@pytest.mark.parametrize("bad", ["3", "abc", b"7", True, np.bool_(False), object()])
def test_numeric_refuses_non_numbers_naming_the_column(bad: object) -> None:
    with pytest.raises(ValueError, match=r"column 'age' must hold numbers, got"):
        as_numeric(np.array([1.0, bad], dtype=object), name="age")


def test_numeric_refuses_a_bool_array() -> None:
    with pytest.raises(ValueError, match="must hold numbers"):
        as_numeric(np.array([True, False]))


def test_numeric_error_shows_the_value() -> None:
    with pytest.raises(ValueError, match=r"got 'twelve'"):
        as_numeric(np.array([1.0, "twelve"], dtype=object))


def test_categorical_mixed_inputs() -> None:
    values = [
        "a",
        None,
        float("nan"),
        float("inf"),
        "",
        "   ",
        True,
        np.bool_(False),
        b"club",
        3.0,
        np.float32(2.0),
        2.5,
        np.int64(3),
        7,
        pd.NA,
        "NaT",
        "<NA>",
    ]
    expected = ["a", None, None, None, None, None, "true", "false", "club", "3", "2", "2.5"]
    expected += ["3", "7", None, None, None]
    assert as_categorical(values).tolist() == expected


def test_categorical_integral_float_matches_int() -> None:
    # A long column with nulls reaches the clients as float64; serving sends ints: same slot.
    as_floats = as_categorical(np.array([3.0, np.nan, -1.0]))
    as_ints = as_categorical(pd.array([3, None, -1], dtype="Int64").astype(object))
    assert as_floats.tolist() == as_ints.tolist() == ["3", None, "-1"]


def test_categorical_string_numbers_stay_as_written() -> None:
    assert as_categorical(["3.0", "03"]).tolist() == ["3.0", "03"]


def test_categorical_bytes_invalid_utf8_is_replaced_not_refused() -> None:
    (out,) = as_categorical([b"\xff"]).tolist()
    assert out == "\ufffd"


def test_categorical_returns_object_array_flattened() -> None:
    out = as_categorical(np.array([["a"], ["b"]]))
    assert out.dtype == object
    assert out.tolist() == ["a", "b"]


def test_kind_of() -> None:
    assert kind_of(np.array([1, 2])) == "numeric"
    assert kind_of(np.array([1.0, np.nan])) == "numeric"
    assert kind_of(np.array([True, False])) == "categorical"
    assert kind_of(np.array(["a"])) == "categorical"
    assert kind_of(np.array([1, None], dtype=object)) == "categorical"


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.none(), max_size=30))
def test_numeric_is_finite_or_nan_and_keeps_finite_values(values: list[float | None]) -> None:
    out = as_numeric(values)
    assert out.shape == (len(values),)
    for v, o in zip(values, out.tolist(), strict=True):
        if v is not None and math.isfinite(v):
            assert o == v
        else:
            assert math.isnan(o)


@given(st.lists(st.integers(-(10**12), 10**12), max_size=20))
def test_categorical_ints_and_their_floats_agree(values: list[int]) -> None:
    assert as_categorical(values).tolist() == as_categorical(np.asarray(values, float)).tolist()
    assert as_categorical(values).tolist() == [str(v) for v in values]
