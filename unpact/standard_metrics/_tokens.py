"""Per-token log-probabilities and next-token distribution statistics of items, one forward pass per batch.

The membership-inference scores need, per scored token ``x_t``, ``log p(x_t | x_<t)`` and the mean and
standard deviation of ``log p(z | x_<t)`` under the model's own next-token distribution (Min-K%++).
:func:`unpact.forward.answer_logprobs` gives the first; the final-normed residual it computes on the way
(read by a hook at the ``final`` site, inside the same pass) gives the second through
:meth:`unpact.models.Subject.decode_resid`, the model's own logit map. Items are encoded by
:meth:`unpact.models.Subject.encode` (the model's prompt format, the exact answer span) and laid out by
:func:`unpact.forward.pack`, as every other pass of unpact does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from unpact.data import Example, fill_id
from unpact.errors import InputError, check_items, check_positive
from unpact.forward import answer_logprobs, pack
from unpact.models import Subject, frozen

__all__ = ["TokenScores", "next_token_stats", "token_scores", "Tokens"]

Tokens = Literal["answer", "full"]


@dataclass(frozen=True)
class TokenScores:
    """What the MIA scores of one item are computed from.

    Attributes:
        logprobs: ``(T,)`` ``log p(x_t | x_<t)`` of each scored token.
        mu: ``(T,)`` ``E_z[log p(z | x_<t)]`` under the model's next-token distribution.
        sigma: ``(T,)`` its standard deviation (variance clamped at ``1e-6``, as open-unlearning does).
        text: The scored tokens decoded (special tokens dropped): the text zlib compresses.
    """

    logprobs: NDArray[np.float64]
    mu: NDArray[np.float64]
    sigma: NDArray[np.float64]
    text: str


def next_token_stats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target log-probabilities and the mean / std of the log-probability under the predicted distribution.

    ``mu_t = sum_z p(z) log p(z)``, ``sigma_t = sqrt(max(sum_z p(z) log p(z)^2 - mu_t^2, 1e-6))`` (Min-K%++,
    Zhang et al. 2024; the clamp is open-unlearning's). Tokens with probability 0 add 0.

    Args:
        logits: ``(..., T, vocab)`` next-token logits.
        targets: ``(..., T)`` the tokens that followed.

    Returns:
        ``(logprobs, mu, sigma)``, each ``(..., T)`` float32 (float64 if ``logits`` is float64).
    """
    lp = torch.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)
    p = lp.exp()
    plp = torch.where(p > 0, p * lp, torch.zeros_like(lp))
    mu = plp.sum(-1)
    var = torch.where(p > 0, plp * lp, torch.zeros_like(lp)).sum(-1) - mu.square()
    target_lp = lp.gather(-1, targets[..., None].to(lp.device)).squeeze(-1)
    return target_lp, mu, var.clamp(min=1e-6).sqrt()


def _columns(
    packed: Any, tokens: Tokens, ids: Sequence[Example]
) -> tuple[torch.Tensor, torch.Tensor, list[int], list[tuple[int, int]]]:
    """``(pos, tgt, lens, spans)``: per row the predicting positions and targets (padded), their number, and
    the ``(start, stop)`` columns of the scored tokens."""
    pw = packed.prompt_width
    spans = []
    for i, (plen, alen) in enumerate(zip(packed.prompt_lens, packed.answer_lens)):
        start = pw if tokens == "answer" else pw - plen + 1  # "full": every token after the first
        stop = pw + alen
        if stop <= start:
            raise InputError(f"item {ids[i].id!r} has no token to score", source="token_scores")
        spans.append((start, stop))
    lens = [b - a for a, b in spans]
    width = max(lens)
    tgt = torch.zeros((len(spans), width), dtype=torch.long)
    pos = torch.zeros((len(spans), width), dtype=torch.long)
    for i, (a, b) in enumerate(spans):
        tgt[i, : b - a] = packed.ids[i, a:b]
        pos[i, : b - a] = torch.arange(a - 1, b - 1)
    return pos, tgt, lens, spans


def token_scores(
    subject: Subject, examples: Sequence[Example], *, tokens: Tokens = "answer", batch_size: int = 16
) -> list[TokenScores]:
    """Per item: the scored tokens' log-probabilities, ``mu``, ``sigma`` and text (one forward pass per batch).

    Args:
        subject: The model (weights, mode and flags are left as they are).
        examples: The items (question + gold answer).
        tokens: ``"answer"``: the answer tokens given the question (open-unlearning's TOFU MIA; the
            toy-world models were trained to predict these, and the end token); ``"full"``: every token of
            the prompt and answer after the first (with a BOS-prepending tokenizer: the whole rendered question
            and answer, MUSE's raw-text setting).
        batch_size: Items per forward pass.

    Returns:
        One :class:`TokenScores` per item, in order.

    Raises:
        InputError: No items, a bad ``tokens`` or ``batch_size``, no tokenizer, or NaN/inf logits.
    """
    items = check_items("examples", examples, Example, where="token_scores")
    if not items:
        raise InputError("no examples given", source="token_scores")
    if tokens not in ("answer", "full"):
        raise InputError(f"tokens must be 'answer' or 'full', got {tokens!r}", source="token_scores")
    check_positive("batch_size", batch_size, where="token_scores")
    tok = subject.tokenizer
    if tok is None:
        raise InputError("the subject has no tokenizer; load the model with its tokenizer", source="token_scores")
    out: list[TokenScores] = []
    final: list[torch.Tensor] = []  # the final-normed residual, read inside answer_logprobs' pass

    def keep(t: torch.Tensor, hook: Any) -> None:
        final.append(t)

    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        encs = [subject.encode(e) for e in chunk]
        packed = pack([e.prompt_ids for e in encs], [e.answer_ids for e in encs], fill_id(tok))
        pos, tgt, lens, spans = _columns(packed, tokens, chunk)
        final.clear()
        with frozen(subject.model), torch.no_grad():
            lps = answer_logprobs(
                subject,
                packed.ids,
                packed.mask,
                pos,
                tgt,
                hooks={"final": keep},
                position_ids=packed.position_ids,
            ).cpu()
            h = final[-1]
            for i, n in enumerate(lens):
                logits = subject.decode_resid(h[i, pos[i, :n].to(h.device)])  # (n, vocab)
                _, mu, sigma = next_token_stats(logits, tgt[i, :n])
                a, b = spans[i]
                out.append(
                    TokenScores(
                        lps[i, :n].double().numpy(),
                        mu.cpu().double().numpy(),
                        sigma.cpu().double().numpy(),
                        tok.decode(packed.ids[i, a:b].tolist(), skip_special_tokens=True).strip(),
                    )
                )
    return out
