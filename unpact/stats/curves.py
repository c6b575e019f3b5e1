"""Intervals for statistics of curves measured on the same items (relearning: accuracy per fine-tuning step).

:func:`first_crossing` gives the step at which a curve first reaches a threshold, with a cluster-bootstrap
percentile interval: whole clusters (a fact's phrasings, a person's facts) are resampled with
replacement, the curve recomputed on each resample, and its first crossing taken ("never" counts as
later than every step).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from unpact.errors import InputError
from unpact.stats._checks import _check_int, _check_level, _check_seed, _codes

__all__ = ["first_crossing"]


def first_crossing(
    correct: ArrayLike,
    steps: Sequence[int],
    clusters: Sequence[Hashable],
    threshold: float,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[int | None, int | None, int | None]:
    """The first step at which the mean of ``correct`` reaches ``threshold``, and its interval.

    Args:
        correct: ``(n_steps, n_items)`` outcomes in ``[0, 1]`` (item ``i`` right at step ``t``).
        steps: ``n_steps`` step counts, increasing.
        clusters: ``n_items`` cluster keys.
        threshold: The accuracy to reach.
        level: Nominal coverage.
        n_boot: Bootstrap resamples.
        seed: Random seed.

    Returns:
        ``(step, lo, hi)``: the observed first step and the interval's ends; ``None`` means "not within
        the measured steps" (for ``hi``: in more than ``(1 - level) / 2`` of the resamples).

    Raises:
        InputError: Shapes that do not match, or bad ``clusters`` / ``level`` / ``n_boot`` / ``seed``.
    """
    where = "first_crossing"
    x = np.asarray(correct, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(steps):
        raise InputError(
            f"correct must be (n_steps={len(steps)}, n_items), got shape {x.shape}",
            source=where,
            fix="pass one row per step of `steps`, one column per item",
        )
    level = _check_level(level, where)
    n_boot = _check_int("n_boot", n_boot, 1, where)
    seed = _check_seed(seed, where)
    if x.shape[1] == 0:
        return None, None, None
    codes, g = _codes(clusters, x.shape[1], where)
    never = len(steps)  # an index past the last step

    def first(acc: np.ndarray) -> np.ndarray:
        """``(..., n_steps)`` accuracies -> ``(...)`` index of the first step reaching the threshold."""
        hit = acc >= threshold
        return np.where(hit.any(axis=-1), hit.argmax(axis=-1), never)

    sums = np.zeros((x.shape[0], g))
    np.add.at(sums.T, codes, x.T)
    sizes = np.bincount(codes, minlength=g).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, g, size=(n_boot, g))
    acc = sums[:, draws].sum(axis=2) / sizes[draws].sum(axis=1)  # (n_steps, n_boot)
    boot = first(acc.T)
    alpha = 1.0 - level
    lo_i = np.quantile(boot, alpha / 2.0, method="lower")
    hi_i = np.quantile(boot, 1.0 - alpha / 2.0, method="higher")
    obs = int(first(x.mean(axis=1)))

    def step(i: float) -> int | None:
        return None if int(i) >= never else int(steps[int(i)])

    return step(obs), step(lo_i), step(hi_i)
