"""Leave-one-out: unPact's contribution of each prompt token, ``C(x_i, y) = LP(x, y) - LP(x without x_i, y)``.

Each prompt token is deleted in turn (the sequence gets one token shorter), and all deletions of a
batch of examples run in one forward.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from unpact.attribution._batching import (
    Target,
    answer_index,
    answer_logprobs,
    check_target,
    encode_all,
    make_result,
    pad_rows,
    progress_bar,
)
from unpact.attribution.results import Attribution
from unpact.data import Example, fill_id
from unpact.errors import InputError, check_positive
from unpact.models import Subject, frozen
from unpact.provenance import Provenance

logger = logging.getLogger(__name__)

__all__ = ["leave_one_out"]


_LOO_ARGUMENTS: tuple[str, ...] = ("target", "batch_size", "per_answer_token", "progress")
# Integrated-gradients arguments that mean nothing here: LOO deletes tokens, it does not interpolate.
_IG_ONLY: tuple[str, ...] = ("baseline", "n_steps", "method", "ig_method", "internal_batch_size")


def _refuse(unsupported: dict[str, Any]) -> None:
    """Raise the :class:`InputError` for arguments :func:`leave_one_out` does not take."""
    names = sorted(unsupported)
    fix = f"its arguments are {', '.join(_LOO_ARGUMENTS)}"
    ig = [n for n in names if n in _IG_ONLY]
    if ig:
        why = (
            f"leave-one-out takes no {', '.join(ig)} (integrated-gradients arguments): it has no baseline or "
            "interpolation steps, it deletes each prompt token in turn"
        )
        fix += "; use integrated_gradients (or attribute(..., method='ig')) for a baseline"
    else:
        why = f"leave-one-out takes no argument {', '.join(names)}"
    raise InputError(why, source="leave_one_out", fix=fix)


def leave_one_out(
    subject: Subject,
    examples: Sequence[Example],
    *,
    target: Target = "mean",
    batch_size: int = 64,
    per_answer_token: bool = False,
    progress: bool = False,
    **unsupported: Any,
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
        **unsupported: Refused with an :class:`InputError` that says why (leave-one-out has no
            baseline, steps or quadrature rule: it deletes tokens instead of interpolating).

    Returns:
        One :class:`Attribution` per example (``completeness_error`` and ``baseline_value`` are ``None``).

    Raises:
        InputError: An argument leave-one-out does not take, a bad target or batch size, malformed
            examples, or NaN/inf logits.
    """
    if unsupported:
        _refuse(unsupported)
    check_target(target)
    check_positive("batch_size", batch_size, where="leave_one_out")
    encoded = encode_all(subject, examples)
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
        for s in progress_bar(starts, progress, "leave-one-out", total=len(starts)):
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
            ids, mask = pad_rows(seqs, fill)
            pos, tgt, valid = answer_index(spans, ids)
            lp = answer_logprobs(subject, ids, mask, pos, tgt).double().cpu()
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
            make_result(
                subject,
                ex,
                enc,
                scores,
                method="loo",
                target=target,
                value=float(red(full)),
                baseline_value=None,
                matrix=matrix,
                provenance=prov,
            )
        )
    return results
