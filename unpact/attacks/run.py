"""Running an attack: score the gold answer and decode answers, from one prompt pass under the intervention."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from unpact.attacks.keywords import _safe_keywords, find_keyword_spans, key_positions
from unpact.attacks.registry import Attack, apply_text_attack, get_attack
from unpact.data import Example, fill_id
from unpact.errors import InputError, check_items, check_positive
from unpact.forward import Intervention, decode, prompt_pass
from unpact.models import Subject, frozen

logger = logging.getLogger(__name__)

__all__ = ["AttackOutput", "run_attack", "generate_answers", "unlearning_token_ids"]


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
    return run_attack(
        subject, examples, attack, keywords, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed
    )


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
        keywords: Per example, a list of the key words to emphasise (default: each ``example.keywords``);
            a list of lists, ``[["Ada", "Lovelace"], ["Paris"]]``. Items whose prompt contains none
            of them are listed in one warning: for them the attack equals the plain prompt.
        max_new_tokens: Tokens decoded per answer.
        batch_size: Examples per forward pass.
        seed: Seed of the sampling generator (sampling attacks; greedy otherwise).

    Returns:
        One :class:`AttackOutput` per example, in order.

    Raises:
        UnknownNameError: For an unknown attack.
        InputError: For key words not given as one list per example, a bad count, or NaN/inf logits.
    """
    a = get_attack(attack)
    examples = check_items(
        "examples", examples, Example, where="run_attack", fix="pass [example] (and its key words as [[...]])"
    )
    keywords = [list(e.keywords) for e in examples] if keywords is None else _check_keywords(keywords, examples)
    if subject.tokenizer is None:
        raise InputError("the subject has no tokenizer; load it with load_model(path, tokenizer)")
    check_positive("max_new_tokens", max_new_tokens, where="run_attack")
    check_positive("batch_size", batch_size, where="run_attack")
    if a.uses_keywords:
        _warn_if_no_keyword(a, examples, keywords)
    gen = torch.Generator().manual_seed(int(seed))
    outs: list[AttackOutput] = []
    with frozen(subject.model), torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            kws = [_safe_keywords(e, k) for e, k in zip(chunk, keywords[start : start + batch_size])]
            outs.extend(_run_chunk(subject, chunk, kws, a, max_new_tokens, gen))
    return outs


def _check_keywords(keywords: Any, examples: Sequence[Example]) -> list[list[str]]:
    """``keywords`` as one list of strings per example, or an :class:`InputError` that shows the expected shape."""
    shape = "keywords holds one list of key words per example, e.g. [['Ada', 'Lovelace'], ['Paris']]"
    n = len(examples)
    if isinstance(keywords, str):
        raise InputError(
            f"keywords is the string {keywords!r}, not one list of key words per example ({n} examples)",
            source="keywords",
            fix=f"{shape}; for one example write [[{keywords!r}]]",
        )
    keywords = list(keywords)
    flat = [k for k in keywords if isinstance(k, str)]
    if flat:
        raise InputError(
            f"keywords is a flat list of strings ({', '.join(map(repr, flat[:4]))}) for {n} examples; each string "
            "would be read as one example's key words, letter by letter",
            source="keywords",
            fix=f"{shape}; the same key words for every example: [{flat!r}] * {n}",
        )
    if len(keywords) != n:
        raise InputError(
            f"got {len(keywords)} keyword lists for {n} examples",
            source="keywords",
            fix=f"give one per example ({shape})",
        )
    out = []
    for i, kws in enumerate(keywords):
        kws = list(kws)
        bad = [k for k in kws if not isinstance(k, str)]
        if bad:
            raise InputError(
                f"the key words of example {i} hold {bad[0]!r} ({type(bad[0]).__name__}), not a string",
                source=f"keywords[{i}]",
                fix=shape,
            )
        out.append(kws)
    return out


def _warn_if_no_keyword(a: Attack, examples: Sequence[Example], keywords: Sequence[Sequence[str]]) -> None:
    """One warning listing the examples where no usable key word occurs in the prompt (the attack changes nothing)."""
    idle = [e.id for e, k in zip(examples, keywords) if not find_keyword_spans(e.prompt, _safe_keywords(e, k))]
    if idle:
        shown = ", ".join(map(str, idle[:10])) + (f" and {len(idle) - 10} more" if len(idle) > 10 else "")
        logger.warning(
            "attack %r: none of the key words occurs in the prompt of %d of %d examples (%s), after dropping key "
            "words that would leak the answer; for them the attack equals the plain prompt",
            a.name,
            len(idle),
            len(examples),
            shown,
        )


def unlearning_token_ids(subject: Subject) -> tuple[int, ...]:
    """Ids of the tokens an unlearning method added to ``subject``'s vocabulary (UniErase's ``<unl>``).

    Read from the model's ``config.unpact_unlearn`` record (``unlearning_tokens``); empty for a
    model without one, or whose tokenizer lacks them.
    """
    record = getattr(subject.model.config, "unpact_unlearn", None) or {}
    tokens = record.get("unlearning_tokens") or ()
    vocab = subject.tokenizer.get_vocab()
    return tuple(int(vocab[t]) for t in tokens if t in vocab)


def _run_chunk(
    subject: Subject,
    chunk: Sequence[Example],
    kws: Sequence[list[str]],
    a: Attack,
    max_new_tokens: int,
    gen: torch.Generator,
) -> list[AttackOutput]:
    """One batch of :func:`run_attack`: teacher-forced scoring of the gold answer, then decoding."""
    tok = subject.tokenizer
    attacked = [apply_text_attack(a, e, k) if a.kind == "text" else e for e, k in zip(chunk, kws)]
    encs = [subject.encode(ex) for ex in attacked]
    keypos = [key_positions(enc, e.prompt, k) if a.kind == "whitebox" else [] for enc, e, k in zip(encs, attacked, kws)]
    iv = (
        Intervention(tuple(tuple(p) for p in keypos), embed_scale=a.embed_scale, attn_bias=a.attn_bias)
        if a.kind == "whitebox"
        else None
    )
    # one pass: the gold answer teacher-forced (first-token top-1, mean log-prob) and the prompt's cache
    sample = a.kind == "sampling"
    n_samp = a.num_samples if sample else 1
    start = prompt_pass(
        subject,
        [enc.prompt_ids for enc in encs],
        [enc.answer_ids for enc in encs],
        intervention=iv,
        keep_cache=True,
        fill=fill_id(tok),
    )
    banned = unlearning_token_ids(subject) if a.ban_unlearning_tokens else ()
    if banned:  # the first-token rank among the tokens the constrained decoding may choose
        start.first_logits[:, list(banned)] = float("-inf")
    top1 = [r == 0 for r in start.first_token_rank()]
    lp = [float(x.mean()) for x in start.answer_logprobs]
    new = decode(
        subject,
        start,
        max_new_tokens=max_new_tokens,
        sample=sample,
        temperature=a.temperature,
        num_samples=n_samp,
        generator=gen,
        banned_ids=banned,
    )
    texts = [tok.decode(t, skip_special_tokens=True) for t in new]
    outs = []
    for i, e in enumerate(attacked):
        outs.append(
            AttackOutput(
                example=e,
                keywords=tuple(kws[i]),
                samples=tuple(texts[i * n_samp : (i + 1) * n_samp]),
                first_token_top1=top1[i],
                answer_logprob=lp[i],
                n_key_positions=len(keypos[i]),
            )
        )
    return outs
