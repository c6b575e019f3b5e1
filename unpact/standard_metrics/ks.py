"""The two-sample Kolmogorov-Smirnov test and TOFU's forget quality.

Forget quality (Maini et al. 2024, *TOFU: A Task of Fictitious Unlearning for LLMs*, arXiv:2401.06121)
is the p-value of the two-sample KS test between the per-item truth ratios of the unlearned model on the
forget set and those of the model retrained without it (the retain-only model) on the same items:
``scipy.stats.ks_2samp(unlearned_tr, retain_tr).pvalue`` in both reference implementations
(``locuslab/tofu`` ``aggregate_eval_stat.py::get_forget_quality``; ``locuslab/open-unlearning``
``src/evals/metrics/privacy.py::ks_test``). TOFU's own script feeds it ``1 / R`` and open-unlearning
``R``; the KS statistic and p-value are the same either way (both samples go through one monotone map).

A p-value is not an effect size: with the same two distributions it shrinks as the samples grow, so every
result carries both sample sizes. The test treats items as independent; items about one person are not,
so the p-value is optimistic in the way TOFU's is.

scipy is not a dependency of unpact, so the p-value is computed here, as ``scipy.stats.ks_2samp(...,
alternative="two-sided", method="auto")`` computes it: exactly (the share of the ``C(n_a + n_b, n_a)``
equally likely orderings of the pooled sample whose empirical-CDF gap reaches the observed one; Hodges
1958) when ``n_a * n_b <= 4,000,000``, here in exact integer arithmetic; beyond that scipy's own
``ks_2samp`` when scipy is installed, else the Kolmogorov limit with Stephens' small-sample correction.
``KSResult.method`` says which.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from unpact.errors import InputError
from unpact.standard_metrics._checks import vector

logger = logging.getLogger(__name__)

__all__ = ["KSResult", "ks_2samp", "forget_quality"]

#: Largest ``n_a * n_b`` for which the p-value is counted exactly here (about 0.4 s in the worst case).
EXACT_MAX_CELLS = 4_000_000


@dataclass(frozen=True)
class KSResult:
    """A two-sample Kolmogorov-Smirnov test.

    Attributes:
        statistic: ``D = max_x |F_a(x) - F_b(x)|``, the largest gap between the two empirical CDFs.
        pvalue: Two-sided ``P(D >= observed)`` under H0 (both samples from one continuous distribution).
        n_a: Size of the first sample (the unlearned model's items).
        n_b: Size of the second sample (the reference model's items).
        method: ``"exact"``, ``"scipy"`` (scipy's ``ks_2samp``, large samples) or ``"asymptotic"``.
    """

    statistic: float
    pvalue: float
    n_a: int
    n_b: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KSResult:
        """Inverse of :meth:`to_dict`."""
        return cls(float(d["statistic"]), float(d["pvalue"]), int(d["n_a"]), int(d["n_b"]), str(d["method"]))


def _statistic(a: np.ndarray, b: np.ndarray) -> float:
    """``max |F_a - F_b|`` over the pooled values (ties handled by ``side="right"``, as scipy does)."""
    a, b = np.sort(a), np.sort(b)
    pooled = np.concatenate([a, b])
    gap = np.searchsorted(a, pooled, side="right") / a.size - np.searchsorted(b, pooled, side="right") / b.size
    return float(np.max(np.abs(gap)))


def _inside_paths(n1: int, n2: int, h: int) -> int:
    """Number of lattice paths from ``(0, 0)`` to ``(n1, n2)`` that stay strictly inside ``|i*n2' - j*n1'| < h``.

    ``(i, j)``: ``i`` values of the first sample and ``j`` of the second seen so far; ``n1' = n1 / g``,
    ``n2' = n2 / g`` with ``g = gcd(n1, n2)``, so ``|i*n2' - j*n1'| / lcm`` is the gap ``|i/n1 - j/n2|``. Row
    ``i`` keeps the counts of its inside cells, a contiguous band of ``j``; a cell's count is the one below
    it plus the one to its left, i.e. a cumulative sum over the band (Python integers: no overflow).
    """
    g = math.gcd(n1, n2)
    a, b = n2 // g, n1 // g
    prev = np.zeros(n2 + 1, dtype=object)
    for i in range(n1 + 1):
        lo = max(0, (i * a - h) // b + 1)  # smallest j with i*a - j*b < h
        hi = min(n2, -(-(i * a + h) // b) - 1)  # largest j with j*b - i*a < h
        row = np.zeros(n2 + 1, dtype=object)
        if lo <= hi:
            if i == 0:
                row[lo : hi + 1] = 1  # lo == 0: the first row is reached along j only
            else:
                row[lo : hi + 1] = np.cumsum(prev[lo : hi + 1])
        prev = row
    return int(prev[n2])


def _exact_pvalue(n1: int, n2: int, d: float) -> float:
    """Two-sided exact ``P(D >= d)``, with ``d`` rounded to the lattice as scipy rounds it."""
    lcm = n1 // math.gcd(n1, n2) * n2
    h = round(d * lcm)
    if h == 0:
        return 1.0
    total = math.comb(n1 + n2, n1)
    return float(Fraction(total - _inside_paths(n1, n2, h), total))


def _kolmogorov_pvalue(n1: int, n2: int, d: float) -> float:
    """``Q_KS((sqrt(en) + 0.12 + 0.11 / sqrt(en)) * d)`` with ``en = n1 n2 / (n1 + n2)`` (Stephens 1970)."""
    en = math.sqrt(n1 * n2 / (n1 + n2))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 0.2:
        return 1.0
    total = sum(2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return float(min(1.0, max(0.0, total)))


def ks_2samp(a: ArrayLike, b: ArrayLike) -> KSResult:
    """Two-sided two-sample KS test of ``a`` against ``b`` (the p-value of ``scipy.stats.ks_2samp``).

    Args:
        a: ``(n_a,)`` finite values.
        b: ``(n_b,)`` finite values.

    Returns:
        The :class:`KSResult` (statistic, p-value, both sizes, method).

    Raises:
        InputError: An empty sample or a non-finite value.
    """
    x = vector("a", a, "ks_2samp")
    y = vector("b", b, "ks_2samp")
    n1, n2 = int(x.size), int(y.size)
    d = _statistic(x, y)
    if n1 * n2 <= EXACT_MAX_CELLS:
        return KSResult(d, _exact_pvalue(n1, n2, d), n1, n2, "exact")
    try:
        from scipy import stats
    except ImportError:
        return KSResult(d, _kolmogorov_pvalue(n1, n2, d), n1, n2, "asymptotic")
    return KSResult(d, float(stats.ks_2samp(x, y).pvalue), n1, n2, "scipy")


def forget_quality(unlearned: ArrayLike, reference: ArrayLike) -> KSResult:
    """TOFU's forget quality: the KS test between two models' truth ratios on the forget items.

    ``FQ = p-value of KS(R_unlearned, R_retain_only)``, with ``R`` the per-item truth ratio
    (:func:`unpact.standard_metrics.truth_ratio`). High (near 1): the unlearned model's truth ratios look
    like those of a model that never saw the forget set; low: they are told apart. A high value is the
    absence of evidence of a difference at this ``n``, not evidence of forgetting; compare forget qualities
    only at equal sample sizes.

    Args:
        unlearned: ``(n_a,)`` truth ratios of the audited model on the forget items.
        reference: ``(n_b,)`` truth ratios of the retain-only model on the same items.

    Returns:
        The :class:`KSResult`; ``pvalue`` is the forget quality.

    Raises:
        InputError: Empty or non-finite truth ratios.
    """
    try:
        return ks_2samp(unlearned, reference)
    except InputError as exc:
        raise InputError(f"forget quality: {exc.message}", source="forget_quality", fix=exc.fix) from None
