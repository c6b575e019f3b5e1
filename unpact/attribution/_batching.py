"""Machinery shared by integrated gradients and leave-one-out.

Encoding examples (with the checks both techniques need), padding them into batches, the
teacher-forced answer log-probabilities ``log p(y_k | x, y_<k)`` both attribute (from
:func:`unpact.forward.answer_logprobs`, the one forward path), and turning one
example's prompt-token scores into an :class:`~unpact.attribution.results.Attribution`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from unpact.attribution.results import Attribution
from unpact.data import Encoded, Example
from unpact.errors import InputError, check_items
from unpact.forward import answer_logprobs as answer_logprobs
from unpact.models import Subject
from unpact.provenance import Provenance
from unpact.words import group_tokens

logger = logging.getLogger(__name__)

Target = Literal["mean", "sum"]


def encode_all(subject: Subject, examples: Sequence[Example]) -> list[Encoded]:
    """Encode each example, checking there is a tokenizer and a prompt token to attribute.

    Raises:
        InputError: No tokenizer, one Example instead of a list, something else than Examples, no
            examples, or an example whose prompt has no tokens.
    """
    if subject.tokenizer is None:
        raise InputError("this Subject has no tokenizer; load the model with its tokenizer")
    examples = check_items(
        "examples",
        examples,
        Example,
        where="attribution",
        fix="pass a list of examples (use attribute() for a single one; load_examples builds them)",
    )
    if not examples:
        raise InputError("no examples given")
    out = []
    for ex in examples:
        enc = subject.encode(ex)
        if enc.prompt_span[1] <= enc.prompt_span[0]:
            raise InputError(f"example {ex.id!r}: the prompt has no tokens to attribute")
        out.append(enc)
    return out


def pad_rows(seqs: Sequence[torch.Tensor], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``(seq_i,)`` id rows with ``fill`` into ``(rows, seq_max)`` ids and attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), fill, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def answer_index(
    spans: Sequence[tuple[int, int]], ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions that predict answer tokens, the answer ids and a validity mask, each ``(rows, T_max)``."""
    t_max = max(b - a for a, b in spans)
    pos = torch.zeros((len(spans), t_max), dtype=torch.long)
    valid = torch.zeros((len(spans), t_max), dtype=torch.bool)
    for r, (a, b) in enumerate(spans):
        pos[r, : b - a] = torch.arange(a - 1, b - 1)
        valid[r, : b - a] = True
    tgt = ids.gather(1, (pos + 1).clamp(max=ids.shape[1] - 1))
    return pos, tgt, valid


def reduce_answer(lp: torch.Tensor, valid: torch.Tensor, target: str) -> torch.Tensor:
    """``(rows, T)`` -> ``(rows,)`` mean or sum over the valid answer tokens."""
    v = valid.to(lp.device)
    s = (lp * v).sum(-1)
    return s / v.sum(-1) if target == "mean" else s


def check_target(target: str) -> None:
    """Raise :class:`InputError` (a ``ValueError``) unless ``target`` is ``"mean"`` or ``"sum"``."""
    if target not in ("mean", "sum"):
        raise InputError(f"target must be 'mean' or 'sum', got {target!r}", source="target")


def decode_each(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each id decoded on its own."""
    return [tokenizer.decode([int(i)]) for i in ids]


def make_result(
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
    """The :class:`Attribution` of one example from its ``(n_prompt,)`` token ``scores`` (words grouped here)."""
    tok = subject.tokenizer
    p0, p1 = enc.prompt_span
    prompt_ids = enc.input_ids[: enc.answer_span[0]].tolist()
    try:
        words, t2w = group_tokens(tok, ex.prompt, prompt_ids, positions=range(p0, p1), spans=enc.question_chars)
    except Exception as exc:
        logger.warning("example %s: could not group tokens into words (%s); one word per token", ex.id, exc)
        words, t2w = decode_each(tok, prompt_ids[p0:p1]), np.arange(p1 - p0, dtype=np.int64)
    word_scores = np.zeros(len(words), dtype=np.float64)
    np.add.at(word_scores, t2w[t2w >= 0], scores[t2w >= 0])
    completeness = None
    if baseline_value is not None:
        completeness = float(scores.sum() - (value - baseline_value))
    return Attribution(
        example=ex,
        tokens=decode_each(tok, prompt_ids[p0:p1]),
        token_ids=np.asarray(prompt_ids[p0:p1], dtype=np.int64),
        token_scores=scores,
        words=words,
        word_scores=word_scores,
        token_to_word=t2w,
        answer_tokens=decode_each(tok, enc.answer_ids.tolist()),
        answer_ids=enc.answer_ids.numpy().astype(np.int64),
        method=method,
        target=target,
        value=float(value),
        baseline_value=None if baseline_value is None else float(baseline_value),
        completeness_error=completeness,
        matrix=matrix,
        provenance=provenance,
    )


def progress_bar(iterable: Any, enabled: bool, desc: str, total: int | None = None) -> Any:
    """``iterable`` wrapped in a tqdm bar when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|`` (helper for tests and benches)."""
    scale = float(np.abs(b).max()) or 1.0
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) / scale if len(b) else 0.0
