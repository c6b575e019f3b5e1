"""Scoring with controls, the verdict rule and the destructive rate, on known inputs (quality: test_quality.py)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from unpact import scoring as sc
from unpact.data import Example
from unpact.destructive import attention_shift, destructive_rate
from unpact.errors import InputError
from unpact.verdict import VerdictRule, decide


def rec(model, item, attack, hit, split="forget", lp=0.0, perm=False):
    return sc.ItemRecord(
        model,
        item,
        attack,
        split,
        "p",
        "g",
        (),
        ("g" if hit else "x",),
        hit,
        hit,
        1.0 if hit else 0.0,
        hit,
        lp,
        "h",
        perm,
    )


def test_record_roundtrip():
    r = rec("m", "1", "plain", True)
    assert sc.ItemRecord.from_dict(r.to_dict()) == r


def test_permuted_golds_same_attribute_and_different_answer():
    exs = [
        Example(str(i), "q", a, meta={"attribute": att})
        for i, (a, att) in enumerate(
            [("Oslo", "city"), ("Oslo", "city"), ("Rome", "city"), ("baker", "job"), ("smith", "job")]
        )
    ]
    p = sc.permuted_golds(exs)
    assert p == {"0": "Rome", "1": "Rome", "2": "Oslo", "3": "smith", "4": "baker"}


def _records(n_forget=20, recovered=10, ctl_hits=1):
    f = [str(i) for i in range(n_forget)]
    r = [f"r{i}" for i in range(10)]
    out = []
    for i in f:
        out.append(rec("base", i, "plain", True))
        out.append(rec("base", i, "restate", True))
        out.append(rec("u", i, "plain", False, lp=-5.0))
        out.append(rec("u", i, "restate", int(i) < recovered, lp=-3.0))
        out.append(rec("ro", i, "plain", False))
        out.append(rec("ro", i, "restate", int(i) < ctl_hits))
    for i in r:
        for m in ("base", "u", "ro"):
            out.append(rec(m, i, "plain", True, split="retain"))
            out.append(rec(m, i, "restate", True, split="retain"))
    return out, f, r


def test_recovery_summary_numbers():
    recs, f, r = _records()
    s = sc.recovery_summary(recs, "u", base="base", attacks=["restate"], forget_ids=f, retain_ids=r, control_model="ro")
    e = s.recovery["restate"]
    assert s.forgotten.rate == 1.0 and s.n_known == 20
    assert e.rate.k == 10 and e.rate.n == 20 and e.control.k == 1
    assert e.excess == pytest.approx(0.45)
    assert e.logprob_gain == pytest.approx(2.0)
    assert e.base_kept.rate == 1.0 and e.retain_kept.rate == 1.0
    assert 0 < e.rate.lo < 0.5 < e.rate.hi < 1
    assert s.best_attack() == ("restate", e)
    base = sc.recovery_summary(recs, "base", base="base", attacks=["restate"], forget_ids=f, retain_ids=r)
    v = decide(s, base)
    assert v.label == "suppression" and v.evidence_attack in ("restate", "any")


def test_recovery_intervals_are_clustered_when_clusters_are_given():
    # items 0-9 recovered, 10-19 not; in pairs of one fact each: the clustered interval counts 10 facts,
    # not 20 independent items, so it is wider than Wilson's
    recs, f, r = _records()
    clusters = {i: f"fact{int(i) // 2}" for i in f} | {i: i for i in r}
    kw = dict(base="base", attacks=["restate"], forget_ids=f, retain_ids=r, control_model="ro")
    plain = sc.recovery_summary(recs, "u", **kw).recovery["restate"].rate
    clustered = sc.recovery_summary(recs, "u", clusters=clusters, **kw).recovery["restate"].rate
    assert (clustered.k, clustered.n, clustered.rate) == (plain.k, plain.n, plain.rate)
    assert plain.method == "wilson" and clustered.method != "wilson"
    assert clustered.hi - clustered.lo > plain.hi - plain.lo
    assert sc.Rate.from_dict(clustered.to_dict()) == clustered
    old = {k: v for k, v in plain.to_dict().items() if k != "method"}  # a summary written before clustering
    assert sc.Rate.from_dict(old).method == "wilson" and sc.Rate.from_dict(old).k == plain.k
    with pytest.raises(InputError, match="cluster keys"):
        sc.rate([True, False], ["a"])


def test_verdict_branches():
    recs, f, r = _records(recovered=1, ctl_hits=1)
    kw = dict(base="base", attacks=["restate"], forget_ids=f, retain_ids=r)
    base = sc.recovery_summary(recs, "base", **kw)
    s = sc.recovery_summary(recs, "u", control_model="ro", **kw)
    assert decide(s, base).label == "removal"
    # the same numbers with a collapsed retain accuracy -> destruction
    s2 = dataclasses.replace(s, retain_acc=dataclasses.replace(s.retain_acc, rate=0.2))
    d = decide(s2, base)
    assert d.label == "destruction" and d.destructive and d.retain_drop == pytest.approx(0.8)
    # the base model itself as "unlearned": nothing forgotten
    assert decide(sc.recovery_summary(recs, "base", **kw), base).label == "not_unlearned"
    # a recovery equal to the control is not suppression, however high
    recs2, f, r = _records(recovered=15, ctl_hits=15)
    s3 = sc.recovery_summary(recs2, "u", control_model="ro", **{**kw, "forget_ids": f, "retain_ids": r})
    assert decide(s3, base).label == "removal"
    assert decide(s3, base, VerdictRule(min_forgotten=1.01)).label == "not_unlearned"


def test_verdict_needs_non_overlapping_intervals():
    # 10/20 recovered (Wilson lo ~0.30) vs control 3/20 (rate 0.15, Wilson hi ~0.36): the recovery's lower
    # bound beats the control's point estimate and the excess (0.35) clears the margin, but the intervals
    # overlap, so the conservative rule must not call suppression.
    recs, f, r = _records(recovered=10, ctl_hits=3)
    kw = dict(base="base", attacks=["restate"], forget_ids=f, retain_ids=r)
    base = sc.recovery_summary(recs, "base", **kw)
    s = sc.recovery_summary(recs, "u", control_model="ro", **kw)
    e = s.recovery["restate"]
    assert e.control.rate < e.rate.lo < e.control.hi
    assert e.rate.rate - e.control.rate >= VerdictRule().min_excess
    assert decide(s, base).label == "removal"
    # with no control hits the intervals separate: suppression
    recs, f, r = _records(recovered=10, ctl_hits=0)
    s = sc.recovery_summary(recs, "u", control_model="ro", **{**kw, "forget_ids": f, "retain_ids": r})
    assert s.recovery["restate"].rate.lo > s.recovery["restate"].control.hi
    assert decide(s, base).label == "suppression"


def test_destructive_rate_analytic():
    w = ["What", "is", "Ada", "job", "?"]
    b = SimpleNamespace(words=w, word_scores=np.array([0.0, 0.0, 1.0, 1.0, 0.0]))
    same = destructive_rate([b], [b])
    assert same.rate == 0 and same.n == 1
    a = SimpleNamespace(words=w, word_scores=np.array([1.0, 1.0, 0.0, 0.0, 0.0]))
    full = destructive_rate([b], [a])  # all mass moved from content to function words
    assert full.rate == pytest.approx(1.0) and full.function_part == pytest.approx(0.5)
    assert full.function_part + full.content_part == pytest.approx(full.rate)
    with pytest.raises(ValueError, match="pair them"):
        destructive_rate([b], [])
    assert attention_shift([b], [a], [["Ada", "job"]]) == pytest.approx(1.0)
