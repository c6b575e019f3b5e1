"""Paired tests: the cluster sign-flip permutation test, exact McNemar, and Holm's correction."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from unpact.errors import InputError
from unpact.stats._checks import Alternative, _check_alternative, _check_int, _check_seed, _codes, _pair

_MIN_EXACT_TOL = 1e-9  # relative tolerance when comparing permuted statistics with the observed one


# ----- tests -----------------------------------------------------------------------------------
def cluster_sign_flip_test(
    a: ArrayLike,
    b: ArrayLike,
    clusters: Sequence[Hashable],
    *,
    alternative: Alternative = "greater",
    n_perm: int = 5000,
    seed: int = 0,
) -> float:
    """Paired permutation test of ``a`` against ``b`` that flips whole clusters.

    Statistic: ``T = sum_i (a_i - b_i) = sum_g s_g``, the clusters' summed differences. Under H0 the
    two outcomes of each item are exchangeable (the unlearned model recovers an item no more readily
    than the control), and the swaps are made for all items of a cluster at once, so each ``s_g`` is
    symmetric about 0 given its magnitude: the null distribution is that of ``sum_g e_g * s_g`` with
    independent random signs ``e_g``. Assumes clusters are independent of each other; items within a
    cluster may be correlated in any way.

    Clusters whose summed difference is 0 do not move the statistic and are set aside. With
    ``2**k <= n_perm`` for the ``k`` remaining clusters all sign vectors are enumerated and the p-value
    is exact (the share of them with a statistic at least as extreme, the observed one included).
    Otherwise ``n_perm`` random sign vectors give ``(1 + count) / (1 + n_perm)``, a valid p-value. The
    smallest attainable p-value is ``2**-k`` (``0.5`` for a single person, however many items).

    Args:
        a: ``(n,)`` outcomes of the audited model.
        b: ``(n,)`` outcomes of the control model on the same items.
        clusters: ``n`` cluster keys (the person).
        alternative: ``"greater"`` (H1: ``a`` above ``b``) or ``"two-sided"`` (``|T|`` as the statistic).
        n_perm: Random sign vectors (also the enumeration threshold).
        seed: Random seed.

    Returns:
        The p-value in ``(0, 1]``; ``nan`` when there are no items (no test). ``1.0`` when no item differs.

    Raises:
        InputError: Unequal lengths, non-finite values, ``None`` cluster keys, bad settings.
    """
    where = "cluster_sign_flip_test"
    alternative = _check_alternative(alternative, where)
    n_perm = _check_int("n_perm", n_perm, 1, where)
    seed = _check_seed(seed, where)
    av, bv = _pair(a, b, where, unit=False)
    codes, g = _codes(clusters, av.size, where)
    if av.size == 0:
        return float("nan")
    s = np.bincount(codes, weights=av - bv, minlength=g)
    s = s[s != 0.0]  # clusters without a difference do not move the statistic
    if s.size == 0:
        return 1.0
    t_obs = float(s.sum())
    tol = _MIN_EXACT_TOL * max(1.0, float(np.abs(s).sum()))

    def count_extreme(signs: NDArray[np.floating[Any]]) -> int:
        t = signs @ s
        if alternative == "greater":
            return int(np.count_nonzero(t >= t_obs - tol))
        return int(np.count_nonzero(np.abs(t) >= abs(t_obs) - tol))

    k = s.size
    if k < 63 and 2**k <= n_perm:
        bits = (np.arange(2**k, dtype=np.int64)[:, None] >> np.arange(k, dtype=np.int64)) & 1
        return count_extreme(1.0 - 2.0 * bits) / 2**k
    rng = np.random.default_rng(seed)
    count = 0
    chunk = max(1, 2_000_000 // k)
    for start in range(0, n_perm, chunk):
        m = min(chunk, n_perm - start)
        count += count_extreme(1.0 - 2.0 * rng.integers(0, 2, size=(m, k)))
    return (1 + count) / (1 + n_perm)


def _binom_sf_half(k: int, n: int) -> Fraction:
    """``P(X >= k)`` for ``X ~ Binomial(n, 1/2)``, exactly."""
    if k <= 0:
        return Fraction(1)
    if k > n:
        return Fraction(0)
    return Fraction(sum(math.comb(n, i) for i in range(k, n + 1)), 2**n)


def mcnemar_exact(a: ArrayLike, b: ArrayLike, *, alternative: Alternative = "greater") -> float:
    """Exact McNemar test: a binomial test on the discordant pairs, at the item level.

    With ``n10`` items where only ``a`` succeeds and ``n01`` where only ``b`` does, under H0 ``n10`` is
    ``Binomial(n10 + n01, 1/2)``. Assumes the items are independent: it **ignores clustering**, so
    with several items per person its p-values are too small. Report it as exploratory; the verdict
    uses :func:`cluster_sign_flip_test`.

    Args:
        a: ``(n,)`` binary outcomes of the audited model.
        b: ``(n,)`` binary outcomes of the control model on the same items.
        alternative: ``"greater"`` (``P(X >= n10)``) or ``"two-sided"`` (twice the smaller tail, capped
            at 1; the same as the likelihood-ordered two-sided test for a fair coin).

    Returns:
        The p-value; ``1.0`` with no discordant pairs, ``nan`` with no items.

    Raises:
        InputError: Unequal lengths or outcomes other than 0/1.
    """
    where = "mcnemar_exact"
    alternative = _check_alternative(alternative, where)
    av, bv = _pair(a, b, where, unit=True)
    for name, v in (("a", av), ("b", bv)):
        if np.any((v != 0.0) & (v != 1.0)):
            bad = int(np.flatnonzero((v != 0.0) & (v != 1.0))[0])
            raise InputError(
                f"{name}[{bad}] is {v[bad]}: McNemar's test needs binary outcomes",
                source=where,
                fix="pass 0/1 (or True/False) outcomes",
            )
    if av.size == 0:
        return float("nan")
    n10 = int(np.count_nonzero((av == 1.0) & (bv == 0.0)))
    n01 = int(np.count_nonzero((av == 0.0) & (bv == 1.0)))
    nd = n10 + n01
    if nd == 0:
        return 1.0
    upper = _binom_sf_half(n10, nd)
    if alternative == "greater":
        return float(upper)
    lower = 1 - _binom_sf_half(n10 + 1, nd)  # P(X <= n10)
    return float(min(Fraction(1), 2 * min(upper, lower)))


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down; controls the family-wise error rate).

    The ``i``-th smallest of ``m`` p-values is multiplied by ``m - i + 1``; the adjusted values are
    then made monotone (each at least the one before it) and capped at 1. Assumes nothing about the
    dependence between the tests. ``nan`` p-values (tests that could not be run) stay ``nan`` and do
    not count in the family size ``m``.

    Args:
        pvalues: Test name -> p-value in ``[0, 1]`` or ``nan``.

    Returns:
        Test name -> adjusted p-value, in the input's order.

    Raises:
        InputError: A p-value outside ``[0, 1]`` or not a number.
    """
    where = "holm"
    if not isinstance(pvalues, Mapping):
        raise InputError(
            f"pvalues must be a mapping of test name -> p-value, got {type(pvalues).__name__}",
            source=where,
            fix="pass a dict such as {'attack_a': 0.01, 'attack_b': 0.2}",
        )
    vals: dict[str, float] = {}
    for name, p in pvalues.items():
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
            raise InputError(f"p-value of {name!r} is {type(p).__name__} {p!r}, not a number", source=where)
        pf = float(p)
        if pf == pf and not 0.0 <= pf <= 1.0:
            raise InputError(f"p-value of {name!r} is {pf}, outside [0, 1]", source=where)
        vals[name] = pf
    valid = sorted((p, i) for i, p in enumerate(vals.values()) if p == p)
    m = len(valid)
    adjusted = [float("nan")] * len(vals)
    running = 0.0
    for rank, (p, i) in enumerate(valid):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return dict(zip(vals, adjusted))
