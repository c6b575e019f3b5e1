"""Clustered, paired statistics of the verdict (unpact.stats): coverage, error rates, exact paths, inputs."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pytest

from unpact.errors import InputError
from unpact.metrics import wilson_interval
from unpact.stats import (
    Estimate,
    cluster_keys,
    cluster_sign_flip_test,
    clustered_rate,
    effective_n,
    holm,
    icc_anova,
    mcnemar_exact,
    paired_difference,
    wilson_bounds,
)


def _beta_rates(rng: np.random.Generator, mean: float, icc: float, g: int) -> np.ndarray:
    """Per-cluster success probabilities whose 0/1 draws have intra-cluster correlation ``icc``."""
    s = (1.0 - icc) / icc
    return rng.beta(mean * s, (1.0 - mean) * s, size=g)


def _clusters(g: int, m: int) -> list[int]:
    return [int(c) for c in np.repeat(np.arange(g), m)]


# ----- intervals: coverage by simulation ---------------------------------------------------------
def test_clustered_rate_covers_while_naive_wilson_does_not() -> None:
    """Why clustering matters: 4 phrasings per person, ICC 0.6 -> the item-level Wilson interval is far too narrow."""
    rng = np.random.default_rng(20240612)
    g, m, true, reps = 30, 4, 0.3, 300
    cl = _clusters(g, m)
    covered = naive = 0
    for r in range(reps):
        p = _beta_rates(rng, true, 0.6, g)
        x = (rng.random((g, m)) < p[:, None]).ravel()
        e = clustered_rate(x, cl, n_boot=1000, seed=r)
        assert e.method == "cluster_bootstrap_percentile" and e.n == g * m and e.n_clusters == g
        covered += e.lo <= true <= e.hi
        lo, hi = wilson_interval(int(x.sum()), x.size)
        naive += lo <= true <= hi
    cov, cov_naive = covered / reps, naive / reps
    assert 0.88 <= cov <= 0.99, cov
    assert cov_naive < 0.85 and cov - cov_naive > 0.1, (cov, cov_naive)


def test_paired_difference_covers_the_true_difference() -> None:
    rng = np.random.default_rng(7)
    g, m, reps = 30, 4, 300
    cl = _clusters(g, m)
    covered = 0
    for r in range(reps):
        p = _beta_rates(rng, 0.4, 0.5, g)  # the person's recall; the control recovers a quarter as often
        a = (rng.random((g, m)) < p[:, None]).ravel()
        b = (rng.random((g, m)) < 0.25 * p[:, None]).ravel()
        e = paired_difference(a, b, cl, n_boot=1000, seed=r)
        covered += e.lo <= 0.3 <= e.hi  # E[p] - E[0.25 p] = 0.75 * 0.4
    assert 0.88 <= covered / reps <= 0.99, covered / reps


def test_paired_bootstrap_keeps_pairs_together() -> None:
    """a and b strongly positively correlated: the paired interval is narrower than one ignoring the pairing."""
    rng = np.random.default_rng(1)
    g, m = 40, 3
    p = _beta_rates(rng, 0.5, 0.6, g)
    a = (rng.random((g, m)) < p[:, None]).ravel().astype(float)
    b = a.copy()
    flip = rng.random(a.size) < 0.1
    b[flip] = 1 - b[flip]
    e = paired_difference(a, b, _clusters(g, m), seed=3)
    ra, rb = clustered_rate(a, _clusters(g, m), seed=3), clustered_rate(b, _clusters(g, m), seed=3)
    assert e.value == pytest.approx(a.mean() - b.mean())
    assert e.width < 0.5 * math.hypot(ra.width, rb.width)


# ----- intervals: degenerate cases ---------------------------------------------------------------
def test_clustered_rate_degenerate_cases() -> None:
    empty = clustered_rate([], [])
    assert math.isnan(empty.value) and math.isnan(empty.lo) and empty.n == 0 and empty.method == "empty"

    # an all-zero control on 10 items (5 persons x 2 phrasings) does not claim certainty
    zero = clustered_rate([0] * 10, list("aabbccddee"))
    assert zero.method == "wilson_effective_n" and zero.value == 0.0 and zero.lo == 0.0
    assert zero.effective_n == pytest.approx(5.0)  # the ICC cannot be estimated: taken as 1
    assert zero.hi == pytest.approx(wilson_interval(0, 5)[1], rel=1e-4) and zero.hi > 0.4  # z = 1.95996 vs 1.96

    indep = clustered_rate([False] * 10, [str(i) for i in range(10)])
    assert indep.effective_n == 10.0 and indep.hi == pytest.approx(wilson_interval(0, 10)[1], rel=1e-4)

    one = clustered_rate([True] * 8, list("aabbccdd"))
    assert (
        one.value == 1.0
        and one.hi == 1.0
        and one.lo == pytest.approx(wilson_interval(4, 4)[0], rel=1e-4)
        and one.lo < 0.6
    )

    single = clustered_rate([1, 0, 1, 1], ["p"] * 4)  # one person: nothing to resample
    assert single.method == "wilson_effective_n" and single.n_clusters == 1 and single.effective_n == 1.0
    assert single.lo < 0.2 and single.hi > 0.95


def test_paired_difference_degenerate_cases() -> None:
    assert paired_difference([], [], []).method == "empty"
    none = paired_difference([0] * 10, [0] * 10, list("aabbccddee"))
    assert none.method == "newcombe_effective_n" and none.value == 0.0
    assert none.lo < -0.3 and none.hi > 0.3
    full = paired_difference([1] * 10, [0] * 10, list("aabbccddee"))
    assert full.value == 1.0 and full.hi == 1.0 and 0.0 < full.lo < 0.6


def test_estimates_are_deterministic_and_json_ready() -> None:
    rng = np.random.default_rng(0)
    x = rng.random(60) < 0.4
    cl = _clusters(20, 3)
    e1, e2 = clustered_rate(x, cl, seed=5), clustered_rate(x, cl, seed=5)
    assert e1 == e2
    assert clustered_rate(x, cl, seed=6).value == e1.value
    y = rng.random(60) < 0.2
    d = paired_difference(x, y, cl, seed=5)
    assert d == paired_difference(x, y, cl, seed=5)
    assert paired_difference(x, y, cl, seed=6).value == d.value
    for e in (e1, d, clustered_rate([], [])):
        back = Estimate.from_dict(json.loads(json.dumps(e.to_dict())))
        assert back.to_dict() == e.to_dict()
    assert clustered_rate([], []).to_dict()["value"] is None


# ----- sign-flip test ----------------------------------------------------------------------------
def _brute_force_sign_flip(a: Sequence[float], b: Sequence[float], clusters: Sequence[str], alternative: str) -> float:
    keys = sorted(set(clusters))
    s = [sum(ai - bi for ai, bi, c in zip(a, b, clusters) if c == k) for k in keys]
    t = sum(s)
    stats = [sum(e * v for e, v in zip(signs, s)) for signs in itertools.product((1, -1), repeat=len(s))]
    if alternative == "greater":
        return sum(x >= t - 1e-12 for x in stats) / len(stats)
    return sum(abs(x) >= abs(t) - 1e-12 for x in stats) / len(stats)


@pytest.mark.parametrize("alternative", ["greater", "two-sided"])
def test_sign_flip_exact_path_equals_brute_force(alternative: Literal["greater", "two-sided"]) -> None:
    a = [1, 1, 0, 1, 1, 0, 1, 0, 1, 1]
    b = [0, 0, 0, 1, 0, 1, 0, 0, 0, 1]
    cl = ["p", "p", "p", "q", "q", "r", "s", "s", "t", "t"]
    p = cluster_sign_flip_test(a, b, cl, alternative=alternative)  # 2**5 <= 5000: enumerated
    assert p == pytest.approx(_brute_force_sign_flip(a, b, cl, alternative))
    # float outcomes (e.g. ROUGE) and clusters with zero difference
    rng = np.random.default_rng(2)
    af, bf = rng.random(9).round(2), rng.random(9).round(2)
    clf = list("aaabbcdde")
    pf = cluster_sign_flip_test(af, bf, clf, alternative=alternative)
    assert pf == pytest.approx(_brute_force_sign_flip(list(af), list(bf), clf, alternative))


def test_sign_flip_monte_carlo_matches_exact_and_uses_plus_one() -> None:
    # 12 persons, every one with a non-zero summed difference (clusters without one are dropped first)
    pairs = {1: [(1, 0), (0, 0)], 2: [(1, 0), (1, 0)], -1: [(0, 1), (1, 1)]}
    a, b = [], []
    for d in [1, 1, -1, 1, 2, 1, -1, 1, 1, 2, 1, -1]:
        for ai, bi in pairs[d]:
            a.append(ai)
            b.append(bi)
    cl = _clusters(12, 2)
    exact = cluster_sign_flip_test(a, b, cl, n_perm=5000)  # 2**12 = 4096 <= 5000
    mc = cluster_sign_flip_test(a, b, cl, n_perm=4000, seed=1)
    assert mc == pytest.approx(exact, abs=0.03)
    assert mc == cluster_sign_flip_test(a, b, cl, n_perm=4000, seed=1)  # deterministic per seed
    assert (mc * 4001) == pytest.approx(round(mc * 4001))  # (1 + count) / (1 + n_perm)
    # a huge effect on many clusters: the smallest Monte Carlo p-value is 1 / (1 + n_perm), never 0
    big = cluster_sign_flip_test([1] * 40, [0] * 40, _clusters(40, 1), n_perm=999)
    assert big == pytest.approx(1 / 1000)


def test_sign_flip_trivial_cases() -> None:
    assert math.isnan(cluster_sign_flip_test([], [], []))
    assert cluster_sign_flip_test([1, 0, 1], [1, 0, 1], list("abc")) == 1.0
    assert cluster_sign_flip_test([1, 0, 1], [1, 0, 1], list("abc"), alternative="two-sided") == 1.0
    # a single person: at best p = 1/2, however many items
    assert cluster_sign_flip_test([1] * 20, [0] * 20, ["p"] * 20) == 0.5


def test_sign_flip_type_one_error_and_power() -> None:
    """Under H0 (whole-person swaps): rejection near alpha; item-level McNemar is fooled by the clustering."""
    rng = np.random.default_rng(11)
    g, m, reps, alpha = 20, 5, 400, 0.05
    cl = _clusters(g, m)
    rej = rej_mcnemar = 0
    pvals = []
    for r in range(reps):
        p = _beta_rates(rng, 0.4, 0.3, g)
        luck = rng.choice([-0.3, 0.3], size=g)  # per person, one model happens to do better: symmetric under H0
        a = (rng.random((g, m)) < np.clip(p + luck, 0, 1)[:, None]).ravel()
        b = (rng.random((g, m)) < np.clip(p - luck, 0, 1)[:, None]).ravel()
        pv = cluster_sign_flip_test(a, b, cl, n_perm=499, seed=r)
        pvals.append(pv)
        rej += pv <= alpha
        rej_mcnemar += mcnemar_exact(a, b) <= alpha
    assert 0.01 <= rej / reps <= 0.085, rej / reps
    assert 0.4 <= float(np.mean(np.asarray(pvals) <= 0.5)) <= 0.6  # roughly uniform in the middle too
    assert rej_mcnemar / reps > 2 * alpha, rej_mcnemar / reps

    power = 0
    for r in range(100):
        p = _beta_rates(rng, 0.4, 0.3, g)
        a = (rng.random((g, m)) < p[:, None]).ravel()
        b = (rng.random((g, m)) < 0.3 * p[:, None]).ravel()
        power += cluster_sign_flip_test(a, b, cl, n_perm=499, seed=r) <= alpha
    assert power >= 90, power


# ----- McNemar -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n10", "n01", "n11", "n00"), [(5, 1, 3, 4), (0, 4, 2, 2), (7, 7, 0, 1), (12, 3, 10, 30), (1, 0, 0, 0)]
)
@pytest.mark.parametrize("alternative", ["greater", "two-sided"])
def test_mcnemar_exact_matches_scipy(
    n10: int, n01: int, n11: int, n00: int, alternative: Literal["greater", "two-sided"]
) -> None:
    from scipy.stats import binomtest

    a = [1] * n10 + [0] * n01 + [1] * n11 + [0] * n00
    b = [0] * n10 + [1] * n01 + [1] * n11 + [0] * n00
    expected = binomtest(n10, n10 + n01, 0.5, alternative=alternative).pvalue
    assert mcnemar_exact(a, b, alternative=alternative) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_trivial_and_bad_input() -> None:
    assert mcnemar_exact([1, 0], [1, 0]) == 1.0
    assert math.isnan(mcnemar_exact([], []))
    assert mcnemar_exact([True, True], [False, False]) == 0.25
    with pytest.raises(InputError, match="binary"):
        mcnemar_exact([0.5, 1], [0, 1])


# ----- Holm --------------------------------------------------------------------------------------
def test_holm_hand_worked_example() -> None:
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert list(adj) == ["a", "b", "c"]
    assert adj == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})


def test_holm_nan_monotone_and_cap() -> None:
    adj = holm({"a": 0.01, "x": float("nan"), "b": 0.04, "c": 0.03})
    assert math.isnan(adj["x"])
    assert [adj[k] for k in "abc"] == pytest.approx([0.03, 0.06, 0.06])  # nan not in the family: m = 3
    assert holm({"a": 0.6, "b": 0.4}) == pytest.approx({"a": 0.8, "b": 0.8})  # monotone: 0.6 * 1 lifted to 0.8
    assert holm({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}  # capped at 1
    assert holm({}) == {}
    assert math.isnan(holm({"a": float("nan")})["a"])
    ps = dict(zip("pqrstu", [0.2, 0.001, 0.05, 0.049, 0.9, 0.01]))
    adj = holm(ps)
    order = sorted(ps, key=ps.__getitem__)
    assert all(adj[u] <= adj[v] for u, v in zip(order, order[1:]))
    assert all(adj[k] >= ps[k] for k in ps)


# ----- effective n -------------------------------------------------------------------------------
def test_effective_n() -> None:
    rng = np.random.default_rng(0)
    x = rng.random(50) < 0.3
    assert effective_n(x, list(range(50))) == 50.0  # one item per cluster
    # perfectly correlated clusters: every item of a person has the person's outcome
    g, m = 12, 5
    per_person = np.array([0, 1] * (g // 2))
    xc = np.repeat(per_person, m)
    assert icc_anova(xc, _clusters(g, m)) == pytest.approx(1.0)
    assert effective_n(xc, _clusters(g, m)) == pytest.approx(g)
    # unequal sizes, perfectly correlated: Kish's N**2 / sum(m_g**2), at most the number of clusters
    sizes = [1, 2, 3, 6]
    xu = np.repeat([1, 0, 1, 0], sizes)
    cu = [int(c) for c in np.repeat(np.arange(4), sizes)]
    assert effective_n(xu, cu) == pytest.approx(12**2 / sum(s * s for s in sizes))
    # independent items in clusters: ICC near 0, effective n near n
    xi = rng.random(400) < 0.5
    assert effective_n(xi, _clusters(100, 4)) > 0.85 * 400
    assert effective_n([], []) == 0.0
    assert effective_n([1, 1, 1, 1], list("aabb")) == pytest.approx(2.0)  # no variation: ICC taken as 1
    # n / design effect with the ANOVA ICC
    xs = np.array([1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0])
    cs = _clusters(4, 3)
    icc = icc_anova(xs, cs)
    assert 0.0 <= icc <= 1.0
    assert effective_n(xs, cs) == pytest.approx(12 / (1 + 2 * icc))


def test_wilson_bounds_matches_metrics() -> None:
    for k, n in [(0, 10), (3, 10), (10, 10), (7, 31)]:
        assert wilson_bounds(k / n, n) == pytest.approx(wilson_interval(k, n))
    assert wilson_bounds(0.5, 0) == (0.0, 1.0)


def test_cluster_keys() -> None:
    from unpact.data import Example

    ex = [
        Example("1", "Where was Ann born?", "Oslo", subject="Ann"),
        Example("2", "What does Ann do?", "Baker", subject="Ann"),
        Example("3", "Where is it?", "Rome"),
    ]
    assert cluster_keys(ex) == ["subject:Ann", "subject:Ann", "id:3"]


# ----- inputs ------------------------------------------------------------------------------------
def test_input_errors() -> None:
    with pytest.raises(InputError, match="clusters has 2 keys but there are 3 items") as info:
        clustered_rate([1, 0, 1], ["a", "b"])
    assert info.value.source == "clustered_rate" and info.value.fix
    with pytest.raises(InputError, match="must be paired") as info:
        paired_difference([1, 0], [1], ["a", "b"])
    assert info.value.source == "paired_difference" and info.value.fix
    with pytest.raises(InputError, match="None"):
        cluster_sign_flip_test([1, 0], [0, 0], ["a", None])
    with pytest.raises(InputError, match="1-D"):
        clustered_rate([[1, 0], [0, 1]], list("abcd"))
    with pytest.raises(InputError, match="finite"):
        clustered_rate([1.0, float("nan")], ["a", "b"])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        clustered_rate([2, 0], ["a", "b"])
    with pytest.raises(InputError, match="level"):
        clustered_rate([1, 0], ["a", "b"], level=95)
    with pytest.raises(InputError, match="n_boot"):
        paired_difference([1, 0], [0, 0], ["a", "b"], n_boot=0)
    with pytest.raises(InputError, match="seed"):
        clustered_rate([1, 0], ["a", "b"], seed=-1)
    with pytest.raises(InputError, match="alternative"):
        cluster_sign_flip_test([1], [0], ["a"], alternative="less")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="n_perm"):
        cluster_sign_flip_test([1], [0], ["a"], n_perm=0)
    with pytest.raises(InputError, match="sequence of cluster keys"):
        effective_n([1, 0], "ab")
    with pytest.raises(InputError, match="unhashable"):
        effective_n([1, 0], [["a"], ["b"]])  # type: ignore[list-item]
    with pytest.raises(InputError, match="outside"):
        holm({"a": 1.5})
    with pytest.raises(InputError, match="not a number"):
        holm({"a": "0.1"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):  # InputError is a ValueError
        mcnemar_exact([1, 0, 1], [1, 0])


def test_core_module_does_not_import_scipy() -> None:
    code = "import sys, unpact.stats; raise SystemExit(1 if 'scipy' in sys.modules else 0)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_first_crossing_and_its_cluster_bootstrap_interval():
    from unpact.stats import first_crossing

    steps = [0, 1, 2, 4, 8]
    # every item right from step 2 on: the crossing is certain
    x = np.zeros((5, 12))
    x[2:] = 1
    clusters = [i // 3 for i in range(12)]
    assert first_crossing(x, steps, clusters, 0.5) == (2, 2, 2)
    # nothing ever learned: "never" (None) everywhere
    assert first_crossing(np.zeros((5, 12)), steps, clusters, 0.5) == (None, None, None)
    # half the clusters learn at step 1, the others at step 8: the mean reaches 0.5 at step 1, but a resample
    # with fewer learning clusters does not before step 8, so the interval runs from step 1 to step 8
    y = np.zeros((5, 40))
    fast = [c % 2 == 0 for c in range(20)]
    cl = [i // 2 for i in range(40)]
    for i in range(40):
        y[1 if fast[cl[i]] else 4 :, i] = 1
    step, lo, hi = first_crossing(y, steps, cl, 0.5, seed=3)
    assert (step, lo, hi) == (1, 1, 8)
    # no items, and a wrong shape
    assert first_crossing(np.zeros((5, 0)), steps, [], 0.5) == (None, None, None)
    with pytest.raises(InputError, match="n_steps=5"):
        first_crossing(np.zeros((4, 3)), steps, [0, 1, 2], 0.5)
