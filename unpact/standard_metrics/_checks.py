"""Input checks shared by the standard metrics (1-D finite score vectors, fractions)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from unpact.errors import InputError


def vector(name: str, x: ArrayLike, where: str, *, empty: bool = False) -> NDArray[np.float64]:
    """``x`` as a 1-D float64 array of finite values (non-empty unless ``empty``).

    Raises:
        InputError: A string, something not numeric, not 1-D, empty, or holding NaN/inf (naming the index).
    """
    if isinstance(x, (str, bytes)):
        raise InputError(f"{name} must be a 1-D sequence of numbers, got a string", source=where)
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be a 1-D sequence of numbers ({e})", source=where) from None
    if arr.ndim != 1:
        raise InputError(
            f"{name} must be 1-D (one value per item), got shape {arr.shape}",
            source=where,
            fix="pass one number per item",
        )
    if not empty and arr.size == 0:
        raise InputError(f"{name} is empty", source=where, fix="pass at least one item")
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise InputError(f"{name}[{bad}] is {arr[bad]}: values must be finite", source=where)
    return arr


def fraction(name: str, value: Any, where: str) -> float:
    """``value`` as a float in ``(0, 1]`` (the ``k`` of Min-K%).

    Raises:
        InputError: Not a number in ``(0, 1]``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise InputError(f"{name} must be a fraction in (0, 1], got {value!r}", source=where, fix="e.g. 0.4 for 40%")
    return float(value)


def finite(name: str, value: Any, where: str) -> float:
    """``value`` as a finite float.

    Raises:
        InputError: Not a finite number.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InputError(f"{name} must be a number, got {type(value).__name__} {value!r}", source=where)
    if not math.isfinite(float(value)):
        raise InputError(f"{name} must be finite, got {value!r}", source=where)
    return float(value)
