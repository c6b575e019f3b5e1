"""Prompt attribution: which prompt tokens make the model give its answer?

Two attributions of the teacher-forced answer log-probability

``LP(x, y) = (1/T) * sum_k log p(y_k | x, y_<k)``  (``target="mean"``; ``"sum"`` drops the ``1/T``)

to the prompt tokens ``x_i``:

* **Integrated gradients** (:func:`integrated_gradients`) on the input embeddings. The output of the
  token-embedding module is interpolated between a baseline ``x'`` and the input ``x`` *at the prompt
  positions only* (BOS and answer tokens, and position embeddings, stay as they are), and
  ``attr_i = (x_i - x'_i) . sum_k w_k dF(x' + alpha_k (x - x'))/dx_i`` with captum's quadrature
  nodes ``alpha_k`` and weights ``w_k`` (``method``: ``"gausslegendre"``, ``"riemann_left"``,
  ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``). One IG run attributes the whole
  multi-token answer (captum's ``LLMGradientAttribution`` runs one IG per answer token). Many examples
  and many alphas share one forward/backward; the model's parameters never require gradients, so
  autograd keeps only what the input gradient needs. Completeness error
  ``sum_i attr_i - (F(x) - F(x'))`` is reported; it shrinks as ``n_steps`` grows.
* **Leave-one-out** (:func:`leave_one_out`), the unPact paper's contribution
  ``C(x_i, y) = LP(x, y) - LP(x without x_i, y)``: each prompt token is deleted in turn (the
  sequence gets one token shorter), and all deletions of a batch of examples run in one forward.

Both return :class:`Attribution` objects: prompt tokens and their scores, the same summed per word
(keywords are words, see :mod:`unpact.words`), optionally the answer-token x prompt-token matrix, and
provenance. :meth:`Attribution.diff` compares the same example on two models (base vs unlearned).

To attribute the model's own generation instead of the gold answer, pass examples whose ``answer``
is the generated text (e.g. from ``unpact.evaluate.generate``).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from unpact._io import load_bundle, save_bundle
from unpact.data import Encoded, Example, InputError, encode, fill_id, load_examples
from unpact.hooks import hooked
from unpact.models import Subject, frozen
from unpact.provenance import Provenance
from unpact.words import group_tokens

logger = logging.getLogger(__name__)

__all__ = [
    "Attribution",
    "AttributionDiff",
    "integrated_gradients",
    "leave_one_out",
    "attribute",
    "diff",
    "ig_nodes",
    "IG_METHODS",
    "BASELINES",
]

Target = Literal["mean", "sum"]
IG_METHODS: tuple[str, ...] = (
    "gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
)
BASELINES: tuple[str, ...] = ("pad", "eos", "bos", "unk", "mask", "zero")
DEFAULT_N_STEPS = 50
# Rows (example x alpha) x tokens per forward when internal_batch_size is not given.
_AUTO_TOKENS_PER_FORWARD = 8192


# ----------------------------------------------------------------------------------------------
# Result objects
# ----------------------------------------------------------------------------------------------
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
class Attribution:
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
        return result_html(f"Attribution of example {self.example.id}", fields, tokens_html(self.words, self.word_scores))

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

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to one ``.npz`` file (lossless; see :func:`unpact._io.save_bundle`)."""
        meta = {
            "example": self.example.to_dict(),
            "tokens": list(self.tokens),
            "words": list(self.words),
            "answer_tokens": list(self.answer_tokens),
            "method": self.method,
            "target": self.target,
            "value": self.value,
            "baseline_value": self.baseline_value,
            "completeness_error": self.completeness_error,
            "provenance": None if self.provenance is None else self.provenance.to_dict(),
        }
        arrays = {
            "token_ids": self.token_ids,
            "token_scores": self.token_scores,
            "word_scores": self.word_scores,
            "token_to_word": self.token_to_word,
            "answer_ids": self.answer_ids,
        }
        if self.matrix is not None:
            arrays["matrix"] = self.matrix
        save_bundle(path, meta, arrays, kind="Attribution")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Attribution:
        """Inverse of :meth:`save`."""
        meta, arrays = load_bundle(path, kind="Attribution")
        prov = meta.get("provenance")
        return cls(
            example=load_examples([meta["example"]])[0],
            tokens=list(meta["tokens"]),
            token_ids=arrays["token_ids"],
            token_scores=arrays["token_scores"],
            words=list(meta["words"]),
            word_scores=arrays["word_scores"],
            token_to_word=arrays["token_to_word"],
            answer_tokens=list(meta["answer_tokens"]),
            answer_ids=arrays["answer_ids"],
            method=meta["method"],
            target=meta["target"],
            value=meta["value"],
            baseline_value=meta["baseline_value"],
            completeness_error=meta["completeness_error"],
            matrix=arrays.get("matrix"),
            provenance=None if prov is None else Provenance.from_dict(prov),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Attribution):
            return NotImplemented
        return _fields_equal(self, other)


