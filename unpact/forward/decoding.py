"""Decoding from a prompt pass: greedy or sampled, batched, continuing from the KV cache."""

from __future__ import annotations

import logging

import torch

from unpact.errors import InputError
from unpact.forward.layout import Intervention, _bias_mask, _key_columns, check_bias_window
from unpact.forward.passes import PromptPass, _repeat, _step, prompt_pass
from unpact.models import Subject, check_finite, frozen

logger = logging.getLogger(__name__)

__all__ = ["decode"]


def _pick(logits: torch.Tensor, sample: bool, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """``(rows,)`` next tokens from ``(rows, vocab)`` logits: the argmax, or one draw from softmax(logits / T).

    A draw inverts the cumulative distribution at one uniform number per row (float64): exactly a
    categorical sample, several times faster than ``torch.multinomial`` on CPU.
    """
    if not sample:
        return logits.argmax(-1)
    cdf = torch.softmax(logits.double() / max(temperature, 1e-6), dim=-1).cumsum(-1)
    u = torch.rand((logits.shape[0], 1), generator=generator, dtype=torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=logits.shape[-1] - 1)


def decode(
    subject: Subject,
    start: PromptPass,
    *,
    max_new_tokens: int,
    sample: bool = False,
    temperature: float = 1.0,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    use_cache: bool = True,
    banned_ids: tuple[int, ...] = (),
) -> list[list[int]]:
    """Continue each prompt of a :class:`PromptPass` greedily or by sampling.

    With ``use_cache`` (the default) generation continues from the pass's KV cache (which it
    consumes); ``use_cache=False`` re-runs the whole sequence at every step (the reference the
    cached path is tested against). Rows stop at ``eos_token_id`` (default: the tokenizer's).

    Args:
        subject: The model the pass ran on.
        start: The prompt pass (made with ``keep_cache=True`` for the cached path).
        max_new_tokens: Tokens to generate at most per row.
        sample: Sample from the softmax at ``temperature`` instead of taking the argmax.
        temperature: Sampling temperature.
        num_samples: Continuations per prompt (rows ``i * num_samples ... + num_samples - 1``).
        generator: Generator of the sampling draws (CPU).
        eos_token_id: End token (``None``: the tokenizer's; rows without one run to the limit).
        use_cache: Continue from the cache (``False``: recompute every step).
        banned_ids: Token ids never generated (their logits set to ``-inf`` at every step).

    Returns:
        ``rows * num_samples`` lists of new token ids (the end token excluded). Generation also stops
        when the longest row reaches the model's context length (``subject.n_ctx``).

    Raises:
        InputError: ``use_cache`` with a pass made without ``keep_cache``, or NaN/inf logits.
        ArchitectureError: An attention bias on a sequence longer than the model's sliding window.
    """
    if use_cache and start.cache is None:
        raise InputError(
            "decoding from the cache needs a prompt pass made with keep_cache=True",
            source="decode",
            fix="call prompt_pass(..., keep_cache=True), or decode(..., use_cache=False)",
        )
    eos = eos_token_id if eos_token_id is not None else getattr(subject.tokenizer, "eos_token_id", None)
    packed, iv, n = start.packed, start.intervention, num_samples
    rows = len(packed.prompt_lens) * n
    logits = start.first_logits.repeat_interleave(n, 0)
    new: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    pw = packed.prompt_width
    mask2d = packed.mask[:, :pw].repeat_interleave(n, 0)
    pos = torch.tensor(packed.prompt_lens).repeat_interleave(n)[:, None]
    key_rows: list[int] = []
    key_cols: list[int] = []
    if iv is not None and iv.attn_bias != 0.0:
        kr, key_cols = _key_columns(iv, packed)
        key_rows = [r * n + j for r in kr for j in range(n)]
        key_cols = [c for c in key_cols for _ in range(n)]
    if key_rows:
        check_bias_window(subject, pw + max_new_tokens)
    cache = _repeat(start.cache, n) if use_cache else None
    if use_cache:
        start.cache = None  # consumed: decoding grows it in place
    prompts = [packed.ids[i, pw - packed.prompt_lens[i] : pw] for i in range(len(packed.prompt_lens))]
    n_ctx = subject.n_ctx
    with frozen(subject.model), torch.no_grad():
        for step in range(max_new_tokens):
            if banned_ids:
                logits = logits.clone()
                logits[:, list(banned_ids)] = float("-inf")
            nxt = _pick(logits, sample, temperature, generator)
            for i in range(rows):
                if done[i]:
                    continue
                tok = int(nxt[i])
                if eos is not None and tok == eos:
                    done[i] = True
                else:
                    new[i].append(tok)
            if all(done) or step == max_new_tokens - 1:
                break
            if n_ctx is not None and int(pos.max()) >= n_ctx:  # the next token has no position left
                logger.debug("decode: stopped at the model's context length (%d)", n_ctx)
                break
            if not use_cache:
                logits = _recompute(subject, prompts, new, iv, n)
                pos = pos + 1
                continue
            mask2d = torch.cat([mask2d, torch.ones((rows, 1), dtype=mask2d.dtype)], dim=1)
            attn: torch.Tensor = mask2d
            if key_rows:
                attn = _bias_mask(mask2d, 1, key_rows, key_cols, float(iv.attn_bias), subject)  # type: ignore[union-attr]
            logits, cache = _step(subject, nxt[:, None], attn, pos, cache)
            pos = pos + 1
            logits = check_finite(subject, logits).cpu()
    return new


def _recompute(
    subject: Subject, prompts: list[torch.Tensor], new: list[list[int]], iv: Intervention | None, n: int
) -> torch.Tensor:
    """Next-token logits ``(rows, vocab)`` from a fresh pass over each prompt plus its tokens so far."""
    seqs = [torch.cat([prompts[r // n], torch.tensor(new[r], dtype=torch.long)]) for r in range(len(new))]
    iv_rows = None
    if iv is not None:
        iv_rows = Intervention(
            tuple(iv.keypos[r // n] for r in range(len(new))),
            embed_scale=iv.embed_scale,
            attn_bias=iv.attn_bias,
            embeds=iv.embeds,
        )
    return prompt_pass(subject, seqs, intervention=iv_rows).first_logits
