"""Answer matching and interval metrics used to score generated answers against gold answers.

* :func:`normalize_text`: SQuAD-style normalisation (lower case, no punctuation, no articles,
  single spaces), applied to both sides before any comparison.
* :func:`exact_match`: the normalised prediction equals the normalised gold answer.
* :func:`lenient_match`: the normalised gold answer starts the prediction or appears in it as a
  whole-word span. Small unlearned models often stop emitting their end token and ramble on after
  the answer (``"Varnholm Varnholm the of"``); lenient matching still scores those right, so a lost
  stop token cannot hide a recovered answer.
* :func:`rouge_l_recall`: longest common word subsequence divided by the gold answer's length.
* :func:`wilson_interval`: the Wilson score interval of a proportion ``k / n``.
"""

from __future__ import annotations

import logging
import math
import re
import string

from unpact.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["normalize_text", "exact_match", "lenient_match", "rouge_l_recall", "wilson_interval"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile("[" + re.escape(string.punctuation + "\u201c\u201d\u2018\u2019") + "]")


def normalize_text(text: str) -> str:
    """Lower-case, replace punctuation by spaces, drop English articles and collapse whitespace.

    Args:
        text: Any string.

    Returns:
        The normalised string (``""`` for text with no words).
    """
    if not isinstance(text, str):
        raise InputError(f"expected a str, got {type(text).__name__} {text!r}", source="normalize_text")
    text = _PUNCT.sub(" ", text.lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(pred: str, gold: str) -> bool:
    """True if the normalised prediction equals the normalised gold answer (and it is not empty)."""
    g = normalize_text(gold)
    return bool(g) and normalize_text(pred) == g


def lenient_match(pred: str, gold: str) -> bool:
    """True if the normalised gold answer is a whole-word prefix of, or a whole-word span inside, the prediction.

    Args:
        pred: The generated text (may run on past the answer).
        gold: The gold answer.

    Returns:
        Whether the answer is there. An empty gold answer never matches.
    """
    g = normalize_text(gold)
    if not g:
        return False
    return f" {g} " in f" {normalize_text(pred)} "


def rouge_l_recall(pred: str, gold: str) -> float:
    """ROUGE-L recall: length of the longest common word subsequence over the gold answer's length.

    Args:
        pred: The generated text.
        gold: The gold answer.

    Returns:
        A value in ``[0, 1]``; ``0.0`` for an empty gold answer.
    """
    p, g = normalize_text(pred).split(), normalize_text(gold).split()
    if not g or not p:
        return 0.0
    prev = [0] * (len(p) + 1)
    for gw in g:
        cur = [0] * (len(p) + 1)
        for j, pw in enumerate(p, 1):
            cur[j] = prev[j - 1] + 1 if gw == pw else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1] / len(g)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n``.

    Args:
        k: Successes, ``0 <= k <= n``.
        n: Trials; ``n == 0`` gives the uninformative ``(0.0, 1.0)``.
        z: Normal quantile (1.96 for 95%).

    Returns:
        ``(lo, hi)`` bounds in ``[0, 1]``.

    Raises:
        ValueError: If ``k`` or ``n`` are negative or ``k > n``.
    """
    if n < 0 or k < 0 or k > n:
        raise InputError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}", source="wilson_interval")
    if n == 0:
        return 0.0, 1.0
    phat = k / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
