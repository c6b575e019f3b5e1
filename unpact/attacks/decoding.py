"""Greedy / sampled decoding under an attack: a batched loop without a KV cache on right-padded prompts.

With causal attention no real token ever sees the right padding, so a batched row gives the same
tokens as the row alone, and position-based interventions stay aligned at every step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unpact.attacks.registry import Attack
from unpact.attacks.whitebox import _forward
from unpact.models import Subject

__all__: list[str] = []


def _decode(
    subject: Subject,
    prompts: Sequence[torch.Tensor],
    keypos: Sequence[Sequence[int]],
    a: Attack,
    max_new_tokens: int,
    sample: bool,
    gen: torch.Generator,
) -> list[str]:
    """Decode up to ``max_new_tokens`` per prompt, greedily or by sampling, under ``a``'s intervention.

    Args:
        subject: The model.
        prompts: One ``(prompt_len,)`` id tensor per row.
        keypos: Per row, the key positions the white-box intervention touches.
        a: The attack (its ``temperature`` when sampling).
        max_new_tokens: Decoding steps at most; a row stops at its end-of-sequence token.
        sample: Sample from the softmax instead of taking the argmax.
        gen: Generator of the sampling draws.

    Returns:
        One decoded continuation per prompt (special tokens skipped).
    """
    tok = subject.tokenizer
    eos = getattr(tok, "eos_token_id", None)
    lens = [len(p) for p in prompts]
    n = len(prompts)
    width = max(lens) + max_new_tokens
    fill = 0  # right padding under a causal mask: no real token ever attends to it
    ids = torch.full((n, width), fill, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : lens[i]] = p
    cur = list(lens)
    done = [False] * n
    new: list[list[int]] = [[] for _ in range(n)]
    for _ in range(max_new_tokens):
        w = max(cur)
        logits = _forward(subject, ids[:, :w], cur, keypos, a).float().cpu()
        last = logits[torch.arange(n), torch.tensor(cur) - 1]
        if sample:
            probs = torch.softmax(last / max(a.temperature, 1e-6), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
        else:
            nxt = last.argmax(-1)
        for i in range(n):
            if done[i]:
                continue
            t = int(nxt[i])
            if eos is not None and t == eos:
                done[i] = True
                continue
            ids[i, cur[i]] = t
            cur[i] += 1
            new[i].append(t)
        if all(done):
            break
    return [tok.decode(t, skip_special_tokens=True) for t in new]
