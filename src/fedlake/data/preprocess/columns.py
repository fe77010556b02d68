"""One column's raw values as the preprocessing sees them: float64 numbers or category strings.

Training rows (read from a table) and prediction rows (a pandas DataFrame) pass
through the same two functions, so a value is encoded identically on the clients
and at serving time.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Literal

import numpy as np

__all__ = ["KINDS", "Kind", "as_categorical", "as_numeric", "kind_of"]

Kind = Literal["numeric", "categorical"]
KINDS: tuple[Kind, ...] = ("numeric", "categorical")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    pd = sys.modules.get("pandas")  # pandas' NA can only exist once pandas is imported
    if pd is not None and value is pd.NA:
        return True
    try:
        return isinstance(value, float | np.floating) and not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _category(value: Any) -> str | None:
    """The category string of one value: bools lower-case, integral numbers without ``.0``."""
    if _missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    text = str(value)
    return None if text.strip() in ("", "<NA>", "NaT") else text


def as_categorical(values: Any) -> np.ndarray:
    """An object array of category strings, None where the value is missing."""
    flat = np.asarray(values, dtype=object).ravel()
    return np.array([_category(v) for v in flat.tolist()], dtype=object)


def as_numeric(values: Any, *, name: str = "column") -> np.ndarray:
    """A float64 array, NaN where the value is missing (None, pandas NA, NaN or infinite).

    Raises:
        ValueError: a value is neither a number nor missing (e.g. a string).
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "iuf":
        out = arr.astype(np.float64).ravel()
    else:
        out = np.empty(arr.size, dtype=np.float64)
        for i, v in enumerate(arr.ravel().tolist()):
            if _missing(v) or (isinstance(v, str) and v.strip() == ""):
                out[i] = np.nan
                continue
            try:
                if isinstance(v, str | bytes | bool | np.bool_):
                    raise TypeError
                out[i] = float(v)
            except (TypeError, ValueError):
                raise ValueError(
                    f"column {name!r} must hold numbers, got {v!r}; it was numeric in training"
                ) from None
    out[~np.isfinite(out)] = np.nan
    return out


def kind_of(values: np.ndarray) -> Kind:
    """``numeric`` for integer/float arrays, ``categorical`` for anything else (strings, bools)."""
    return "numeric" if np.asarray(values).dtype.kind in "iuf" else "categorical"
