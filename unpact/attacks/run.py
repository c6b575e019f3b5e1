"""Running an attack: decode answers and score the gold answer, all under the same intervention."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from unpact.attacks.decoding import _decode
from unpact.attacks.keywords import _safe_keywords, key_positions
from unpact.attacks.registry import Attack, apply_text_attack, get_attack
from unpact.attacks.whitebox import _forward
from unpact.data import Example, InputError, encode
from unpact.models import Subject, frozen

__all__ = ["AttackOutput", "run_attack", "generate_answers"]


@dataclass(frozen=True)
class AttackOutput:
    """What one attack produced on one example.

    Attributes:
        example: The example as the model saw it (the rewritten prompt for text attacks).
        keywords: The key words used (after the answer-leak guard).
        samples: Decoded continuations (one for greedy, ``num_samples`` for sampling).
        first_token_top1: The gold first answer token is the argmax after the prompt.
        answer_logprob: Teacher-forced mean log-probability of the gold answer tokens.
        n_key_positions: Number of prompt tokens the white-box intervention touched.
    """

    example: Example
    keywords: tuple[str, ...]
    samples: tuple[str, ...]
    first_token_top1: bool
    answer_logprob: float
    n_key_positions: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


def generate_answers(
    subject: Subject,
    examples: Sequence[Example],
    attack: str | Attack = "plain",
    keywords: Sequence[Sequence[str]] | None = None,
    *,
    max_new_tokens: int = 8,
    batch_size: int = 32,
    seed: int = 0,
) -> list[AttackOutput]:
    """Run one attack on examples: decode answers and score the gold answer under the intervention.

    Alias of :func:`run_attack` (kept for readability where no attack is meant: ``attack="plain"``).
    """
    return run_attack(subject, examples, attack, keywords, max_new_tokens=max_new_tokens,
                      batch_size=batch_size, seed=seed)


def run_attack(
    subject: Subject,
    examples: Sequence[Example],
    attack: str | Attack,
    keywords: Sequence[Sequence[str]] | None = None,
    *,
    max_new_tokens: int = 8,
    batch_size: int = 32,
    seed: int = 0,
) -> list[AttackOutput]:
    """Run one attack on examples, inference only.

    Args:
        subject: The model (weights, mode and flags are left as they are; no hook remains).
        examples: The items (their prompt and gold answer).
        attack: A registered name, a ``"a+b"`` text combination or an :class:`Attack`.
        keywords: Per example, the key words to emphasise (default: each ``example.keywords``).
        max_new_tokens: Tokens decoded per answer.
        batch_size: Examples per forward pass.
        seed: Seed of the sampling generator (sampling attacks; greedy otherwise).

    Returns:
        One :class:`AttackOutput` per example, in order.

    Raises:
        ValueError: For an unknown attack or a keyword list of the wrong length.
    """
    a = get_attack(attack)
    if keywords is None:
        keywords = [e.keywords for e in examples]
    if len(keywords) != len(examples):
        raise ValueError(f"got {len(keywords)} keyword lists for {len(examples)} examples; give one per example")
    if subject.tokenizer is None:
        raise InputError("the subject has no tokenizer; load it with load_model(path, tokenizer)")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be >= 1")
    gen = torch.Generator().manual_seed(int(seed))
    outs: list[AttackOutput] = []
    with frozen(subject.model), torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            kws = [_safe_keywords(e, k) for e, k in zip(chunk, keywords[start : start + batch_size])]
            outs.extend(_run_chunk(subject, chunk, kws, a, max_new_tokens, gen))
    return outs


def _run_chunk(subject: Subject, chunk: Sequence[Example], kws: Sequence[list[str]], a: Attack,
               max_new_tokens: int, gen: torch.Generator) -> list[AttackOutput]:
    """One batch of :func:`run_attack`: teacher-forced scoring of the gold answer, then decoding."""
    tok = subject.tokenizer
    attacked = [apply_text_attack(a, e, k) if a.kind == "text" else e for e, k in zip(chunk, kws)]
    encs = [encode(tok, e, max_length=subject.n_ctx) for e in attacked]
    keypos = [key_positions(tok, e.prompt, k) if a.kind == "whitebox" else [] for e, k in zip(attacked, kws)]
    # 1) teacher-forced gold answer: first-token top-1 and mean log-prob
    lens = [len(e.input_ids) for e in encs]
    width = max(lens)
    ids = torch.full((len(encs), width), 0, dtype=torch.long)
    for i, e in enumerate(encs):
        ids[i, : lens[i]] = e.input_ids
    logp = torch.log_softmax(_forward(subject, ids, lens, keypos, a).float(), dim=-1).cpu()
    top1, lp = [], []
    for i, e in enumerate(encs):
        s, t = e.answer_span
        gold = e.input_ids[s:t]
        pred = logp[i, s - 1 : t - 1]
        top1.append(bool(pred[0].argmax().item() == gold[0].item()))
        lp.append(float(pred.gather(1, gold[:, None]).mean().item()))
    # 2) decoding from the prompt
    n_samp = a.num_samples if a.kind == "sampling" else 1
    sample = a.kind == "sampling"
    prompts = [e.prompt_ids for e in encs for _ in range(n_samp)]
    kp = [p for p in keypos for _ in range(n_samp)]
    texts = _decode(subject, prompts, kp, a, max_new_tokens, sample, gen)
    outs = []
    for i, e in enumerate(attacked):
        outs.append(AttackOutput(
            example=e, keywords=tuple(kws[i]), samples=tuple(texts[i * n_samp : (i + 1) * n_samp]),
            first_token_top1=top1[i], answer_logprob=lp[i], n_key_positions=len(keypos[i]),
        ))
    return outs
