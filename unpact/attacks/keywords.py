"""Where the key words are: character spans in a prompt, token positions, and the answer-leak guard."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from unpact.data import Encoded, Example
from unpact.keytokens import _content_words
from unpact.metrics import normalize_text

__all__ = ["find_keyword_spans", "key_positions"]


def find_keyword_spans(text: str, keywords: Sequence[str]) -> list[tuple[int, int, str]]:
    """Character spans of whole-word occurrences of the key words in ``text``.

    Matching is case-sensitive first; a key word with no case-sensitive hit is matched ignoring
    case. Overlapping hits keep the earliest, longest one.

    Args:
        text: The prompt.
        keywords: Words or multi-word phrases.

    Returns:
        Sorted, non-overlapping ``(start, stop, keyword)`` triples.
    """
    hits: list[tuple[int, int, str]] = []
    for kw in dict.fromkeys(k for k in keywords if k and k.strip()):
        pat = r"(?<!\w)" + re.escape(kw.strip()) + r"(?!\w)"
        found = [(m.start(), m.end(), kw) for m in re.finditer(pat, text)]
        if not found:
            found = [(m.start(), m.end(), kw) for m in re.finditer(pat, text, flags=re.IGNORECASE)]
        hits.extend(found)
    hits.sort(key=lambda h: (h[0], -(h[1] - h[0])))
    out: list[tuple[int, int, str]] = []
    for h in hits:
        if out and h[0] < out[-1][1]:
            continue
        out.append(h)
    return out


def key_positions(enc: Encoded, question: str, keywords: Sequence[str]) -> list[int]:
    """Token indices (in ``enc``'s prompt ids, BOS and template included) of the key words of ``question``.

    A token is a key position if its characters overlap a key word's span in the question; the
    template around the question never counts.

    Args:
        enc: The example encoded for the model (:meth:`unpact.models.Subject.encode`).
        question: The question it encodes (``example.prompt``).
        keywords: Words or phrases.
    """
    return enc.positions_of(find_keyword_spans(question, keywords), question)


def _replace_keywords(text: str, keywords: Sequence[str], fn: Callable[[str], str]) -> str:
    spans = find_keyword_spans(text, keywords)
    for s, e, _ in reversed(spans):
        text = text[:s] + fn(text[s:e]) + text[e:]
    return text


def _present(example: Example, keywords: Sequence[str]) -> list[str]:
    """Key words in the order they appear in the prompt (as written there)."""
    return [example.prompt[s:e] for s, e, _ in find_keyword_spans(example.prompt, keywords)]


def _safe_keywords(example: Example, keywords: Sequence[str]) -> list[str]:
    """Drop key words that could leak the gold answer: an attack must never leak it.

    A key word is dropped if it equals or contains the answer, or shares a content word with it
    (case-insensitive, punctuation ignored; function words do not count).
    """
    gold = normalize_text(example.answer)
    gold_words = _content_words(example.answer)
    out = []
    for k in keywords:
        nk = normalize_text(k)
        if not nk or (gold and (nk == gold or re.search(r"(?<!\w)" + re.escape(gold) + r"(?!\w)", nk))):
            continue
        if gold_words & _content_words(k):
            continue
        out.append(k)
    return out
