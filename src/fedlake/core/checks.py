"""Hyperparameter checks shared by rules and attacks: one message shape for all."""

from __future__ import annotations

import math
import numbers


def check_int(name: str, value: object, *, low: int) -> int:
    """``value`` as an int >= ``low``, or a ValueError naming it and the accepted range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_positive(name: str, value: object) -> float:
    """``value`` as a finite float > 0, else a ValueError naming it and the accepted range."""
    number = None if isinstance(value, bool) or not isinstance(value, numbers.Real) else value
    if number is None or not 0 < float(number) < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(number)


def check_positive_or_none(name: str, value: object) -> float | None:
    """``value`` as a finite float > 0, or None; else a ValueError naming it."""
    if value is None:
        return None
    number = None if isinstance(value, bool) or not isinstance(value, numbers.Real) else value
    if number is None or not 0 < float(number) < math.inf:
        raise ValueError(f"{name} must be a finite number > 0 or None, got {value!r}")
    return float(number)


def check_fraction(name: str, value: object, *, high: float = 1.0) -> float:
    """``value`` as a float in [0, high), else a ValueError naming it and the range."""
    number = None if isinstance(value, bool) or not isinstance(value, numbers.Real) else value
    if number is None or not 0 <= float(number) < high:
        raise ValueError(f"{name} must be a number in [0, {high:g}), got {value!r}")
    return float(number)