def _fields_equal(a: Any, b: Any) -> bool:
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if x is None or y is None or not (x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)):
                return False
        elif x != y:
            return False
    return True


@dataclass
class AttributionDiff:
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

        body = (tokens_html(self.words, self.word_share_before, title=f"before: {self.before_model}")
                + tokens_html(self.words, self.word_share_after, title=f"after: {self.after_model}")
                + tokens_html(self.words, self.word_share_after - self.word_share_before, title="change of share"))
        fields = {"answer": self.example.answer, "F before": self.value_before, "F after": self.value_after}
        return result_html(f"Attribution diff of example {self.example.id}", fields, body)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            out[name] = v.to_dict() if isinstance(v, Example) else v.tolist() if isinstance(v, np.ndarray) else v
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to one ``.npz`` file (derived fields are recomputed on load)."""
        meta = {
            "example": self.example.to_dict(),
            "tokens": list(self.tokens),
            "words": list(self.words),
            "before_model": self.before_model,
            "after_model": self.after_model,
            "value_before": self.value_before,
            "value_after": self.value_after,
        }
        arrays = {k: getattr(self, k) for k in ("token_before", "token_after", "word_before", "word_after")}
        save_bundle(path, meta, arrays, kind="AttributionDiff")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AttributionDiff:
        """Inverse of :meth:`save`."""
        meta, arrays = load_bundle(path, kind="AttributionDiff")
        return cls(
            example=load_examples([meta["example"]])[0],
            tokens=meta["tokens"],
            words=meta["words"],
            before_model=meta["before_model"],
            after_model=meta["after_model"],
            value_before=meta["value_before"],
            value_after=meta["value_after"],
            **arrays,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttributionDiff):
            return NotImplemented
        return _fields_equal(self, other)


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
    name = lambda a: a.provenance.model if a.provenance else "?"  # noqa: E731
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


# ----------------------------------------------------------------------------------------------
# Shared machinery
# ----------------------------------------------------------------------------------------------
def ig_nodes(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes ``alphas`` and weights ``(n_steps,)`` of captum's IG ``method``.

    Raises:
        ValueError: Unknown method or ``n_steps < 1``.
    """
    if method not in IG_METHODS:
        raise ValueError(f"unknown IG method {method!r}; choose from {list(IG_METHODS)}")
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes_fn, alphas_fn = approximation_parameters(method)
    return np.asarray(alphas_fn(n_steps), dtype=np.float64), np.asarray(step_sizes_fn(n_steps), dtype=np.float64)


def _encode_all(subject: Subject, examples: Sequence[Example]) -> list[Encoded]:
    if subject.tokenizer is None:
        raise InputError("this Subject has no tokenizer; load the model with its tokenizer")
    if isinstance(examples, Example):
        raise TypeError("pass a list of examples (use attribute() for a single one)")
    if not examples:
        raise InputError("no examples given")
    out = []
    for ex in examples:
        if not isinstance(ex, Example):
            raise TypeError(f"expected unpact.data.Example, got {type(ex).__name__}; build them with load_examples")
        enc = encode(subject.tokenizer, ex, max_length=subject.n_ctx)
        if enc.prompt_span[1] <= enc.prompt_span[0]:
            raise InputError(f"example {ex.id!r}: the prompt has no tokens to attribute")
        out.append(enc)
    return out


