"""Clustered rates and paired differences with their intervals, and the effective number of items."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from unpact.stats._checks import _check_int, _check_level, _check_seed, _codes, _pair, _vector


# ----- result type -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval and the sample it rests on.

    Attributes:
        value: The estimate (``nan`` when there are no items).
        lo: Lower end of the interval (``nan`` when there are no items).
        hi: Upper end.
        n: Items.
        n_clusters: Distinct clusters (persons) among the items.
        effective_n: Items divided by the design effect (see :func:`effective_n`); ``0.0`` for no items.
        method: How the interval was made: ``"cluster_bootstrap_percentile"``, ``"wilson_effective_n"``,
            ``"newcombe_effective_n"`` or ``"empty"``.
        level: Nominal coverage of the interval (0.95 for a 95% interval).
    """

    value: float
    lo: float
    hi: float
    n: int
    n_clusters: int
    effective_n: float
    method: str
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``nan`` becomes ``None``)."""
        d = asdict(self)
        for key in ("value", "lo", "hi", "effective_n", "level"):
            x = d[key]
            d[key] = None if x is None or x != x else float(x)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Estimate:
        """Inverse of :meth:`to_dict` (``None`` becomes ``nan``)."""
        f = lambda x: float("nan") if x is None else float(x)
        return cls(
            value=f(d["value"]),
            lo=f(d["lo"]),
            hi=f(d["hi"]),
            n=int(d["n"]),
            n_clusters=int(d["n_clusters"]),
            effective_n=f(d["effective_n"]),
            method=str(d["method"]),
            level=f(d.get("level", 0.95)),
        )

    @property
    def width(self) -> float:
        """``hi - lo``."""
        return self.hi - self.lo


# ----- input checking --------------------------------------------------------------------------


def cluster_keys(examples: Iterable[Any], by: Literal["subject", "fact"] = "subject") -> list[str]:
    """Cluster keys for examples: the subject (the person), or one fact (subject + gold answer), else the id.

    An example without a subject becomes a cluster of its own (treated as independent of every other
    item): the only neutral choice, but optimistic if such items in fact share a person. A fact groups
    the phrasings of one question: the same subject and the same gold answer (compared after lower-casing
    and dropping punctuation).

    Args:
        examples: Objects with ``subject``, ``answer`` and ``id`` attributes (:class:`unpact.data.Example`).
        by: ``"subject"`` or ``"fact"``.

    Returns:
        One key per example; subject, fact and id keys never collide (prefixed ``"subject:"``,
        ``"fact:"``, ``"id:"``).
    """
    out = []
    for e in examples:
        subject = getattr(e, "subject", None)
        if subject in (None, ""):
            out.append(f"id:{e.id}")
        elif by == "fact":
            answer = re.sub(r"\W+", " ", str(getattr(e, "answer", "")).lower()).strip()
            out.append(f"fact:{subject}\x00{answer}")
        else:
            out.append(f"subject:{subject}")
    return out


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def wilson_bounds(p: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p`` observed on ``n`` (possibly fractional) trials.

    The same formula as :func:`unpact.metrics.wilson_interval`, for an effective sample size that need
    not be whole. Assumes the ``n`` trials are independent Bernoulli draws with one common rate.

    Args:
        p: Observed proportion, in ``[0, 1]``.
        n: Trials (``> 0``); ``n <= 0`` gives ``(0.0, 1.0)``.
        z: Normal quantile.

    Returns:
        ``(lo, hi)`` in ``[0, 1]``.
    """
    if not n > 0:
        return 0.0, 1.0
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(max(p * (1.0 - p), 0.0) / n + z * z / (4.0 * n * n)) / denom
    lo = 0.0 if p <= 0.0 else max(0.0, centre - half)
    hi = 1.0 if p >= 1.0 else min(1.0, centre + half)
    return lo, hi


