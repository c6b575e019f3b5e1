"""The field's standard metrics (unpact.standard_metrics) against hand-computed values, and end to end on the
micro toy world (base vs retain-only model), plus the toy world's holdout people."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pytest
import torch

from unpact.data import Example
from unpact.errors import InputError, UnknownNameError
from unpact.standard_metrics import (
    KSResult,
    StandardComparison,
    StandardMetrics,
    answer_variants,
    compare_standard_metrics,
    forget_quality,
    harmonic_mean,
    ks_2samp,
    loss_score,
    mean_logprob,
    min_k_plus_plus_score,
    min_k_score,
    model_utility,
    privleak,
    roc_auc,
    standard_metrics,
    truth_ratio,
    truth_ratio_forget_score,
    truth_ratio_retain_score,
    zlib_score,
)
from unpact.standard_metrics._tokens import next_token_stats
from unpact.toyworld.kb import holdout_people, make_kb

LN2 = math.log(2.0)


# ----- truth ratio -------------------------------------------------------------------------------
def test_truth_ratio_by_hand() -> None:
    # paraphrase: log P = -3 over 3 tokens -> mean -1; perturbed: -4 over 2 tokens -> -2, -9 over 3 -> -3.
    para = mean_logprob([-3.0], [3])
    pert = mean_logprob([[-4.0, -9.0]], [[2, 3]])
    np.testing.assert_allclose(para, [-1.0])
    np.testing.assert_allclose(pert, [[-2.0, -3.0]])
    # TOFU: R = (P1^(1/2) * P2^(1/3))^(1/2) / Ppara^(1/3) = (e^-2 * e^-3)^(1/2) / e^-1 = e^-2.5 / e^-1 = e^-1.5
    r = truth_ratio(para, pert)
    np.testing.assert_allclose(r, [math.exp(-1.5)])  # 0.22313
    # ragged: item 2 has one perturbed answer, mean lp -0.5 vs paraphrase -1.0 -> e^(0.5)
    r2 = truth_ratio([-1.0, -1.0], [[-2.0, -3.0], [-0.5]])
    np.testing.assert_allclose(r2, [math.exp(-1.5), math.exp(0.5)])
    # retain score mean(max(0, 1 - R)): R = 0.25 -> 0.75, R = 2 -> 0; mean 0.375
    assert truth_ratio_retain_score([0.25, 2.0]) == pytest.approx(0.375)
    # forget score mean(min(R, 1/R)): min(0.25, 4) = 0.25, min(2, 0.5) = 0.5; mean 0.375
    assert truth_ratio_forget_score([0.25, 2.0]) == pytest.approx(0.375)
    assert truth_ratio_forget_score([1.0]) == 1.0
    with pytest.raises(InputError, match="perturbed answers for 1 items"):
        truth_ratio([-1.0, -2.0], [[-1.0]])
    with pytest.raises(InputError, match="> 0"):
        truth_ratio_retain_score([0.0])


# ----- KS test / forget quality ------------------------------------------------------------------
def test_ks_two_samples_by_hand() -> None:
    # a = [1,2,3], b = [4,5,6,7]: D = 1 (all of a below all of b). Of the C(7,3) = 35 equally likely
    # orderings of the pooled sample only "aaabbbb" and "bbbbaaa" reach D = 1: p = 2/35.
    res = ks_2samp([1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0])
    assert (res.statistic, res.n_a, res.n_b, res.method) == (1.0, 3, 4, "exact")
    assert res.pvalue == pytest.approx(2 / 35)
    # a = [1,3], b = [2,4]: ECDF gaps at 1,2,3,4 are 1/2, 0, 1/2, 0 -> D = 1/2. Every one of the C(4,2) = 6
    # orderings has D >= 1/2 (aabb, bbaa: 1; abab, abba, baab, baba: 1/2): p = 1.
    res = ks_2samp([1.0, 3.0], [2.0, 4.0])
    assert res.statistic == 0.5 and res.pvalue == pytest.approx(1.0)
    # identical samples: D = 0, p = 1
    assert ks_2samp([1.0, 2.0], [1.0, 2.0]).pvalue == 1.0
    fq = forget_quality([0.1, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7])
    assert fq.pvalue == pytest.approx(2 / 35) and KSResult.from_dict(json.loads(json.dumps(fq.to_dict()))) == fq
    with pytest.raises(InputError, match="forget quality"):
        forget_quality([], [1.0])
    with pytest.raises(InputError, match="finite"):
        ks_2samp([1.0, float("nan")], [1.0])


def test_ks_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    from unpact.standard_metrics.ks import _kolmogorov_pvalue

    rng = np.random.default_rng(0)
    for n1, n2, shift in [(5, 5, 1.0), (12, 7, 0.5), (40, 37, 0.6), (100, 100, 0.3), (90, 60, 0.0)]:
        a, b = rng.normal(size=n1), rng.normal(shift, size=n2)
        ours, ref = ks_2samp(a, b), stats.ks_2samp(a, b)
        assert ours.statistic == pytest.approx(ref.statistic)
        assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    # ties across the samples
    a, b = [1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 2.0, 4.0, 5.0]
    assert ks_2samp(a, b).pvalue == pytest.approx(stats.ks_2samp(a, b).pvalue, rel=1e-9)
    # large samples: scipy's own p-value where installed; the Kolmogorov fallback is close to scipy's
    a, b = rng.normal(size=3000), rng.normal(0.07, size=2000)
    big, asymp = ks_2samp(a, b), stats.ks_2samp(a, b, method="asymp")
    assert big.method == "scipy" and big.pvalue == pytest.approx(stats.ks_2samp(a, b).pvalue)
    assert _kolmogorov_pvalue(3000, 2000, asymp.statistic) == pytest.approx(asymp.pvalue, rel=0.05)


# ----- model utility -----------------------------------------------------------------------------
def test_harmonic_mean_and_model_utility_by_hand() -> None:
    # 3 / (1/0.5 + 1/0.25 + 1/1) = 3 / (2 + 4 + 1) = 3/7
    assert harmonic_mean([0.5, 0.25, 1.0]) == pytest.approx(3 / 7)
    assert harmonic_mean([0.5, 0.0]) == 0.0  # as scipy.stats.hmean
    comps = {"retain_prob": 0.5, "retain_rouge_l": 0.25, "retain_truth_ratio": 1.0}
    assert model_utility(comps) == pytest.approx(3 / 7)
    with pytest.raises(InputError, match="outside"):
        model_utility({"x": 1.5})
    with pytest.raises(InputError, match="negative"):
        harmonic_mean([-1.0, 1.0])


# ----- membership inference ----------------------------------------------------------------------
def test_mia_scores_on_fake_logits_by_hand() -> None:
    # every position predicts p = (1/2, 1/4, 1/8, 1/8): log p = (-1, -2, -3, -3) ln2
    probs = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    logits = probs.log().repeat(3, 1) + 7.0  # (T=3, vocab=4); a shift does not change the softmax
    targets = torch.tensor([0, 2, 1])  # log p = -1, -3, -2 (x ln2)
    lp, mu, sigma = next_token_stats(logits, targets)
    np.testing.assert_allclose(lp.numpy(), np.array([-1.0, -3.0, -2.0]) * LN2)
    # mu = sum p log p = -(0.5*1 + 0.25*2 + 0.125*3 + 0.125*3) ln2 = -1.75 ln2
    np.testing.assert_allclose(mu.numpy(), [-1.75 * LN2] * 3)
    # E[(log p)^2] = (0.5*1 + 0.25*4 + 0.25*9) ln2^2 = 3.75 ln2^2; var = 3.75 - 1.75^2 = 0.6875 (x ln2^2)
    np.testing.assert_allclose(sigma.numpy(), [math.sqrt(0.6875) * LN2] * 3)
    lp_, mu_, sg_ = lp.numpy(), mu.numpy(), sigma.numpy()
    # LOSS: mean(-1, -3, -2) ln2 = -2 ln2
    assert loss_score(lp_) == pytest.approx(-2 * LN2)
    # zlib: zlib.compress(b"abc") is 11 bytes (2 header + 5 deflate + 4 Adler-32) -> -2 ln2 / 11
    assert len(zlib.compress(b"abc")) == 11
    assert zlib_score(lp_, "abc") == pytest.approx(-2 * LN2 / 11)
    # Min-K% at k = 0.4: int(3 * 0.4) = 1 lowest -> -3 ln2; k = 1: all -> -2 ln2
    assert min_k_score(lp_, 0.4) == pytest.approx(-3 * LN2)
    assert min_k_score(lp_, 1.0) == pytest.approx(-2 * LN2)
    assert min_k_score(lp_, 0.1) == pytest.approx(-3 * LN2)  # at least one token
    # Min-K%++: z = (lp - mu) / sigma = (0.75, -1.25, -0.25) / sqrt(0.6875)
    z = np.array([0.75, -1.25, -0.25]) / math.sqrt(0.6875)  # (0.9045, -1.5076, -0.3015)
    assert min_k_plus_plus_score(lp_, mu_, sg_, 0.4) == pytest.approx(z[1])
    # k = 0.7: int(2.1) = 2 lowest -> mean(-1.5076, -0.3015) = -0.9045
    assert min_k_plus_plus_score(lp_, mu_, sg_, 0.7) == pytest.approx((z[1] + z[2]) / 2)
    with pytest.raises(InputError, match="fraction"):
        min_k_score(lp_, 0.0)
    # a one-hot distribution: variance 0 is clamped to 1e-6 (sigma 1e-3), as open-unlearning does
    _, _, s = next_token_stats(torch.tensor([[0.0, -1e4]]), torch.tensor([0]))
    assert float(s[0]) == pytest.approx(1e-3)


def test_auc_with_ties_by_hand() -> None:
    # members [0.9, 0.5, 0.5] vs non-members [0.5, 0.1]: 6 pairs.
    # 0.9>0.5: 1, 0.9>0.1: 1, 0.5=0.5: 1/2, 0.5>0.1: 1, 0.5=0.5: 1/2, 0.5>0.1: 1 -> 5/6
    assert roc_auc([0.9, 0.5, 0.5], [0.5, 0.1]) == pytest.approx(5 / 6)
    assert roc_auc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert roc_auc([0.0], [1.0]) == 0.0
    assert roc_auc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(InputError, match="empty"):
        roc_auc([], [1.0])


def test_privleak_by_hand() -> None:
    # AUC 0.9 (forget = members) vs the retrained model's 0.6. MUSE's AUCs take the holdout as positive:
    # 1 - 0.9 = 0.1 and 1 - 0.6 = 0.4 -> (0.1 - 0.4) / 0.4 * 100 = -75: under-unlearning.
    assert privleak(0.9, 0.6) == pytest.approx(-75.0)
    # forget items less member-like than under retraining: (0.7 - 0.4) / 0.4 * 100 = +75: over-unlearning
    assert privleak(0.3, 0.6) == pytest.approx(75.0)
    assert privleak(0.6, 0.6) == 0.0
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)  # the floor: every forget item above every holdout item
    assert math.isnan(privleak(0.7, 1.0))
    with pytest.raises(InputError, match="AUC"):
        privleak(1.2, 0.5)


# ----- paraphrased / perturbed answers -----------------------------------------------------------
def test_answer_variants_toyworld_and_meta() -> None:
    kb = make_kb(20, seed=0)
    people = list(kb.people)
    items = kb.examples(people[:2])
    pool = kb.examples(holdout_people(kb, 4))
    vs = answer_variants(items, pool=pool, n_perturbed=3, seed=0)
    assert vs == answer_variants(items, pool=pool, n_perturbed=3, seed=0)  # deterministic
    for e, v in zip(items, vs):
        assert e.answer in v.paraphrased and e.subject in v.paraphrased and v.source == "toyworld"
        assert len(set(v.perturbed)) == 3 and v.paraphrased not in v.perturbed
    tofu = Example("t0", "Who wrote X?", "Ann", meta={"paraphrased_answer": "It was Ann.", "perturbed_answer": ["Bo"]})
    (v,) = answer_variants([tofu])
    assert (v.paraphrased, v.perturbed, v.source) == ("It was Ann.", ("Bo",), "meta")
    with pytest.raises(InputError, match="paraphrased_answer"):
        answer_variants([Example("u0", "Who?", "Ann")])
    with pytest.raises(InputError, match="must be a non-empty string"):
        answer_variants([Example("u1", "Who?", "Ann", meta={"paraphrased_answer": ["a"], "perturbed_answer": ["b"]})])


# ----- toy-world holdout people ------------------------------------------------------------------
def test_holdout_people_disjoint_and_deterministic() -> None:
    kb = make_kb(20, seed=0)
    hold = holdout_people(kb, 5)
    assert {p.name for p in hold}.isdisjoint({p.name for p in kb.people})
    assert [p.index for p in hold] == list(range(20, 25))
    assert hold == holdout_people(make_kb(20, seed=0), 5)
    assert hold[:2] == holdout_people(kb, 2)
    assert [p.name for p in hold] != [p.name for p in holdout_people(kb, 5, seed=1)]
    assert make_kb(20, seed=0) == kb  # drawing holdout people does not touch the knowledge base
    with pytest.raises(InputError):
        holdout_people(kb, 0)


def test_world_holdout_split(micro_world, toy_base) -> None:
    from unpact.evaluate import evaluate

    hold = micro_world.holdout
    assert hold == micro_world.split("holdout") and len(hold) == len(micro_world.forget)
    world_names = {e.subject for e in micro_world.forget + micro_world.retain}
    assert {e.subject for e in hold}.isdisjoint(world_names)
    assert all(e.meta["phrasing"] == "heldout" for e in micro_world.split("holdout_heldout"))
    assert not (micro_world.root / "data" / "holdout.json").exists()
    with pytest.raises(UnknownNameError, match="holdout"):
        micro_world.split("nope")
    # nobody taught the base model these facts: chance-level answers (1 in 64 professions, 1 in 100 years)
    assert evaluate(toy_base, hold[::2]).accuracy() <= 0.1
    assert evaluate(toy_base, micro_world.forget[::8]).accuracy() >= 0.9  # while it knows the forget people


# ----- end to end on the micro world -------------------------------------------------------------
@pytest.fixture(scope="module")
def micro_metrics(micro_world, toy_base):
    ref = micro_world.load_retain_only()
    args = (micro_world.forget, micro_world.holdout, micro_world.retain)
    return standard_metrics(toy_base, *args, max_items=32), standard_metrics(ref, *args, max_items=32)


def test_standard_metrics_end_to_end(micro_metrics) -> None:
    base, ref = micro_metrics
    assert len(base.forget_ids) == len(base.holdout_ids) == len(base.retain_ids) == 32
    assert base.forget_ids == ref.forget_ids and base.settings == ref.settings
    auc_base, auc_ref = base.mia_auc(), ref.mia_auc()
    # the base model was trained on the forget people and not on the holdout people: its MIA AUC must
    # beat the retain-only model's, which saw neither (a test that can fail)
    for name in auc_base:
        assert auc_base[name] > auc_ref[name], (name, auc_base[name], auc_ref[name])
    assert auc_base["min_k"] > 0.9
    # the base model prefers the right forget answers (R < 1); the retain-only model cannot
    assert np.median(base.forget_truth_ratio) < np.median(ref.forget_truth_ratio)
    cmp = compare_standard_metrics(base, ref)
    assert (cmp.forget_quality.n_a, cmp.forget_quality.n_b) == (32, 32)
    assert cmp.forget_quality.pvalue < 0.05  # the base model is not "forgotten"
    assert cmp.privleak["min_k"] < -50  # under-unlearning
    assert 0 < cmp.model_utility <= 1 and 0 < cmp.model_utility_reference <= 1
    # JSON round trips
    assert StandardMetrics.from_dict(json.loads(json.dumps(base.to_dict()))) == base
    assert StandardComparison.from_dict(json.loads(json.dumps(cmp.to_dict()))) == cmp
    assert compare_standard_metrics(base, base).forget_quality.pvalue == 1.0
    with pytest.raises(InputError, match="forget_ids"):
        compare_standard_metrics(base, StandardMetrics.from_dict({**ref.to_dict(), "forget_ids": ["x"] * 32}))


def test_token_scores_agree_with_the_forward_path_and_the_model_head(toy_base) -> None:
    from unpact.evaluate import answer_logprob
    from unpact.models import ModelState
    from unpact.standard_metrics._tokens import token_scores

    kb = make_kb(20, seed=0)
    items = kb.examples(list(kb.people[:1]))[::5] + kb.examples(holdout_people(kb, 1))[::9]  # 10 + 6 items
    before = ModelState.capture(toy_base.model, with_weights=True)
    ans = token_scores(toy_base, items, tokens="answer", batch_size=3)
    # the answer tokens' log-probs are answer_logprob's (same encoding, same pass, other batching)
    np.testing.assert_allclose([t.logprobs.mean() for t in ans], answer_logprob(toy_base, items), atol=1e-5)
    assert [t.text for t in ans] == [e.answer for e in items]
    # "full": every token after BOS, checked against the model's own head run on each item alone
    full = token_scores(toy_base, items, tokens="full", batch_size=3)
    for e, t in zip(items, full):
        ids = toy_base.encode(e).input_ids
        with torch.no_grad():
            logits = toy_base.model(ids[None]).logits[0, :-1].double()
        lp, mu, sigma = next_token_stats(logits, ids[1:])
        np.testing.assert_allclose(t.logprobs, lp.numpy(), atol=1e-4)
        np.testing.assert_allclose(t.mu, mu.numpy(), atol=1e-4)
        np.testing.assert_allclose(t.sigma, sigma.numpy(), atol=1e-4)
    assert ModelState.capture(toy_base.model, with_weights=True) == before  # weights, modes and flags untouched
