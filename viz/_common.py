"""Shared helpers for viz: reading result objects by duck typing, wrapping long token lists, colour maps."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Diverging scales centred at zero: red = positive contribution, blue = negative.
MPL_DIVERGING = "RdBu_r"
MPL_DIFF = "PuOr_r"
PLOTLY_DIVERGING = "RdBu_r"
PLOTLY_DIFF = "PuOr_r"


class VizInputError(ValueError):
    """A result object given to a viz function lacks what the plot needs; the message says what."""


def visible(token: str) -> str:
    """Display text for a token: byte-level BPE markers as spaces, newlines as a return symbol."""
    return str(token).replace("\u0120", " ").replace("\u010a", "\u21b5").replace("\n", "\u21b5")


def first_attr(obj: Any, names: Sequence[str], *, what: str, required: bool = True) -> Any:
    """The first attribute of ``obj`` (or key, for mappings) among ``names`` that is not None."""
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    if required:
        raise VizInputError(
            f"{type(obj).__name__} has none of {list(names)}; {what} needs one of them "
            "(pass an unpact result object or an object with that attribute)"
        )
    return None


def attribution_units(attr: Any, level: str) -> tuple[list[str], np.ndarray]:
    """Labels and scores of an Attribution at ``level`` ("word" or "token").

    Returns:
        ``(labels, scores)`` with ``scores`` of shape ``(n,)``.
    """
    if level == "word":
        labels = first_attr(attr, ("words",), what="a word-level heatmap")
        scores = first_attr(attr, ("word_scores",), what="a word-level heatmap")
    elif level == "token":
        labels = first_attr(attr, ("tokens",), what="a token-level heatmap")
        scores = first_attr(attr, ("token_scores",), what="a token-level heatmap")
    else:
        raise VizInputError(f"level must be 'word' or 'token', got {level!r}")
    arr = np.asarray(scores, dtype=float).reshape(-1)
    labels = [visible(t) for t in labels]
    if len(labels) != arr.shape[0]:
        raise VizInputError(f"attribution has {len(labels)} {level}s but {arr.shape[0]} scores")
    return labels, arr


_WORD_RE = re.compile(r"\w+", re.UNICODE)


def _norm_word(w: str) -> str:
    return " ".join(_WORD_RE.findall(w.lower()))


def key_indices(attr: Any, level: str, key: Iterable[int | str] | None) -> set[int]:
    """Indices (at ``level``) of the key tokens to mark.

    Args:
        attr: An Attribution (uses ``words``, ``tokens``, ``token_to_word`` and ``example.keywords``).
        level: "word" or "token".
        key: Indices at ``level``, or strings (words/keywords to match case-insensitively, punctuation
            ignored; a multi-word keyword marks each of its words). ``None``: the example's keywords.

    Returns:
        A set of indices into the labels at ``level``.
    """
    if key is None:
        example = getattr(attr, "example", None)
        key = tuple(getattr(example, "keywords", ()) or ())
    key = list(key)
    ints = {int(k) for k in key if isinstance(k, (int, np.integer))}
    strings = [str(k) for k in key if not isinstance(k, (int, np.integer))]
    if not strings:
        return ints
    words = [str(w) for w in (getattr(attr, "words", None) or [])]
    wanted: set[str] = set()
    for s in strings:
        wanted.update(_norm_word(part) for part in s.split())
    wanted.discard("")
    word_hits = {i for i, w in enumerate(words) if _norm_word(w) in wanted}
    if level == "word":
        return ints | word_hits
    t2w = getattr(attr, "token_to_word", None)
    if t2w is not None and words:
        return ints | {i for i, w in enumerate(np.asarray(t2w).reshape(-1).tolist()) if int(w) in word_hits}
    tokens = [visible(t) for t in (getattr(attr, "tokens", None) or [])]
    return ints | {i for i, t in enumerate(tokens) if _norm_word(t) in wanted}


def wrap_grid(labels: Sequence[str], values: np.ndarray, width: int) -> tuple[np.ndarray, list[list[str]]]:
    """Lay a long 1-D token sequence out as lines of ``width`` cells (NaN-padded).

    Returns:
        ``(grid, text)``: grid of shape ``(n_lines, width)``, text as a list of lines (padded with "").
    """
    n = len(labels)
    width = max(1, min(width, max(n, 1)))
    n_lines = max(1, -(-n // width))
    grid = np.full((n_lines, width), np.nan)
    text = [["" for _ in range(width)] for _ in range(n_lines)]
    for i in range(n):
        grid[i // width, i % width] = values[i]
        text[i // width][i % width] = labels[i]
    return grid, text


def symmetric_limit(*arrays: np.ndarray) -> float:
    """``max |x|`` over the finite entries of all arrays (1.0 when there are none or all are zero)."""
    vals = [np.abs(a[np.isfinite(a)]).max() for a in arrays if np.isfinite(a).any()]
    m = float(max(vals)) if vals else 0.0
    return m if m > 0 else 1.0


def to_shares(scores: np.ndarray) -> np.ndarray:
    """Scores divided by the sum of their absolute values (so models on different scales compare)."""
    total = float(np.abs(scores[np.isfinite(scores)]).sum())
    return scores / total if total > 0 else scores.copy()