def _pad_rows(seqs: Sequence[torch.Tensor], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), fill, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def _answer_index(spans: Sequence[tuple[int, int]], ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions that predict answer tokens, the answer ids and a validity mask, each ``(rows, T_max)``."""
    t_max = max(b - a for a, b in spans)
    pos = torch.zeros((len(spans), t_max), dtype=torch.long)
    valid = torch.zeros((len(spans), t_max), dtype=torch.bool)
    for r, (a, b) in enumerate(spans):
        pos[r, : b - a] = torch.arange(a - 1, b - 1)
        valid[r, : b - a] = True
    tgt = ids.gather(1, (pos + 1).clamp(max=ids.shape[1] - 1))
    return pos, tgt, valid


def _supports_logits_to_keep(subject: Subject) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(subject.model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _answer_logprobs(
    subject: Subject,
    ids: torch.Tensor,
    mask: torch.Tensor,
    pos: torch.Tensor,
    tgt: torch.Tensor,
    embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Teacher-forced log-probabilities of the answer tokens.

    Only the answer positions go through the unembedding (the model's own head runs on one
    position when it supports ``logits_to_keep``), which saves most of the vocabulary projection.

    Args:
        subject: The model.
        ids: ``(rows, seq)`` token ids.
        mask: ``(rows, seq)`` attention mask.
        pos: ``(rows, T)`` positions predicting each answer token.
        tgt: ``(rows, T)`` answer token ids.
        embeds: Optional ``(rows, seq, d_model)`` replacement for the token-embedding output.

    Returns:
        ``(rows, T)`` float32 log-probabilities (entries past an answer's length are meaningless).
    """
    hooks = {"embed": (lambda t, hook: embeds)} if embeds is not None else {}
    kw: dict[str, Any] = {"logits_to_keep": 1} if _supports_logits_to_keep(subject) else {}
    dev = subject.device
    with hooked(subject, hooks, cache=["final"], detach=False) as cache:
        subject.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False, **kw)
    h = cache["final"]
    sel = h.gather(1, pos.to(dev)[..., None].expand(-1, -1, h.shape[-1]))
    logits = subject.decode_resid(sel).float()
    return torch.log_softmax(logits, dim=-1).gather(-1, tgt.to(dev)[..., None]).squeeze(-1)


def _reduce(lp: torch.Tensor, valid: torch.Tensor, target: str) -> torch.Tensor:
    """``(rows, T)`` -> ``(rows,)`` mean or sum over the valid answer tokens."""
    v = valid.to(lp.device)
    s = (lp * v).sum(-1)
    return s / v.sum(-1) if target == "mean" else s


def _check_target(target: str) -> None:
    if target not in ("mean", "sum"):
        raise ValueError(f"target must be 'mean' or 'sum', got {target!r}")


def _baseline_token(subject: Subject, baseline: str | int) -> int | None:
    """Token id for a baseline name (``None`` for the zero embedding)."""
    if isinstance(baseline, (int, np.integer)) and not isinstance(baseline, bool):
        if not 0 <= int(baseline) < subject.vocab_size:
            raise ValueError(f"baseline token id {baseline} is outside the vocabulary (0..{subject.vocab_size - 1})")
        return int(baseline)
    if baseline == "zero":
        return None
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose from {list(BASELINES)} or pass a token id")
    tok = subject.tokenizer
    value = getattr(tok, f"{baseline}_token_id", None)
    if value is None and baseline == "pad":
        # The default baseline on a tokenizer with no pad token (GPT-2, Llama): eos, then unk, then zeros.
        for alt in ("eos", "unk"):
            alt_id = getattr(tok, f"{alt}_token_id", None)
            if alt_id is not None:
                logger.warning("the tokenizer has no pad token; using the %s token as the IG baseline", alt)
                return int(alt_id)
        logger.warning("the tokenizer has no pad, eos or unk token; using the zero embedding as the IG baseline")
        return None
    if value is None:
        have = [b for b in BASELINES[:-1] if getattr(tok, f"{b}_token_id", None) is not None]
        raise ValueError(
            f"the tokenizer has no {baseline} token; use one of {have + ['zero']} or pass a token id as baseline"
        )
    return int(value)


def _decode_each(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([int(i)]) for i in ids]


