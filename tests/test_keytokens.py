"""unPact's key-word rule and the drop ranking, on plain arrays with known answers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from unpact import keytokens as kt
from unpact.data import Example

WORDS = ["Where", "was", "Ada", "Lovelace", "born", "?"]


def test_positive_shares():
    s = kt.positive_shares([1.0, -2.0, 3.0, 0.0])
    np.testing.assert_allclose(s, [0.25, 0.0, 0.75, 0.0])
    assert kt.positive_shares([-1.0, -2.0]).sum() == 0
    np.testing.assert_allclose(kt.positive_shares([1.0, 1.0], [True, False]), [1.0, 0.0])


def test_unpact_rule_alpha_and_beta():
    # 5 positive words (>= beta): keep shares > alpha = 0.1
    scores = [0.05, 0.01, 0.4, 0.3, 0.2, 0.04]
    assert kt.unpact_rule(WORDS, scores) == [2, 3, 4]
    # "?" is never a candidate even with a large score; fewer than beta positive -> all positive
    assert kt.unpact_rule(WORDS, [-1, -1, 0.01, -1, 0.02, 5.0]) == [2, 4]
    # alpha higher -> fewer words
    assert kt.unpact_rule(WORDS, scores, alpha=0.35) == [2]
    with pytest.raises(ValueError, match="one score per word"):
        kt.unpact_rule(WORDS, [1.0])
    with pytest.raises(ValueError, match="alpha"):
        kt.unpact_rule(WORDS, scores, alpha=1.5)


def test_answer_never_a_key_word():
    words = ["Is", "Paris", "the", "capital", "?"]
    assert 1 not in kt.unpact_rule(words, [0, 9, 0, 1, 0], answer="Paris")
    assert kt.unpact_rule(words, [0, 9, 0, 1, 0], answer="Paris") == [3]


def test_drop_ranking():
    before = [0.0, 0.0, 0.5, 0.3, 0.2, 0.0]
    after = [0.0, 0.5, 0.1, 0.3, 0.1, 0.0]
    # shares before (.5,.3,.2), after (.5 on "was", .1/.3/.1 on Ada/Lovelace/born): Ada drops most, then born
    # with "was" a candidate (stop_words="none"; by default it never counts and the shares renormalise without it)
    assert kt.drop_ranking(WORDS, before, after, k=3, stop_words="none") == [2, 4]  # Lovelace kept its 0.3
    assert kt.drop_ranking(WORDS, before, after, k=3) == [2]
    assert kt.drop_ranking(WORDS, before, before) == []
    with pytest.raises(ValueError, match="lengths differ"):
        kt.drop_ranking(WORDS, before, after[:2])


def test_key_words_on_attribution_like_objects():
    ex = Example("x", "Where was Ada Lovelace born?", "London")
    base = SimpleNamespace(example=ex, words=WORDS, word_scores=np.array([0.0, 0.0, 0.5, 0.3, 0.2, 0.0]))
    unl = SimpleNamespace(example=ex, words=WORDS, word_scores=np.array([0.0, 0.5, 0.1, 0.3, 0.1, 0.0]))
    assert kt.key_words(base) == ["Ada", "Lovelace", "born"]
    assert kt.key_words(base, unl, rule="drop", k=1) == ["Ada"]
    assert kt.key_words(base, unl, rule="union", k=1) == ["Ada", "Lovelace", "born"]
    with pytest.raises(ValueError, match="pass the unlearned"):
        kt.key_words(base, rule="drop")
    with pytest.raises(ValueError, match="unknown key-word rule"):
        kt.key_words(base, rule="magic")  # type: ignore[arg-type]


def test_function_words():
    assert kt.is_function_word("What") and kt.is_function_word("?") and not kt.is_function_word("Lovelace")
    assert not kt.is_candidate("<bos>") and not kt.is_candidate("...") and kt.is_candidate("born")


def test_is_candidate_rejects_answer_content_words():
    assert not kt.is_candidate("London", "London")
    assert not kt.is_candidate("York", "New York City")  # a content word of a multi-word answer
    assert not kt.is_candidate("york,", "New York")
    assert kt.is_candidate("of", "Bank of England")  # function words do not count
    assert kt.is_candidate("born", "New York City")


def test_function_words_are_never_key_words_by_default_and_the_stop_list_is_configurable(tmp_path) -> None:
    from unpact.audit import AuditConfig
    from unpact.errors import UnknownNameError

    words = ["What", "did", "Ada", "Lovelace", "write", "?"]
    scores = [5.0, 4.0, 1.5, 2.0, 0.5, 0.0]
    # the function words carry most of the attribution, but emphasising them is no attack
    assert [words[i] for i in kt.unpact_rule(words, scores)] == ["Ada", "Lovelace", "write"]
    assert [words[i] for i in kt.unpact_rule(words, scores, stop_words="none")] == ["What", "did", "Ada", "Lovelace"]
    assert kt.drop_ranking(words, scores, [0.0] * 6, k=2) == [3, 2]
    assert kt.drop_ranking(words, scores, [0.0] * 6, k=2, stop_words=None) == [0, 1]
    f = tmp_path / "stop.txt"
    f.write_text("# my list\nLovelace\n\nwrite\n", encoding="utf-8")
    assert kt.stop_list(str(f)) == {"lovelace", "write"}
    assert [words[i] for i in kt.unpact_rule(words, scores, stop_words=str(f))] == ["What", "did", "Ada"]
    assert [words[i] for i in kt.unpact_rule(words, scores, stop_words=["ada", "what"])] == ["did", "Lovelace"]
    with pytest.raises(UnknownNameError, match="unknown stop list 'xx'"):
        kt.stop_list("xx")
    with pytest.raises(UnknownNameError, match="stop list"):
        AuditConfig(stop_words="no-such-file.txt")


def test_stop_list_matching_and_file_errors(tmp_path) -> None:
    from unpact.errors import InputError, UnknownNameError

    words = ["What\u2019s", "didn't", "US", "Ada", "the", "it"]
    keep = kt._candidates(words, None, (), "en")
    assert [w for w, k in zip(words, keep) if k] == ["US", "Ada"]  # contractions stopped, the acronym kept
    assert kt.stop_list(" EN ") == kt.FUNCTION_WORDS and kt.stop_list("None") == frozenset()
    with pytest.raises(UnknownNameError, match="is a directory"):
        kt.stop_list(str(tmp_path))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="cannot read the stop list"):
        kt.stop_list(str(bad))
