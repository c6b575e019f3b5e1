"""Input checks shared by the statistics (lengths, 0/1 values, cluster keys, seeds)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from unpact.errors import InputError

Alternative = Literal["greater", "two-sided"]


def _vector(name: str, x: ArrayLike, where: str, *, unit: bool) -> NDArray[np.float64]:
    """``x`` as a 1-D float array of finite values (in ``[0, 1]`` if ``unit``)."""
    if isinstance(x, (str, bytes)):
        raise InputError(f"{name} must be a 1-D sequence of numbers, got a string", source=where)
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(
            f"{name} must be a 1-D sequence of numbers or booleans ({e})",
            source=where,
            fix="pass one 0/1 (or True/False) outcome per item",
        ) from None
    if arr.ndim != 1:
        raise InputError(
            f"{name} must be 1-D (one outcome per item), got shape {arr.shape}",
            source=where,
            fix="flatten it to one value per item",
        )
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise InputError(
            f"{name}[{bad}] is {arr[bad]}: outcomes must be finite",
            source=where,
            fix="drop items without an outcome before calling",
        )
    if unit and arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        bad = int(np.flatnonzero((arr < 0.0) | (arr > 1.0))[0])
        raise InputError(
            f"{name}[{bad}] is {arr[bad]}: outcomes must lie in [0, 1]",
            source=where,
            fix="pass 0/1 (or True/False) outcomes",
        )
    return arr


def _codes(clusters: Sequence[Hashable], n: int, where: str) -> tuple[NDArray[np.int64], int]:
    """Integer cluster codes (in order of first appearance) and the number of clusters."""
    if isinstance(clusters, (str, bytes)) or not isinstance(clusters, Iterable):
        raise InputError(
            f"clusters must be a sequence of cluster keys (one per item), got {type(clusters).__name__}",
            source=where,
            fix="pass one key per item, e.g. [e.subject for e in examples] or cluster_keys(examples)",
        )
    keys = list(clusters)
    if len(keys) != n:
        raise InputError(
            f"clusters has {len(keys)} keys but there are {n} items",
            source=where,
            fix="pass exactly one cluster key per item, in the same order",
        )
    seen: dict[Hashable, int] = {}
    codes = np.empty(n, dtype=np.int64)
    for i, k in enumerate(keys):
        if k is None:
            raise InputError(
                f"clusters[{i}] is None: an item without a cluster key would be lumped with every other such item",
                source=where,
                fix="use cluster_keys(examples), which falls back to the item id when the subject is unknown",
            )
        try:
            codes[i] = seen.setdefault(k, len(seen))
        except TypeError:
            raise InputError(
                f"clusters[{i}] is an unhashable {type(k).__name__}", source=where, fix="use strings as cluster keys"
            ) from None
    return codes, len(seen)


def _check_level(level: float, where: str) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
        raise InputError(f"level must be a number strictly between 0 and 1, got {level!r}", source=where)
    return float(level)


def _check_int(name: str, value: Any, minimum: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}", source=where)
    return int(value)


def _check_seed(seed: Any, where: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(
            f"seed must be a non-negative integer, got {seed!r}", source=where, fix="results are reproducible per seed"
        )
    return int(seed)


def _check_alternative(alternative: str, where: str) -> Alternative:
    if alternative not in ("greater", "two-sided"):
        raise InputError(
            f"alternative must be 'greater' or 'two-sided', got {alternative!r}",
            source=where,
            fix="'greater' tests a > b (recovery above control)",
        )
    return alternative  # type: ignore[return-value]


def _pair(a: ArrayLike, b: ArrayLike, where: str, *, unit: bool) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    av = _vector("a", a, where, unit=unit)
    bv = _vector("b", b, where, unit=unit)
    if av.shape != bv.shape:
        raise InputError(
            f"a has {av.size} items but b has {bv.size}: the outcomes must be paired",
            source=where,
            fix="pass the two models' outcomes on the same items, in the same order",
        )
    return av, bv


# ----- helpers ---------------------------------------------------------------------------------