def _cluster_sums(
    x: NDArray[np.float64], codes: NDArray[np.int64], g: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    sums = np.bincount(codes, weights=x, minlength=g).astype(np.float64)
    sizes = np.bincount(codes, minlength=g).astype(np.float64)
    return sums, sizes


def icc_anova(x: ArrayLike, clusters: Sequence[Hashable]) -> float:
    """One-way ANOVA estimate of the intra-cluster correlation, clipped to ``[0, 1]``.

    ``ICC = (MSB - MSW) / (MSB + (m0 - 1) * MSW)`` with ``m0 = (N - sum m_g**2 / N) / (G - 1)`` (the
    unbalanced-design cluster size). Assumes a random-intercept model: items in a cluster share a
    cluster effect and are otherwise exchangeable.

    Returns:
        The ICC in ``[0, 1]``; ``nan`` when it cannot be estimated: no items, a single cluster, one item
        per cluster (no within-cluster pairs), or no variation at all.
    """
    where = "icc_anova"
    xv = _vector("x", x, where, unit=False)
    codes, g = _codes(clusters, xv.size, where)
    return _icc(xv, codes, g)


def _icc(x: NDArray[np.float64], codes: NDArray[np.int64], g: int) -> float:
    n = x.size
    if n == 0 or g < 2 or n == g:
        return float("nan")
    sums, sizes = _cluster_sums(x, codes, g)
    means = sums / sizes
    grand = x.mean()
    ssb = float(np.sum(sizes * (means - grand) ** 2))
    ssw = float(np.sum((x - means[codes]) ** 2))
    msb, msw = ssb / (g - 1), ssw / (n - g)
    m0 = (n - float(np.sum(sizes**2)) / n) / (g - 1)
    denom = msb + (m0 - 1.0) * msw
    if not denom > 1e-15:
        return float("nan")
    return float(min(1.0, max(0.0, (msb - msw) / denom)))


def _effective_n(x: NDArray[np.float64], codes: NDArray[np.int64], g: int) -> float:
    n = x.size
    if n == 0:
        return 0.0
    if n == g:
        return float(n)
    sizes = np.bincount(codes, minlength=g).astype(np.float64)
    m_bar = float(np.sum(sizes**2)) / n  # size-weighted mean cluster size (= plain mean for equal sizes)
    icc = _icc(x, codes, g)
    if icc != icc:  # not estimable (a single cluster, or no variation): assume the worst, ICC = 1
        icc = 1.0
    return float(n / (1.0 + (m_bar - 1.0) * icc))


def effective_n(x: ArrayLike, clusters: Sequence[Hashable]) -> float:
    """Items divided by the design effect: how many independent items the clustered sample is worth.

    ``design effect = 1 + (m_bar - 1) * ICC`` with the ANOVA ICC (:func:`icc_anova`, clipped to
    ``[0, 1]``) and ``m_bar = sum(m_g**2) / N``, the size-weighted mean cluster size (the plain mean
    for equal cluster sizes; for unequal ones it is the size that makes ``ICC = 1`` give Kish's
    ``N**2 / sum(m_g**2)``, the right count for perfectly correlated clusters).

    Assumes a random-intercept model (items of one cluster equally correlated). Where the ICC cannot
    be estimated but clusters hold several items (all outcomes equal, or a single cluster), it is
    taken as 1 (conservative: the data cannot rule out perfect within-cluster correlation), giving
    about the number of clusters.

    Args:
        x: ``(n,)`` outcomes.
        clusters: ``n`` cluster keys.

    Returns:
        A number in ``[N**2 / sum(m_g**2), N]``: ``N`` with one item per cluster, about the number
        of clusters for perfectly correlated clusters; ``0.0`` for no items.
    """
    where = "effective_n"
    xv = _vector("x", x, where, unit=False)
    codes, g = _codes(clusters, xv.size, where)
    return _effective_n(xv, codes, g)


def _bootstrap_means(
    x: NDArray[np.float64], codes: NDArray[np.int64], g: int, n_boot: int, seed: int
) -> NDArray[np.float64]:
    """Item-level means of ``n_boot`` cluster-bootstrap resamples (``g`` clusters drawn with replacement)."""
    sums, sizes = _cluster_sums(x, codes, g)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, 2_000_000 // max(g, 1))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        draws = rng.integers(0, g, size=(k, g))
        out[start : start + k] = sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    return out


def _percentile(boot: NDArray[np.float64], level: float) -> tuple[float, float]:
    alpha = 1.0 - level
    lo, hi = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


# ----- estimates -------------------------------------------------------------------------------
def clustered_rate(
    x: ArrayLike,
    clusters: Sequence[Hashable],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Estimate:
    """A rate (mean of 0/1 outcomes) with a cluster-bootstrap percentile interval.

    The rate is the item-level mean. The interval resamples whole clusters with replacement (as many
    as there are) ``n_boot`` times and takes the percentiles of the resampled item-level means.
    Assumes clusters are independent of each other (items within a cluster may be correlated in any
    way) and that there are enough clusters for the bootstrap distribution to mimic the sampling
    distribution: with fewer than about 20 clusters the percentile interval runs somewhat narrow.

    Fallback (``method="wilson_effective_n"``): when the bootstrap distribution has no spread (every
    item 0, every item 1, all cluster means equal) or there is a single cluster, a percentile interval
    would be ``[value, value]`` and claim certainty. The Wilson interval of the rate on the effective
    sample size (:func:`effective_n`) is used instead; for a constant outcome the ICC is taken as 1,
    so an all-zero control on 10 items of 5 persons gets the Wilson interval of 0 on 5 trials.

    Args:
        x: ``(n,)`` outcomes, booleans or numbers in ``[0, 1]``.
        clusters: ``n`` cluster keys (the person; see :func:`cluster_keys`), hashable, not ``None``.
        level: Nominal coverage.
        n_boot: Bootstrap resamples.
        seed: Random seed (same seed and input, same interval).

    Returns:
        The :class:`Estimate`; for no items ``value``, ``lo`` and ``hi`` are ``nan`` (``method="empty"``).

    Raises:
        InputError: Unequal lengths, values outside ``[0, 1]``, ``None`` cluster keys, bad settings.
    """
    where = "clustered_rate"
    level = _check_level(level, where)
    n_boot = _check_int("n_boot", n_boot, 1, where)
    seed = _check_seed(seed, where)
    xv = _vector("x", x, where, unit=True)
    codes, g = _codes(clusters, xv.size, where)
    n = int(xv.size)
    if n == 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, 0, 0, 0.0, "empty", level)
    value = float(xv.mean())
    n_eff = _effective_n(xv, codes, g)
    if g >= 2:
        lo, hi = _percentile(_bootstrap_means(xv, codes, g, n_boot, seed), level)
        if hi - lo > 1e-12:
            lo, hi = min(lo, value), max(hi, value)
            return Estimate(value, lo, hi, n, g, n_eff, "cluster_bootstrap_percentile", level)
    lo, hi = wilson_bounds(value, n_eff, _z(level))
    return Estimate(value, lo, hi, n, g, n_eff, "wilson_effective_n", level)


def _newcombe_paired(a: NDArray[np.float64], b: NDArray[np.float64], n_eff: float, z: float) -> tuple[float, float]:
    """Newcombe's (1998, method 10) score interval for a paired difference of proportions on ``n_eff`` pairs."""
    p1, p2 = float(a.mean()), float(b.mean())
    l1, u1 = wilson_bounds(p1, n_eff, z)
    l2, u2 = wilson_bounds(p2, n_eff, z)
    sa, sb = float(a.std()), float(b.std())
    phi = 0.0 if sa == 0.0 or sb == 0.0 else float(np.mean((a - p1) * (b - p2)) / (sa * sb))
    d = p1 - p2
    delta = math.sqrt(max((p1 - l1) ** 2 - 2.0 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    eps = math.sqrt(max((u1 - p1) ** 2 - 2.0 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return max(-1.0, d - delta), min(1.0, d + eps)


def paired_difference(
    a: ArrayLike,
    b: ArrayLike,
    clusters: Sequence[Hashable],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Estimate:
    """``mean(a - b)`` with a paired cluster-bootstrap percentile interval.

    Each resample draws whole clusters with replacement and keeps each item's pair ``(a_i, b_i)``
    together, so the correlation between the two models on an item and between items of one person
    both enter the interval. Assumes clusters are independent of each other and numerous enough for
    the bootstrap (see :func:`clustered_rate`).

    Fallback (``method="newcombe_effective_n"``): when the differences have no bootstrap spread (e.g.
    neither model ever recovers anything, or every item differs by the same amount) or there is a
    single cluster, Newcombe's paired score interval (Newcombe 1998, method 10: Wilson intervals of
    both rates combined with their correlation) on the effective sample size of the differences
    (:func:`effective_n`, ICC taken as 1 when it cannot be estimated).

    Args:
        a: ``(n,)`` outcomes of the audited model, booleans or numbers in ``[0, 1]``.
        b: ``(n,)`` outcomes of the control model on the same items, in the same order.
        clusters: ``n`` cluster keys (the person).
        level: Nominal coverage.
        n_boot: Bootstrap resamples.
        seed: Random seed.

    Returns:
        The :class:`Estimate` of the difference (``effective_n`` of the differences); ``nan`` for no items.

    Raises:
        InputError: Unequal lengths, values outside ``[0, 1]``, ``None`` cluster keys, bad settings.
    """
    where = "paired_difference"
    level = _check_level(level, where)
    n_boot = _check_int("n_boot", n_boot, 1, where)
    seed = _check_seed(seed, where)
    av, bv = _pair(a, b, where, unit=True)
    codes, g = _codes(clusters, av.size, where)
    n = int(av.size)
    if n == 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, 0, 0, 0.0, "empty", level)
    d = av - bv
    value = float(d.mean())
    n_eff = _effective_n(d, codes, g)
    if g >= 2:
        lo, hi = _percentile(_bootstrap_means(d, codes, g, n_boot, seed), level)
        if hi - lo > 1e-12:
            lo, hi = min(lo, value), max(hi, value)
            return Estimate(value, lo, hi, n, g, n_eff, "cluster_bootstrap_percentile", level)
    lo, hi = _newcombe_paired(av, bv, n_eff, _z(level))
    return Estimate(value, min(lo, value), max(hi, value), n, g, n_eff, "newcombe_effective_n", level)
