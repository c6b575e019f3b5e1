"""Answer matching, ROUGE-L recall and Wilson intervals."""

from __future__ import annotations

import math

import pytest

from unpact.errors import InputError
from unpact.metrics import exact_match, lenient_match, normalize_text, rouge_l_recall, wilson_interval


def test_normalize_text():
    assert normalize_text("  The Silent  Harbor! ") == "silent harbor"
    assert normalize_text("Mr. O'Neil, a baker") == "mr o neil baker"
    assert normalize_text("") == ""
    with pytest.raises(InputError, match="expected a str"):
        normalize_text(None)  # type: ignore[arg-type]


def test_exact_and_lenient():
    assert exact_match("Varnholm.", "Varnholm")
    assert not exact_match("Varnholm Varnholm", "Varnholm")
    # a model that lost its stop token keeps talking after the answer: lenient still scores it
    assert lenient_match("Varnholm Varnholm the of", "Varnholm")
    assert lenient_match("She was born in Varnholm.", "Varnholm")
    # whole words only, and the whole answer
    assert not lenient_match("Varnholmia", "Varnholm")
    assert not lenient_match("Silent", "The Silent Harbor")
    assert lenient_match("silent harbor and more", "The Silent Harbor")
    assert not lenient_match("anything", "")
    assert not exact_match("", "")


def test_rouge_l_recall():
    assert rouge_l_recall("the silent harbor", "Silent Harbor") == 1.0
    assert rouge_l_recall("harbor silent", "Silent Harbor") == 0.5
    assert rouge_l_recall("", "x") == 0.0
    assert rouge_l_recall("a b c d", "b d e f") == 0.5
    assert rouge_l_recall("x", "") == 0.0


def test_wilson_interval():
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and math.isclose(lo + hi, 1.0)
    assert math.isclose(lo, 0.4038, abs_tol=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0.1 < hi < 0.2
    with pytest.raises(ValueError):
        wilson_interval(5, 3)
