"""Embedding-space attack: a soft prompt learned on half the forget people, scored on the other half.

A few free input embeddings (``n_tokens`` vectors in the space of the token-embedding output, the
``embed`` hook site) are put right before each question (after the BOS and the template's opening
text) and optimised with Adam to raise the mean log-probability of the gold answers of the training
items (half A of the forget people, :func:`unpact.weights.split_halves`). The model's weights never
change: the vectors replace the embeddings of placeholder tokens through a hook. The learned prompt is
then put before the held-out items (half B: no person in both halves), which are decoded greedily.
What it recovers is a universal, input-side unlock, not a memorised answer (Schwinn et al. 2024,
"Soft prompt threats", arXiv 2402.09063, attack unlearned models in embedding space the same way).

The same optimisation on the **retain-only model** is the control: on a model that never saw the facts
a soft prompt can only teach the answer format and the answer priors, so the unlearned model's excess
over it is knowledge the soft prompt unlocked.

Example:
    >>> res = soft_prompt_attack(unlearned, half_a, half_b)
    >>> res.accuracy("soft"), res.accuracy("none")
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from unpact._devices import require_gradients
from unpact._result import KeyedHits, SavedResult
from unpact.data import Encoded, Example, fill_id
from unpact.errors import InputError, check_count, check_disjoint_subjects, check_items, check_positive
from unpact.forward import Intervention, Packed, answer_logprobs, decode, pack, prompt_pass
from unpact.forward.layout import _prompt_hooks
from unpact.metrics import lenient_match
from unpact.models import Subject, frozen
from unpact.provenance import Provenance

logger = logging.getLogger(__name__)

__all__ = [
    "SoftPromptResult",
    "SoftPromptFit",
    "soft_prompt_attack",
    "fit_soft_prompt",
    "score_soft_prompt",
    "SOFT_KEYS",
]

#: The two conditions scored on the held-out items: the model as it is, and with the learned soft prompt.
SOFT_KEYS: tuple[str, ...] = ("none", "soft")


@dataclass
class SoftPromptResult(KeyedHits, SavedResult):
    """A soft prompt learned on one model and its score on held-out items
    (``representations/MODEL/soft_prompt/last.npz`` in an audit).

    Attributes:
        embeds: ``(n_tokens, d_model)`` the learned vectors (float32, embedding-output space).
        losses: ``(steps,)`` training loss per step (minus the mean gold-answer log-probability of the batch).
        val_losses: ``(n_checks,)`` loss on the held-out training subjects at each check.
        best_step: Steps taken by the prompt kept (the best check's).
        item_ids: The held-out items scored.
        keys: :data:`SOFT_KEYS`: ``"none"`` (the model as it is) and ``"soft"`` (with the soft prompt).
        correct: ``(2, n_items)`` answered right (lenient match) under each key.
        logprob: ``(2, n_items)`` mean gold-answer log-probability under each key.
        n_train: Items the prompt was learned on.
        provenance: Model and settings.
    """

    embeds: np.ndarray
    losses: np.ndarray
    val_losses: np.ndarray
    best_step: int
    item_ids: list[str]
    keys: list[str]
    correct: np.ndarray
    logprob: np.ndarray
    n_train: int = 0
    provenance: Provenance | None = None


def _with_slots(enc: Encoded, n_tokens: int, slot_id: int) -> tuple[torch.Tensor, int]:
    """``(prompt ids with n_tokens placeholder ids before the question, column of the first placeholder)``."""
    ids = enc.prompt_ids
    at = int(enc.prompt_span[0])
    return torch.cat([ids[:at], torch.full((n_tokens,), slot_id, dtype=torch.long), ids[at:]]), at


def _batch(
    subject: Subject, encs: Sequence[Encoded], n_tokens: int
) -> tuple[Packed, tuple[tuple[int, ...], ...], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed ids with placeholders, the per-row placeholder positions and the answer targets."""
    slot = fill_id(subject.tokenizer)
    rows = [_with_slots(e, n_tokens, slot) for e in encs]
    packed = pack([r[0] for r in rows], [e.answer_ids for e in encs], slot)
    keypos = tuple(tuple(range(at, at + n_tokens)) for _, at in rows)
    t = max(packed.answer_lens)
    pos = (packed.prompt_width - 1 + torch.arange(t))[None].expand(len(encs), -1)
    tgt = packed.ids[:, packed.prompt_width : packed.prompt_width + t]
    valid = torch.arange(t)[None] < torch.tensor(packed.answer_lens)[:, None]
    return packed, keypos, pos, tgt, valid


def _loss(subject: Subject, encs: Sequence[Encoded], soft: torch.Tensor) -> torch.Tensor:
    """Minus the mean (over items) of the mean gold-answer-token log-probability with the soft prompt."""
    packed, keypos, pos, tgt, valid = _batch(subject, encs, int(soft.shape[0]))
    lp = answer_logprobs(
        subject,
        packed.ids.to(subject.device),
        packed.mask.to(subject.device),
        pos,
        tgt,
        hooks=_prompt_hooks(Intervention(keypos, embeds=soft), packed),  # the scoring pass's own hook
        position_ids=packed.position_ids.to(subject.device),
    )
    v = valid.to(lp.device)
    return -((lp * v).sum(1) / v.sum(1)).mean()


def _validation_split(items: Sequence[Example], share: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(fit, validation)``: about ``share`` of the subjects held out (none with fewer than 5 subjects)."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(items):
        groups.setdefault(e.subject or f"id:{e.id}", []).append(i)
    if len(groups) < 5:
        return list(range(len(items))), []
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    held = set(keys[: max(1, round(share * len(keys)))])
    fit = [i for k in keys if k not in held for i in groups[k]]
    val = [i for k in keys if k in held for i in groups[k]]
    return sorted(fit), sorted(val)


@dataclass(frozen=True)
class SoftPromptFit:
    """What :func:`fit_soft_prompt` learned.

    Attributes:
        embeds: ``(n_tokens, d_model)`` float32 vectors (the best step's, by validation loss).
        losses: ``(steps,)`` training loss per step.
        val_losses: ``(n_checks,)`` loss on the held-out subjects at each check (empty without them).
        best_step: Steps taken by the vectors kept (``steps`` without a validation split).
    """

    embeds: torch.Tensor
    losses: np.ndarray
    val_losses: np.ndarray
    best_step: int


def fit_soft_prompt(
    subject: Subject,
    train: Sequence[Example],
    *,
    n_tokens: int = 8,
    steps: int = 100,
    lr: float = 0.1,
    batch_size: int = 16,
    seed: int = 0,
    val_share: float = 0.2,
) -> SoftPromptFit:
    """Learn a soft prompt raising the gold answers of ``train`` (the model is left unchanged).

    The vectors start at the mean embedding of the training prompts' tokens (plus seeded noise of a
    tenth of its scale); Adam's step size is ``lr`` times the root-mean-square of the token embeddings,
    so the same ``lr`` suits any model's embedding scale. A share ``val_share`` of the training
    subjects is held out (with five subjects or more): the loss on them is checked at the start and
    at ten evenly spaced steps (every step with fewer than ten), and the vectors of the best check are
    kept, so the prompt stops before it merely memorises the training people's answers (which would
    lower, not raise, what it does for other people).

    Args:
        subject: The model (weights, mode and grad flags are restored).
        train: Items whose gold answers the prompt should raise.
        n_tokens: Soft tokens.
        steps: Optimisation steps (one minibatch each).
        lr: Step size relative to the embedding scale.
        batch_size: Items per step.
        seed: Seed of the initial noise, the validation split and the minibatch order.
        val_share: Share of the training subjects held out for early stopping (0: none).

    Returns:
        The :class:`SoftPromptFit`.

    Raises:
        InputError: No training items, a non-positive count or step size, or a loss that is not finite.
    """
    require_gradients(subject.model, "the soft-prompt attack")
    where = "fit_soft_prompt"
    train = check_items("train", train, Example, where=where)
    if not train:
        raise InputError(f"{where}: no training items", fix="pass at least one example with a gold answer")
    n_tokens, steps = check_count("n_tokens", n_tokens, where=where), check_count("steps", steps, where=where)
    for name, value, top in (("lr", lr, math.inf), ("val_share", val_share, 0.5)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= top):
            raise InputError(f"{where}: {name} must be a number in [0, {top}], got {value!r}", source=name)
    if not lr > 0:
        raise InputError(f"{where}: lr must be > 0, got {lr!r}", source="lr")
    check_positive("batch_size", batch_size, where=where)
    if n_tokens < 1:
        raise InputError(f"{where}: n_tokens must be at least 1", source="n_tokens")
    encs = [subject.encode(e) for e in train]
    fit_idx, val_idx = _validation_split(train, val_share, seed) if val_share > 0 else (list(range(len(train))), [])
    first = [encs[i] for i in fit_idx[:batch_size]]
    packed0 = pack([e.prompt_ids for e in first], None, fill_id(subject.tokenizer))
    losses: list[float] = []
    val_losses: list[float] = []
    checks = {max(1, round(steps * k / 10)) for k in range(1, 11)} if steps else set()  # ten checks (fewer steps: each)
    with frozen(subject.model):  # eval mode (no dropout) from the first embedding on; flags restored after
        with torch.no_grad():
            emb = subject.embed(packed0.ids.to(subject.device)).float()  # the ``embed`` site's output
        real = emb[packed0.mask.bool().to(emb.device)]  # (n_real_tokens, d)
        scale = float(real.square().mean().sqrt())
        gen = torch.Generator().manual_seed(seed)
        init = real.mean(0).cpu() + 0.1 * scale * torch.randn((n_tokens, real.shape[-1]), generator=gen)
        soft = init.to(subject.device).requires_grad_(True)
        opt = torch.optim.Adam([soft], lr=lr * scale)

        def validate() -> float:
            with torch.no_grad():
                parts = [val_idx[i : i + batch_size] for i in range(0, len(val_idx), batch_size)]
                total = sum(float(_loss(subject, [encs[i] for i in p], soft)) * len(p) for p in parts)
                return total / len(val_idx)

        best = (validate(), 0, soft.detach().clone()) if val_idx else (math.inf, steps, soft.detach())
        if val_idx:
            val_losses.append(best[0])
        order = list(fit_idx)
        rng = random.Random(seed)
        width = min(batch_size, len(order))
        cursor = len(order)  # an epoch ends where the next batch would not fit: reshuffle, start again
        for step in range(steps):
            if cursor + width > len(order):
                rng.shuffle(order)
                cursor = 0
            idx = order[cursor : cursor + width]
            cursor += width
            loss = _loss(subject, [encs[i] for i in idx], soft)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise InputError(
                    f"{where}: the loss became {losses[-1]} at step {step}", fix="lower lr or use float32 weights"
                )
            if val_idx and step + 1 in checks:
                val_losses.append(validate())
                if val_losses[-1] < best[0]:
                    best = (val_losses[-1], step + 1, soft.detach().clone())
    embeds = best[2] if val_idx else soft.detach()
    return SoftPromptFit(
        embeds.float().cpu(),
        np.asarray(losses, dtype=np.float64),
        np.asarray(val_losses, dtype=np.float64),
        int(best[1]),
    )


def score_soft_prompt(
    subject: Subject,
    items: Sequence[Example],
    embeds: torch.Tensor,
    *,
    max_new_tokens: int = 16,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``items`` greedily with the soft prompt before each question.

    Args:
        subject: The model.
        items: Items with gold answers.
        embeds: ``(n_tokens, d_model)`` soft vectors (:func:`fit_soft_prompt`).
        max_new_tokens: Tokens decoded per answer.
        batch_size: Items per forward pass.

    Returns:
        ``(correct, logprob)``: ``(n,)`` lenient matches and mean gold-answer log-probabilities.
    """
    tok = subject.tokenizer
    n_tokens = int(embeds.shape[0])
    correct: list[bool] = []
    logprob: list[float] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        encs = [subject.encode(e) for e in chunk]
        slot = fill_id(tok)
        rows = [_with_slots(e, n_tokens, slot) for e in encs]
        iv = Intervention(tuple(tuple(range(at, at + n_tokens)) for _, at in rows), embeds=embeds)
        first = prompt_pass(
            subject, [r[0] for r in rows], [e.answer_ids for e in encs], intervention=iv, keep_cache=True, fill=slot
        )
        logprob += [float(lp.mean()) for lp in first.answer_logprobs]
        new = decode(subject, first, max_new_tokens=max_new_tokens)
        correct += [
            lenient_match(tok.decode(r, skip_special_tokens=True).strip(), e.answer) for r, e in zip(new, chunk)
        ]
    return np.asarray(correct, dtype=bool), np.asarray(logprob, dtype=np.float64)


def soft_prompt_attack(
    subject: Subject,
    train: Sequence[Example],
    items: Sequence[Example],
    *,
    n_tokens: int = 8,
    steps: int = 100,
    lr: float = 0.1,
    seed: int = 0,
    max_new_tokens: int = 16,
    batch_size: int = 16,
) -> SoftPromptResult:
    """Learn a soft prompt on ``train`` (half A) and score ``items`` (half B) with and without it.

    Args:
        subject: The model attacked (left unchanged).
        train: Items the prompt is learned on.
        items: Held-out items scored (no subject shared with ``train``).
        n_tokens, steps, lr, seed: See :func:`fit_soft_prompt`.
        max_new_tokens: Tokens decoded per answer.
        batch_size: Items per step and per forward pass.

    Returns:
        The :class:`SoftPromptResult`.

    Raises:
        InputError: Empty item lists, or ``items`` sharing a subject with ``train``.
    """
    from unpact.evaluate import evaluate

    where = "soft_prompt_attack"
    train = check_items("train", train, Example, where=where)
    items = check_items("items", items, Example, where=where)
    if not items:
        raise InputError(f"{where}: no items to score", fix="pass at least one held-out example")
    check_disjoint_subjects(where, train, items)
    fit = fit_soft_prompt(subject, train, n_tokens=n_tokens, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    embeds = fit.embeds
    plain = evaluate(subject, items, max_new_tokens=max_new_tokens, batch_size=batch_size).records
    hit, lp = score_soft_prompt(subject, items, embeds, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return SoftPromptResult(
        embeds=embeds.numpy(),
        losses=fit.losses,
        val_losses=fit.val_losses,
        best_step=fit.best_step,
        item_ids=[e.id for e in items],
        keys=list(SOFT_KEYS),
        correct=np.stack([np.array([r.lenient for r in plain], dtype=bool), hit]),
        logprob=np.stack([np.array([r.answer_logprob for r in plain], dtype=np.float64), lp]),
        n_train=len(train),
        provenance=Provenance.of(
            subject, where, n_tokens=n_tokens, steps=steps, lr=lr, seed=seed, max_new_tokens=max_new_tokens
        ),
    )
