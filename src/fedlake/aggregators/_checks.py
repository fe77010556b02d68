"""Hyperparameter checks shared by the aggregation rules: one message shape for all."""

from __future__ import annotations

import math
import numbers


def check_int(name: str, value: object, *, low: int) -> int:
    """``value`` as an int >= ``low``, or a ValueError naming it and the accepted range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_positive(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """``value`` as a float > 0 (or None when allowed), else a ValueError naming it."""
    if value is None and allow_none:
        return None
    number = None if isinstance(value, bool) or not isinstance(value, numbers.Real) else value
    if number is None or not 0 < float(number) < math.inf:
        accepted = "a finite number > 0" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return float(number)