def _make_result(
    subject: Subject,
    ex: Example,
    enc: Encoded,
    scores: np.ndarray,
    *,
    method: str,
    target: str,
    value: float,
    baseline_value: float | None,
    matrix: np.ndarray | None,
    provenance: Provenance,
) -> Attribution:
    tok = subject.tokenizer
    p0, p1 = enc.prompt_span
    prompt_ids = enc.input_ids[: enc.answer_span[0]].tolist()
    try:
        words, t2w = group_tokens(tok, ex.prompt, prompt_ids, positions=range(p0, p1))
    except Exception as exc:  # noqa: BLE001 - word grouping is a convenience; never lose the scores
        logger.warning("example %s: could not group tokens into words (%s); one word per token", ex.id, exc)
        words, t2w = _decode_each(tok, prompt_ids[p0:p1]), np.arange(p1 - p0, dtype=np.int64)
    word_scores = np.zeros(len(words), dtype=np.float64)
    np.add.at(word_scores, t2w[t2w >= 0], scores[t2w >= 0])
    completeness = None
    if baseline_value is not None:
        completeness = float(scores.sum() - (value - baseline_value))
    return Attribution(
        example=ex,
        tokens=_decode_each(tok, prompt_ids[p0:p1]),
        token_ids=np.asarray(prompt_ids[p0:p1], dtype=np.int64),
        token_scores=scores,
        words=words,
        word_scores=word_scores,
        token_to_word=t2w,
        answer_tokens=_decode_each(tok, enc.answer_ids.tolist()),
        answer_ids=enc.answer_ids.numpy().astype(np.int64),
        method=method,
        target=target,
        value=float(value),
        baseline_value=None if baseline_value is None else float(baseline_value),
        completeness_error=completeness,
        matrix=matrix,
        provenance=provenance,
    )


def _progress(iterable: Any, enabled: bool, desc: str, total: int | None = None) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


# ----------------------------------------------------------------------------------------------
# Integrated gradients
# ----------------------------------------------------------------------------------------------
def integrated_gradients(
    subject: Subject,
    examples: Sequence[Example],
    *,
    n_steps: int = DEFAULT_N_STEPS,
    method: str = "gausslegendre",
    baseline: str | int = "pad",
    target: Target = "mean",
    internal_batch_size: int | None = None,
    batch_size: int = 16,
    per_answer_token: bool = False,
    progress: bool = False,
) -> list[Attribution]:
    """Integrated gradients of the answer log-probability w.r.t. the prompt token embeddings.

    Args:
        subject: The model (its weights, mode and grad flags are left as they were).
        examples: Examples to attribute; their answers are teacher-forced.
        n_steps: Number of quadrature nodes (captum's ``n_steps``).
        method: ``"gausslegendre"`` (default, converges fastest) or ``"riemann_{left,right,middle,trapezoid}"``.
        baseline: What replaces each prompt token at ``alpha = 0``: ``"pad"``, ``"eos"``, ``"bos"``,
            ``"unk"``, ``"mask"`` (the tokenizer's token of that name), ``"zero"`` (zero embedding)
            or a token id.
        target: ``"mean"`` (unPact's ``LP``) or ``"sum"`` of the answer tokens' log-probabilities.
        internal_batch_size: Rows (example x alpha) per forward pass; default: about 8,192 tokens
            per forward. Smaller values save memory, results are the same.
        batch_size: Examples encoded and padded together.
        per_answer_token: Also compute the ``(n_answer, n_prompt)`` matrix (one extra backward per
            answer token on the same forward). ``token_scores`` then equal its mean (or sum) over rows.
        progress: Show a progress bar.

    Returns:
        One :class:`Attribution` per example, in order.

    Raises:
        ValueError: Unknown method, baseline or target, or bad step / batch sizes.
        InputError: Malformed examples (empty prompt, too long for the model, ...).
    """
    _check_target(target)
    alphas_np, weights_np = ig_nodes(method, n_steps)
    if internal_batch_size is not None and internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    base_tok = _baseline_token(subject, baseline)
    encoded = _encode_all(subject, examples)
    prov = Provenance.of(
        subject, "integrated_gradients", n_steps=n_steps, ig_method=method, baseline=baseline, target=target,
        per_answer_token=per_answer_token,
    )
    results: list[Attribution] = []
    with frozen(subject.model):
        starts = range(0, len(encoded), batch_size)
        for s in _progress(starts, progress, "integrated gradients", total=len(starts)):
            chunk = list(zip(examples[s : s + batch_size], encoded[s : s + batch_size]))
            results.extend(
                _ig_batch(subject, chunk, alphas_np, weights_np, base_tok, target, internal_batch_size,
                          per_answer_token, prov)
            )
    return results


