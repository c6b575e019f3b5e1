"""The results of prompt attribution: :class:`Attribution` and the before/after :class:`AttributionDiff`.

Both save and load through :class:`~unpact._result.SavedResult` (one ``.npz`` bundle, exact round trip).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from unpact._result import SavedResult, fields_dict
from unpact.data import Example, InputError
from unpact.provenance import Provenance

logger = logging.getLogger(__name__)

__all__ = ["Attribution", "AttributionDiff", "diff"]


def _shares(scores: np.ndarray) -> np.ndarray:
    pos = np.clip(np.asarray(scores, dtype=np.float64), 0.0, None)
    total = pos.sum()
    return pos / total if total > 0 else np.zeros_like(pos)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of each score, 0 = largest (ties broken by position)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


@dataclass
class Attribution(SavedResult):
    """Attribution of one example's answer to its prompt tokens.

    Attributes:
        example: The attributed example.
        tokens: ``n_prompt`` decoded prompt tokens (BOS excluded).
        token_ids: ``(n_prompt,)`` their ids.
        token_scores: ``(n_prompt,)`` contribution of each prompt token to the target.
        words: ``n_words`` prompt words (see :mod:`unpact.words`).
        word_scores: ``(n_words,)`` summed token scores per word.
        token_to_word: ``(n_prompt,)`` index into ``words`` of each token (``-1``: none).
        answer_tokens: ``n_answer`` decoded answer tokens.
        answer_ids: ``(n_answer,)`` their ids.
        method: ``"ig"`` or ``"loo"``.
        target: ``"mean"`` or ``"sum"`` of the answer-token log-probabilities.
        value: ``F(x)``, the target on the real prompt.
        baseline_value: IG: ``F(x')`` on the baseline; ``None`` for leave-one-out.
        completeness_error: IG: ``sum(token_scores) - (F(x) - F(x'))``; ``None`` for leave-one-out.
        matrix: ``(n_answer, n_prompt)`` per-answer-token attributions, or ``None``.
        provenance: Model, weights hash, method and arguments.
    """

    example: Example
    tokens: list[str]
    token_ids: np.ndarray
    token_scores: np.ndarray
    words: list[str]
    word_scores: np.ndarray
    token_to_word: np.ndarray
    answer_tokens: list[str]
    answer_ids: np.ndarray
    method: str
    target: str
    value: float
    baseline_value: float | None = None
    completeness_error: float | None = None
    matrix: np.ndarray | None = None
    provenance: Provenance | None = None

    @property
    def relative_completeness_error(self) -> float | None:
        """``|completeness_error| / |F(x) - F(x')|`` (IG only)."""
        if self.completeness_error is None or self.baseline_value is None:
            return None
        gap = abs(self.value - self.baseline_value)
        return abs(self.completeness_error) / gap if gap > 0 else float("inf")

    def word_shares(self) -> np.ndarray:
        """``(n_words,)`` positive word contributions normalised to sum to 1 (all zero if none is positive)."""
        return _shares(self.word_scores)

    def token_shares(self) -> np.ndarray:
        """``(n_prompt,)`` positive token contributions normalised to sum to 1."""
        return _shares(self.token_scores)

    def top_words(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` words with the largest scores, as ``(word, score)``."""
        order = np.argsort(-self.word_scores, kind="stable")[:k]
        return [(self.words[i], float(self.word_scores[i])) for i in order]

    def diff(self, other: Attribution) -> AttributionDiff:
        """Change from this attribution to ``other`` on the same example (e.g. base -> unlearned)."""
        return diff(self, other)

    def _repr_html_(self) -> str:
        """Jupyter rendering: the prompt's words coloured by score (escaped)."""
        from unpact._html import result_html, tokens_html

        fields = {"method": self.method, "answer": self.example.answer, "F(x)": self.value}
        if self.completeness_error is not None:
            fields["completeness error"] = self.completeness_error
        if self.provenance is not None:
            fields["model"] = self.provenance.model
        return result_html(
            f"Attribution of example {self.example.id}", fields, tokens_html(self.words, self.word_scores)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (scores as lists)."""
        return {
            "example": self.example.to_dict(),
            "method": self.method,
            "target": self.target,
            "tokens": list(self.tokens),
            "token_scores": [float(x) for x in self.token_scores],
            "words": list(self.words),
            "word_scores": [float(x) for x in self.word_scores],
            "word_shares": [float(x) for x in self.word_shares()],
            "token_to_word": [int(x) for x in self.token_to_word],
            "answer_tokens": list(self.answer_tokens),
            "value": self.value,
            "baseline_value": self.baseline_value,
            "completeness_error": self.completeness_error,
            "matrix": None if self.matrix is None else self.matrix.tolist(),
            "provenance": None if self.provenance is None else self.provenance.to_dict(),
        }


@dataclass
class AttributionDiff(SavedResult):
    """Change of one example's attribution between two models (``before`` -> ``after``).

    All changes are ``after - before``; ranks count from 0 = largest score.

    Attributes:
        example: The example (same prompt and answer on both sides).
        tokens: ``n_prompt`` prompt tokens; ``words``: ``n_words`` prompt words.
        before_model, after_model: The two models' names.
        token_before, token_after, token_delta: ``(n_prompt,)`` scores and their change.
        word_before, word_after, word_delta: ``(n_words,)`` scores and their change.
        token_share_before, token_share_after, token_share_delta: ``(n_prompt,)`` normalised positive shares.
        word_share_before, word_share_after, word_share_delta: ``(n_words,)`` normalised positive shares.
        word_rank_before, word_rank_after, word_rank_change: ``(n_words,)`` ranks and their change
            (positive: the word fell in importance).
        token_rank_before, token_rank_after, token_rank_change: ``(n_prompt,)`` likewise per token.
        value_before, value_after: ``F(x)`` on each model.
    """

    example: Example
    tokens: list[str]
    words: list[str]
    before_model: str
    after_model: str
    token_before: np.ndarray
    token_after: np.ndarray
    word_before: np.ndarray
    word_after: np.ndarray
    value_before: float
    value_after: float
    token_delta: np.ndarray = field(init=False)
    word_delta: np.ndarray = field(init=False)
    token_share_before: np.ndarray = field(init=False)
    token_share_after: np.ndarray = field(init=False)
    token_share_delta: np.ndarray = field(init=False)
    word_share_before: np.ndarray = field(init=False)
    word_share_after: np.ndarray = field(init=False)
    word_share_delta: np.ndarray = field(init=False)
    token_rank_before: np.ndarray = field(init=False)
    token_rank_after: np.ndarray = field(init=False)
    token_rank_change: np.ndarray = field(init=False)
    word_rank_before: np.ndarray = field(init=False)
    word_rank_after: np.ndarray = field(init=False)
    word_rank_change: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.token_delta = self.token_after - self.token_before
        self.word_delta = self.word_after - self.word_before
        self.token_share_before, self.token_share_after = _shares(self.token_before), _shares(self.token_after)
        self.token_share_delta = self.token_share_after - self.token_share_before
        self.word_share_before, self.word_share_after = _shares(self.word_before), _shares(self.word_after)
        self.word_share_delta = self.word_share_after - self.word_share_before
        self.token_rank_before, self.token_rank_after = _ranks(self.token_before), _ranks(self.token_after)
        self.token_rank_change = self.token_rank_after - self.token_rank_before
        self.word_rank_before, self.word_rank_after = _ranks(self.word_before), _ranks(self.word_after)
        self.word_rank_change = self.word_rank_after - self.word_rank_before

    def largest_drops(self, k: int = 5, *, by: Literal["share", "score"] = "share") -> list[tuple[str, float]]:
        """Up to ``k`` words whose share (or score) fell the most, as ``(word, change)``; only words that fell."""
        delta = self.word_share_delta if by == "share" else self.word_delta
        order = np.argsort(delta, kind="stable")[:k]
        return [(self.words[i], float(delta[i])) for i in order if delta[i] < 0]

    def _repr_html_(self) -> str:
        """Jupyter rendering: word shares before, after, and their change (escaped)."""
        from unpact._html import result_html, tokens_html

        body = (
            tokens_html(self.words, self.word_share_before, title=f"before: {self.before_model}")
            + tokens_html(self.words, self.word_share_after, title=f"after: {self.after_model}")
            + tokens_html(self.words, self.word_share_after - self.word_share_before, title="change of share")
        )
        fields = {"answer": self.example.answer, "F before": self.value_before, "F after": self.value_after}
        return result_html(f"Attribution diff of example {self.example.id}", fields, body)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return fields_dict(self)


def diff(before: Attribution, after: Attribution) -> AttributionDiff:
    """Per-token and per-word change from ``before`` to ``after`` (same example, same tokenizer).

    Raises:
        InputError: If the two attributions are not of the same prompt tokens and answer.
    """
    if not np.array_equal(before.token_ids, after.token_ids) or before.words != after.words:
        raise InputError(
            f"cannot diff attributions of different prompts ({before.example.id!r} vs {after.example.id!r}); "
            "attribute the same example with the same tokenizer on both models"
        )
    if not np.array_equal(before.answer_ids, after.answer_ids):
        raise InputError("the two attributions target different answers; use the same answer on both models")
    if before.method != after.method or before.target != after.target:
        logger.warning("diffing %s/%s against %s/%s", before.method, before.target, after.method, after.target)
    name = lambda a: a.provenance.model if a.provenance else "?"
    return AttributionDiff(
        example=before.example,
        tokens=list(before.tokens),
        words=list(before.words),
        before_model=name(before),
        after_model=name(after),
        token_before=np.asarray(before.token_scores, dtype=np.float64),
        token_after=np.asarray(after.token_scores, dtype=np.float64),
        word_before=np.asarray(before.word_scores, dtype=np.float64),
        word_after=np.asarray(after.word_scores, dtype=np.float64),
        value_before=before.value,
        value_after=after.value,
    )
