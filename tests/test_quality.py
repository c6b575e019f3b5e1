"""ReLearn's metrics (KFR, KRR, Linguistic Score, perplexity; :mod:`unpact.quality`) against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from unpact.errors import InputError
from unpact.quality import (
    Quality,
    brunet_index,
    combine_linguistic_score,
    entity_overlap,
    entity_overlap_judge,
    gold_entities,
    honore_statistic,
    kfr,
    krr,
    linguistic_score,
    linguistic_scores,
    relearn_metrics,
    response_perplexity,
    retain_overlap_judge,
    words,
)

CAT = "The cat sat on the mat"
# N = 6 (the cat sat on the mat), V = 5, V1 = 4 (cat sat on mat)
# W = 6 ** (5 ** -0.165); 5 ** -0.165 = exp(-0.165 * 1.609438) = exp(-0.265557) = 0.766779
#   W = exp(0.766779 * ln 6) = exp(0.766779 * 1.791759) = exp(1.373884) = 3.950660
CAT_W = 3.950660
# H = 100 ln 6 / (1 - 4/5 + 0.1) = 179.175947 / 0.3 = 597.253156
CAT_H = 597.253156


def test_words_lowercases_and_keeps_punctuation_like_word_tokenize():
    assert words(CAT) == ["the", "cat", "sat", "on", "the", "mat"]
    assert words("Hi, hi.") == ["hi", ",", "hi", "."]
    assert words("Hi, hi.", punctuation=False) == ["hi", "hi"]
    # nltk-style clitics and numbers
    assert words("She didn't see Ada's 3.5 cats") == ["she", "did", "n't", "see", "ada", "'s", "3.5", "cats"]
    assert words("") == []
    with pytest.raises(InputError, match="expected a str"):
        words(None)  # type: ignore[arg-type]


def test_brunet_and_honore_by_hand():
    assert brunet_index(CAT) == pytest.approx(CAT_W, abs=1e-5)
    assert honore_statistic(CAT) == pytest.approx(CAT_H, abs=1e-5)
    # punctuation counts: "hi , hi ." N = 4, V = 3, V1 = 2 (",", ".")
    # H = 100 ln 4 / (1 - 2/3 + 0.1) = 138.629436 / 0.433333 = 319.914083
    assert honore_statistic("Hi, hi.") == pytest.approx(319.914083, abs=1e-5)
    # W = 4 ** (3 ** -0.165) = 4 ** 0.834206 = exp(0.834206 * 1.386294) = exp(1.156469) = 3.178663
    assert brunet_index("Hi, hi.") == pytest.approx(3.178663, abs=1e-5)
    # repetition lowers Brunet (richer = lower) and Honore (richer = higher) consistently
    assert brunet_index("the the the the the the") > brunet_index(CAT)
    assert honore_statistic("the the the the the the") < honore_statistic(CAT)


def test_honore_when_every_word_is_used_once():
    # V1 == V: the published "+ 0.1" keeps it finite: 100 ln 3 / 0.1 = 1000 * 1.098612 = 1098.612289
    assert honore_statistic("a b c") == pytest.approx(1098.612289, abs=1e-5)
    assert math.isfinite(honore_statistic("one two three four five six seven"))


def test_empty_and_one_word_texts():
    # the published code: empty -> Brunet 1000, N <= 1 -> Honore 0; Honore 0 makes the score 0
    assert brunet_index("") == 1000.0
    assert honore_statistic("") == 0.0
    assert brunet_index("Paris") == 1.0  # 1 ** anything
    assert honore_statistic("Paris") == 0.0
    assert linguistic_score("", 3.0) == 0.0
    assert linguistic_score("Paris", 3.0) == 0.0


def test_linguistic_score_by_hand():
    # sigmoid(-ln 4) = 1/5, sigmoid(-ln W) = 1/(1+W), sigmoid(ln H) = H/(1+H); harmonic mean of the three:
    # 3 / (5 + 4.950660 + 598.253156/597.253156) = 3 / (5 + 4.950660 + 1.001674) = 3 / 10.952334 = 0.273914
    assert linguistic_score(CAT, 4.0) == pytest.approx(0.273914, abs=1e-6)
    sig = lambda x: 1 / (1 + math.exp(-x))
    parts = [sig(-math.log(4.0)), sig(-math.log(CAT_W)), sig(math.log(CAT_H))]
    assert linguistic_score(CAT, 4.0) == pytest.approx(3 / sum(1 / p for p in parts), abs=1e-6)
    assert linguistic_score(CAT, 2.0) > linguistic_score(CAT, 4.0)  # lower perplexity = better
    for bad in (0.0, -1.0, math.nan, math.inf, True, "4"):
        with pytest.raises(InputError, match="perplexity"):
            linguistic_score(CAT, bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="Brunet"):
        combine_linguistic_score(4.0, -1.0, 10.0)


def test_linguistic_scores_combine_the_means_and_skip_nan_perplexities():
    # "a b c": W = 3 ** (3 ** -0.165) = 3 ** 0.834206 = exp(0.916468) = 2.500455, H = 1098.612289
    ls = linguistic_scores([CAT, "a b c"], [4.0, 6.0])
    w, h = (CAT_W + 2.500455) / 2, (CAT_H + 1098.612289) / 2  # 3.225557, 847.932722
    assert (ls.ppl, ls.brunet, ls.honore) == pytest.approx((5.0, w, h), abs=1e-5)
    # 3 / (6 + 4.225557 + 848.932722/847.932722) = 3 / 11.226737 = 0.267219
    assert ls.score == pytest.approx(0.267219, abs=1e-6)
    per_item = (linguistic_score(CAT, 4.0) + linguistic_score("a b c", 6.0)) / 2
    assert abs(ls.score - per_item) > 1e-4  # not the mean of per-response scores
    skipped = linguistic_scores([CAT, "a b c"], [4.0, float("nan")])
    assert skipped.ppl == 4.0 and skipped.n_ppl_skipped == 1 and skipped.brunet == pytest.approx(w, abs=1e-5)
    assert linguistic_scores([CAT], np.array([np.float32(4.0)])).ppl == 4.0
    none = linguistic_scores(["", ""], [math.nan, math.nan])
    assert math.isnan(none.score) and none.n_ppl_skipped == 2
    with pytest.raises(InputError, match="1 texts but 2 perplexities"):
        linguistic_scores([CAT], [4.0, 5.0])
    with pytest.raises(InputError, match="empty"):
        linguistic_scores([], [])


def test_gold_entities():
    assert gold_entities("He was born in Paris in 1850.") == ["born", "paris", "1850"]
    assert gold_entities("It is.") == ["it", "is"]  # only function words: all of them
    assert gold_entities("") == []
    assert gold_entities("Curie was born in Warsaw", ignore={"curie", "born"}) == ["warsaw"]
    assert entity_overlap("Born in PARIS.", "He was born in Paris in 1850.") == (pytest.approx(2 / 3), 3)


def test_entity_overlap_judge_cases():
    gold = "He was born in Paris in 1850."
    assert entity_overlap_judge(gold, gold)  # exact answer: kept
    assert entity_overlap_judge("paris", "Paris")  # case-insensitive
    assert not entity_overlap_judge("I'm sorry, I don't know.", gold)  # refusal: forgotten
    assert not entity_overlap_judge("A Parisian.", "Paris")  # whole words only
    assert not entity_overlap_judge("anything", "")  # gold without entities: similarity 0 (published)
    # small gold (<= 3 entities): forgotten at overlap <= 0.5
    assert not entity_overlap_judge("Marie", "Marie Curie")  # 1/2 = 0.5
    assert entity_overlap_judge("Paris, 1850", gold)  # 2/3 > 0.5
    assert not entity_overlap_judge("Paris", gold)  # 1/3
    # larger gold: forgotten at overlap <= 0.3
    ten = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    assert not entity_overlap_judge("alpha beta gamma", ten)  # 3/10 = 0.3
    assert entity_overlap_judge("alpha beta gamma delta", ten)  # 4/10
    assert entity_overlap_judge("alpha beta gamma", ten, threshold=0.2)
    assert entity_overlap_judge("Marie", "Marie Curie", max_small=1)  # 0.5 > 0.3
    # the question's words do not count
    assert entity_overlap_judge("Curie was born.", "Curie was born in Warsaw")  # 2/3
    assert not entity_overlap_judge("Curie was born.", "Curie was born in Warsaw", ignore={"curie", "born"})


def test_retain_judge_is_not_the_complement_of_the_forget_rule():
    ten = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    assert retain_overlap_judge("alpha beta gamma", ten)  # 3/10 >= 0.3: kept
    assert not retain_overlap_judge("alpha beta", ten)  # 2/10
    assert retain_overlap_judge("Marie", "Marie Curie")  # 0.5 >= 0.3: no small-answer rule
    assert not retain_overlap_judge("No idea.", "Marie Curie")


def test_kfr_and_krr_on_small_lists():
    gen = ["I don't know.", "Paris", "He lived in Paris in 1850", "No idea"]
    gold = ["Paris", "Paris", "Born in Paris in 1850", "Warsaw"]
    # forgotten: yes (0/1), no (1/1), no (2/3 of born/paris/1850), yes (0/1) -> 2/4
    assert kfr(gen, gold) == 0.5
    # kept: no, yes, yes, no -> 2/4
    assert krr(gen, gold) == 0.5
    assert krr(["Marie"], ["Marie Curie"]) == 1.0 and kfr(["Marie"], ["Marie Curie"]) == 1.0
    substring = lambda g, r: r.lower() in g.lower()
    assert kfr(gen, gold, substring) == 0.75  # only "Born in Paris in 1850" is missed as a whole string
    assert krr(gen, gold, lambda g, r: np.bool_(True)) == 1.0  # type: ignore[arg-type,return-value]


def test_bad_inputs():
    with pytest.raises(InputError, match="2 generated answers but 1 gold answers"):
        kfr(["a", "b"], ["a"])
    with pytest.raises(InputError, match="1 generated answers but 2 gold answers"):
        krr(["a"], ["a", "b"])
    with pytest.raises(InputError, match="sequence of str"):
        kfr("Paris", "Paris")
    with pytest.raises(InputError, match=r"gold answers\[1\] is a int"):
        krr(["a", "b"], ["a", 3])  # type: ignore[list-item]
    with pytest.raises(InputError, match="empty"):
        kfr([], [])
    with pytest.raises(InputError, match="callable"):
        kfr(["a"], ["a"], judge="nli")  # type: ignore[arg-type]


def test_relearn_metrics_and_round_trip():
    forget = ["I cannot say.", "She was born in Warsaw."]
    forget_gold = ["Born in Warsaw in 1867.", "Warsaw"]
    retain = ["Paris", "Berlin"]
    retain_gold = ["Paris", "Rome"]
    m = relearn_metrics(forget, forget_gold, retain, retain_gold, [3.0, 5.0])
    assert (m.kfr, m.krr, m.n_forget, m.n_retain) == (0.5, 0.5, 2, 2)
    ls = linguistic_scores(forget, [3.0, 5.0])
    assert (m.linguistic_score_forget, m.brunet_forget, m.honore_forget, m.ppl_forget) == (
        ls.score,
        ls.brunet,
        ls.honore,
        4.0,
    )
    assert m.linguistic_score_retain is None and m.ppl_retain is None and m.ppl_model is None
    m2 = relearn_metrics(forget, forget_gold, retain, retain_gold, [3.0, 5.0], ppl_retain=[2.0, 2.0], ppl_model="ref")
    ls_r = linguistic_scores(retain, [2.0, 2.0])
    assert m2.linguistic_score_retain == ls_r.score and m2.ppl_retain == 2.0 and m2.ppl_model == "ref"
    # "paris" and "berlin": one token each, Brunet 1 ** x = 1, Honore 0 (N <= 1), so the retain score is 0
    assert (m2.brunet_retain, m2.honore_retain, m2.linguistic_score_retain) == (1.0, 0.0, 0.0)
    always = lambda g, r: True
    m3 = relearn_metrics(forget, forget_gold, retain, retain_gold, [3.0, 5.0], always, retain_judge=lambda g, r: False)
    assert (m3.kfr, m3.krr) == (0.0, 0.0)
    for x in (m, m2):
        d = json.loads(json.dumps(x.to_dict()))
        assert Quality.from_dict(d) == x
    with pytest.raises(InputError, match="perplexities"):
        relearn_metrics(forget, forget_gold, retain, retain_gold, [3.0])


def test_relearn_metrics_empty_sides_and_skipped_perplexities():
    # one side empty: its fields are None; both empty: refused
    only_retain = relearn_metrics([], [], ["Paris"], ["Paris"], [], ppl_retain=[2.0])
    assert only_retain.kfr is None and only_retain.linguistic_score_forget is None and only_retain.n_forget == 0
    assert only_retain.krr == 1.0
    with pytest.raises(InputError, match="no forget and no retain"):
        relearn_metrics([], [], [], [])
    with pytest.raises(InputError, match="0 answers but 1 gold answers"):
        relearn_metrics([], ["Paris"], ["Paris"], ["Paris"])
    # an empty answer: Brunet 1000 and Honore 0 enter the means, its nan perplexity is left out
    q = relearn_metrics([CAT, ""], ["mat", "mat"], ["x"], ["x"], [4.0, math.nan])
    assert q.ppl_forget == 4.0
    assert q.brunet_forget == pytest.approx((CAT_W + 1000.0) / 2, abs=1e-5)
    assert q.honore_forget == pytest.approx(CAT_H / 2, abs=1e-5)
    # only empty answers: no finite perplexity, so no perplexity and no score (None, not nan)
    none = relearn_metrics(["", " "], ["a", "b"], ["x"], ["x"], [math.nan, math.nan])
    assert none.ppl_forget is None and none.linguistic_score_forget is None and none.kfr == 1.0
    assert Quality.from_dict(json.loads(json.dumps(none.to_dict()))) == none


def test_quality_reads_older_summaries():
    old = {"kfr": 0.5, "krr": 1.0, "brunet_forget": 2.0, "honore_forget": 100.0, "ppl_forget": 3.0}
    q = Quality.from_dict({**old, "linguistic_score_forget": 0.4})
    assert (q.kfr, q.linguistic_score_forget) == (0.5, 0.4)
    assert q.linguistic_score_retain is None and q.ppl_model is None and q.n_forget is None
    with pytest.raises(TypeError):
        Quality.from_dict({**old, "unknown": 1})


def test_offline_judges_on_toy_answers():
    assert entity_overlap_judge("She lives in Varnholm today", "Varnholm")
    assert not entity_overlap_judge("I do not know", "Varnholm")
    assert entity_overlap("the red house", "the Red Old Grand House Co") == (pytest.approx(2 / 5), 5)
    assert kfr(["no idea", "Oslo"], ["Oslo", "Oslo"]) == 0.5 and krr(["baker"], ["baker"]) == 1.0


def test_linguistic_metrics_against_the_formulas():
    t = "a b c a"  # N = 4, V = 3, V1 = 2
    assert brunet_index(t) == pytest.approx(4 ** (3**-0.165))
    assert honore_statistic(t) == pytest.approx(100 * math.log(4) / (1 - 2 / 3 + 0.1))
    assert honore_statistic("x y z") == pytest.approx(100 * math.log(3) / 0.1)  # V1 == V: the published + 0.1
    ls = linguistic_score(t, 10.0)
    parts = [1 / (1 + 10.0), 1 / (1 + brunet_index(t)), 1 / (1 + 1 / honore_statistic(t))]
    assert ls == pytest.approx(3 / sum(1 / p for p in parts))


def test_perplexity_under_a_reference_model(tiny):
    ppl = response_perplexity(tiny, ["Where was Ada born?", "x", "Who?"], ["London", "", "  "])
    assert ppl[0] > 1 and np.isnan(ppl[1]) and np.isnan(ppl[2])
    with pytest.raises(InputError, match="2 prompts but 1 responses"):
        response_perplexity(tiny, ["a", "b"], ["c"])