def _ig_batch(
    subject: Subject,
    chunk: list[tuple[Example, Encoded]],
    alphas_np: np.ndarray,
    weights_np: np.ndarray,
    base_tok: int | None,
    target: str,
    internal_batch_size: int | None,
    per_answer_token: bool,
    prov: Provenance,
) -> list[Attribution]:
    dev = subject.device
    encs = [e for _, e in chunk]
    ids, mask = _pad_rows([e.input_ids for e in encs], fill_id(subject.tokenizer))
    n_ex, seq = ids.shape
    prompt_mask = torch.zeros((n_ex, seq), dtype=torch.bool)
    for i, e in enumerate(encs):
        prompt_mask[i, e.prompt_span[0] : e.prompt_span[1]] = True
    pos, tgt, valid = _answer_index([e.answer_span for e in encs], ids)
    t_max = pos.shape[1]
    with torch.no_grad():
        x_emb = subject.embed(ids.to(dev))  # (n_ex, seq, d)
        if base_tok is None:
            b_emb = torch.where(prompt_mask.to(dev)[..., None], torch.zeros_like(x_emb), x_emb)
        else:
            b_emb = subject.embed(torch.where(prompt_mask, base_tok, ids).to(dev))
        delta = x_emb - b_emb  # zero outside the prompt positions
        # F(x) and F(x') in one forward.
        two = torch.cat([x_emb, b_emb])
        lp2 = _answer_logprobs(subject, ids.repeat(2, 1), mask.repeat(2, 1), pos.repeat(2, 1), tgt.repeat(2, 1), two)
        f2 = _reduce(lp2, valid.repeat(2, 1), target).double().cpu()
    f_x, f_b = f2[:n_ex], f2[n_ex:]

    n_steps = len(alphas_np)
    alphas = torch.tensor(alphas_np, dtype=x_emb.dtype, device=dev)
    weights = torch.tensor(weights_np, dtype=torch.float64)
    rows_per_forward = internal_batch_size or max(1, _AUTO_TOKENS_PER_FORWARD // seq)
    # Accumulators: (n_ex, seq) for the target, (n_ex, T, seq) for the matrix.
    acc = torch.zeros((n_ex, seq), dtype=torch.float64)
    acc_m = torch.zeros((n_ex, t_max, seq), dtype=torch.float64) if per_answer_token else None
    n_rows = n_ex * n_steps
    for r0 in range(0, n_rows, rows_per_forward):
        r = torch.arange(r0, min(n_rows, r0 + rows_per_forward))
        ex_i, st_i = r // n_steps, r % n_steps
        a = alphas[st_i.to(dev)][:, None, None]
        z = (b_emb[ex_i] + a * delta[ex_i]).detach().requires_grad_(True)  # (rows, seq, d)
        with torch.enable_grad():
            lp = _answer_logprobs(subject, ids[ex_i], mask[ex_i], pos[ex_i], tgt[ex_i], z)  # (rows, T)
            w = weights[st_i].to(device=dev, dtype=lp.dtype)
            v = valid[ex_i].to(dev)
            if acc_m is not None:
                for k in range(t_max):
                    (g,) = torch.autograd.grad((lp[:, k] * v[:, k] * w).sum(), z, retain_graph=k < t_max - 1)
                    contrib = (g * delta[ex_i]).sum(-1).double().cpu() * v[:, k, None].cpu()
                    acc_m[:, k].index_add_(0, ex_i, contrib)
            else:
                f = _reduce(lp, v, target)
                (g,) = torch.autograd.grad((f * w).sum(), z)
                acc.index_add_(0, ex_i, (g * delta[ex_i]).sum(-1).double().cpu())
        del z, lp
    results = []
    for i, (ex, enc) in enumerate(chunk):
        p0, p1 = enc.prompt_span
        n_ans = enc.answer_span[1] - enc.answer_span[0]
        matrix = None
        if acc_m is not None:
            m = acc_m[i, :n_ans, p0:p1]
            matrix = m.numpy()
            tok_scores = (m.mean(0) if target == "mean" else m.sum(0)).numpy()
        else:
            tok_scores = acc[i, p0:p1].numpy()
        results.append(
            _make_result(subject, ex, enc, tok_scores, method="ig", target=target, value=float(f_x[i]),
                         baseline_value=float(f_b[i]), matrix=matrix, provenance=prov)
        )
    return results


# ----------------------------------------------------------------------------------------------
# Leave-one-out
# ----------------------------------------------------------------------------------------------
def leave_one_out(
    subject: Subject,
    examples: Sequence[Example],
    *,
    target: Target = "mean",
    batch_size: int = 64,
    per_answer_token: bool = False,
    progress: bool = False,
) -> list[Attribution]:
    """unPact's contribution ``C(x_i, y) = LP(x, y) - LP(x without x_i, y)`` of each prompt token.

    For each example, the full sequence and every sequence with one prompt token deleted are
    scored teacher-forced; all rows of all examples are batched (``batch_size`` rows per forward).

    Args:
        subject: The model.
        examples: Examples to attribute.
        target: ``"mean"`` (the paper's ``LP``) or ``"sum"`` of answer-token log-probabilities.
        batch_size: Sequences per forward pass.
        per_answer_token: Also keep the ``(n_answer, n_prompt)`` matrix of per-token log-prob drops.
        progress: Show a progress bar.

    Returns:
        One :class:`Attribution` per example (``completeness_error`` and ``baseline_value`` are ``None``).
    """
    _check_target(target)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoded = _encode_all(subject, examples)
    for ex, enc in zip(examples, encoded):
        if enc.answer_span[0] < 2:
            raise InputError(
                f"example {ex.id!r}: the prompt is a single token and the tokenizer adds no BOS, so removing it "
                "leaves nothing to condition on; use a longer prompt or integrated gradients"
            )
    prov = Provenance.of(subject, "leave_one_out", target=target, per_answer_token=per_answer_token)
    # One row per (example, removed position); position -1 = nothing removed.
    rows: list[tuple[int, int]] = []
    for i, e in enumerate(encoded):
        rows.append((i, -1))
        rows.extend((i, p) for p in range(*e.prompt_span))
    lps: list[torch.Tensor] = []
    fill = fill_id(subject.tokenizer)
    with frozen(subject.model), torch.no_grad():
        starts = range(0, len(rows), batch_size)
        for s in _progress(starts, progress, "leave-one-out", total=len(starts)):
            seqs, spans = [], []
            for i, p in rows[s : s + batch_size]:
                e = encoded[i]
                a, b = e.answer_span
                if p < 0:
                    seqs.append(e.input_ids)
                    spans.append((a, b))
                else:
                    seqs.append(torch.cat([e.input_ids[:p], e.input_ids[p + 1 :]]))
                    spans.append((a - 1, b - 1))
            ids, mask = _pad_rows(seqs, fill)
            pos, tgt, valid = _answer_index(spans, ids)
            lp = _answer_logprobs(subject, ids, mask, pos, tgt).double().cpu()
            lp = torch.where(valid, lp, torch.zeros_like(lp))
            lps.extend(lp[j, : int(valid[j].sum())] for j in range(len(seqs)))
    results = []
    k = 0
    for ex, enc in zip(examples, encoded):
        n_p = enc.prompt_span[1] - enc.prompt_span[0]
        full = lps[k]
        reduced = torch.stack(lps[k + 1 : k + 1 + n_p])  # (n_prompt, T)
        k += 1 + n_p
        red = (lambda t: t.mean(-1)) if target == "mean" else (lambda t: t.sum(-1))
        scores = (red(full) - red(reduced)).numpy()
        matrix = (full[None, :] - reduced).T.numpy() if per_answer_token else None
        results.append(
            _make_result(subject, ex, enc, scores, method="loo", target=target, value=float(red(full)),
                         baseline_value=None, matrix=matrix, provenance=prov)
        )
    return results


def attribute(subject: Subject, example: Example, method: Literal["ig", "loo"] = "ig", **kw: Any) -> Attribution:
    """Attribute one example with integrated gradients (``"ig"``) or leave-one-out (``"loo"``).

    Keyword arguments go to :func:`integrated_gradients` or :func:`leave_one_out`; since ``method``
    names the attribution here, IG's quadrature rule is passed as ``ig_method``.
    """
    if method == "ig":
        if "ig_method" in kw:
            kw["method"] = kw.pop("ig_method")
        return integrated_gradients(subject, [example], **kw)[0]
    if method == "loo":
        return leave_one_out(subject, [example], **kw)[0]
    raise ValueError(f"unknown attribution method {method!r}; choose 'ig' or 'loo'")


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|`` (helper for tests and benches)."""
    scale = float(np.abs(b).max()) or 1.0
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) / scale if len(b) else 0.0

