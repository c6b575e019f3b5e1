"""Attacks chosen from the circuit and lens diffs: each tracer's before/after change turned into a hook.

Both are chosen on half A of the forget people and scored on half B (no person in both), with hooks
only (no weight change), and both are chosen the same way on any model, so the retain-only model,
treated as if it were the unlearned one, is their control.

* **circuit**: per attention head, the share of the gold answer's edge attribution its outgoing edges
  carry (:func:`unpact.circuits.edge_attribution_patching`, EAP with mean ablation, averaged over half
  A's items), for the base model and the attacked one; the ``n_heads`` heads whose share fell most are
  amplified (their outputs times ``head_scale`` at every position, prompt and generated tokens).
* **lens**: per layer, the logit lens's rank of the gold first answer token on half A, for the base
  and the attacked model; the layer where the attacked model falls furthest behind the base, compared
  with the layer before (where the answer stops being decodable), is chosen. There, the change the
  model shows in the contrast between forget and retain prompts is taken away at every position: the
  vector subtracted is (model's mean on half A's forget prompts minus its mean on as many retain
  prompts) minus the same difference in the base model, at the last prompt token. The base's own
  contrast is subtracted out because forget and retain prompts differ in every model (other people,
  other facts); what remains is what the model does differently on forget prompts. (Subtracting the
  model's contrast alone also removes that natural difference at every position and breaks the model:
  on a lock built into the micro world it recovered nothing where this recovers everything, tested.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from unpact._result import KeyedHits, SavedResult
from unpact.data import Example
from unpact.errors import InputError, check_disjoint_subjects, check_items
from unpact.models import Subject
from unpact.provenance import Provenance

logger = logging.getLogger(__name__)

__all__ = ["DiffAttackResult", "diff_attacks", "head_shares", "lens_layer", "DIFF_KEYS"]

#: Conditions scored on half B: the model as it is, and under each diff's attack.
DIFF_KEYS: tuple[str, ...] = ("none", "circuit", "lens")


@dataclass
class DiffAttackResult(KeyedHits, SavedResult):
    """The circuit- and lens-diff attacks on one model (``representations/MODEL/diff_attacks/last.npz``).

    Attributes:
        item_ids: The half-B items scored.
        keys: The conditions scored (:data:`DIFF_KEYS`; ``"circuit"`` missing where edge attribution
            patching does not support the architecture or no head lost share, ``"lens"`` where the logit
            lens does not).
        correct: ``(n_keys, n_items)`` answered right (lenient match).
        logprob: ``(n_keys, n_items)`` mean gold-answer log-probability.
        heads: The heads amplified (``"a{L}.h{H}"``).
        share_drop: Their drop of attribution share, base minus model.
        layer: The lens layer row intervened at (1 = after block 0).
        rank_gap: ``(L + 1,)`` mean over half A of log(1 + rank) model minus base, per lens row.
        n_estimate: Half-A items the choices were made on.
        provenance: Model and settings.
    """

    item_ids: list[str]
    keys: list[str]
    correct: np.ndarray
    logprob: np.ndarray
    heads: list[str]
    share_drop: list[float]
    layer: int
    rank_gap: np.ndarray
    n_estimate: int = 0
    provenance: Provenance | None = None


def head_shares(subject: Subject, items: Sequence[Example]) -> dict[str, float]:
    """Per head ``"a{L}.h{H}"``, its outgoing edges' share of the absolute edge attribution, mean over items.

    Raises:
        UnsupportedFeatureError: Architectures edge attribution patching does not support.
    """
    from unpact.circuits import edge_attribution_patching

    total: dict[str, float] = {}
    for e in items:
        s = edge_attribution_patching(subject, e)
        mass = np.abs(np.where(s.valid, s.scores, 0.0)).sum(1)  # (n_up,)
        heads = [i for i, n in enumerate(s.upstream) if ".h" in n]
        denom = float(mass[heads].sum()) or 1.0
        for i in heads:
            total[s.upstream[i]] = total.get(s.upstream[i], 0.0) + float(mass[i]) / denom / len(items)
    return total


def _first_token_log_ranks(subject: Subject, items: Sequence[Example]) -> np.ndarray:
    """``(n, L + 1)`` log(1 + rank) of the gold first answer token per logit-lens row."""
    from unpact.lens import logit_lens
    from unpact.representations.lens_recovery import layer_ranks

    trajs = logit_lens(subject, list(items), keep_distributions=False)
    return np.log1p(np.stack([layer_ranks(t, 0) for t in trajs]).astype(np.float64))


def lens_layer(base: Subject, model: Subject, items: Sequence[Example]) -> tuple[int, np.ndarray]:
    """The lens row (>= 1) where ``model``'s gap to ``base`` grows most from the row before, and the gaps.

    Returns:
        ``(row, gap)``: ``gap`` is ``(L + 1,)`` mean log(1 + rank) model minus base.
    """
    gap = (_first_token_log_ranks(model, items) - _first_token_log_ranks(base, items)).mean(0)
    return int(np.argmax(np.diff(gap))) + 1, gap


def _scale_heads(heads: Sequence[int], factor: float) -> Callable[..., torch.Tensor]:
    def fn(h: torch.Tensor, *, hook: object) -> torch.Tensor:
        h = h.clone()
        h[..., list(heads), :] = h[..., list(heads), :] * factor
        return h

    return fn


def _subtract(v: torch.Tensor) -> Callable[..., torch.Tensor]:
    def fn(h: torch.Tensor, *, hook: object) -> torch.Tensor:
        return h - v.to(h)

    return fn


def diff_attacks(
    base: Subject,
    model: Subject,
    estimate: Sequence[Example],
    retain: Sequence[Example],
    items: Sequence[Example],
    *,
    n_heads: int = 3,
    head_scale: float = 2.0,
    max_new_tokens: int = 16,
    batch_size: int = 16,
) -> DiffAttackResult:
    """Choose the circuit- and lens-diff attacks on ``estimate`` (half A) and score ``items`` (half B).

    Args:
        base: The model before unlearning (left unchanged).
        model: The model attacked: an unlearned model, or the retain-only model as the control.
        estimate: Forget items the choices are made on (half A).
        retain: Retain prompts for the lens attack's forget-minus-retain difference.
        items: Forget items scored (no subject shared with ``estimate``).
        n_heads: Heads amplified.
        head_scale: Factor on their outputs.
        max_new_tokens: Tokens decoded per answer.
        batch_size: Prompts per forward pass.

    Returns:
        The :class:`DiffAttackResult`.

    Raises:
        InputError: Empty item lists, models of different depths, or ``items`` sharing a subject with ``estimate``.
    """
    from unpact.errors import ArchitectureError, UnsupportedFeatureError
    from unpact.evaluate import hooked_scores
    from unpact.representations.probes import last_token_states

    where = "diff_attacks"
    estimate = check_items("estimate", estimate, Example, where=where)
    retain = check_items("retain", retain, Example, where=where)
    items = check_items("items", items, Example, where=where)
    for name, xs in (("estimate", estimate), ("retain", retain), ("items", items)):
        if not xs:
            raise InputError(f"{where}: no {name} items given", fix="pass at least one example")
    if base.n_layers != model.n_layers:
        raise InputError(
            f"{where}: {base.name} has {base.n_layers} layers, {model.name} {model.n_layers}",
            fix="compare a model with its own base (the lens rows must correspond)",
        )
    check_disjoint_subjects(where, estimate, items)
    keys: list[str] = []
    correct: list[np.ndarray] = []
    logprob: list[np.ndarray] = []

    def score(key: str, hooks: dict[str, Callable[..., torch.Tensor]]) -> None:
        hit, lp = hooked_scores(model, items, hooks, max_new_tokens=max_new_tokens, batch_size=batch_size)
        keys.append(key)
        correct.append(hit)
        logprob.append(lp)

    score("none", {})
    heads: list[str] = []
    drops: list[float] = []
    try:
        before, after = head_shares(base, estimate), head_shares(model, estimate)
    except (UnsupportedFeatureError, ArchitectureError) as exc:
        logger.warning("circuit-diff attack skipped on %s: %s", model.name, exc)
    else:
        drop = {h: before[h] - after.get(h, 0.0) for h in before}
        heads = [h for h in sorted(drop, key=lambda h: -drop[h])[:n_heads] if drop[h] > 0]
        drops = [round(drop[h], 6) for h in heads]
        by_layer: dict[int, list[int]] = {}
        for h in heads:
            layer, head = h[1:].split(".h")
            by_layer.setdefault(int(layer), []).append(int(head))
        if heads:  # no head lost attribution share: nothing to amplify, no condition scored
            score("circuit", {f"head_out.{layer}": _scale_heads(hs, head_scale) for layer, hs in by_layer.items()})
    row, gap = 0, np.zeros(0)
    try:
        row, gap = lens_layer(base, model, estimate)
    except (UnsupportedFeatureError, ArchitectureError) as exc:
        logger.warning("lens-diff attack skipped on %s: %s", model.name, exc)
    else:

        def contrast(m: Subject) -> torch.Tensor:
            f = last_token_states(m, estimate, batch_size=batch_size)[:, row].mean(0)
            return f - last_token_states(m, retain, batch_size=batch_size)[:, row].mean(0)

        score("lens", {f"resid_post.{row - 1}": _subtract(contrast(model) - contrast(base))})
    return DiffAttackResult(
        item_ids=[e.id for e in items],
        keys=keys,
        correct=np.stack(correct),
        logprob=np.stack(logprob),
        heads=heads,
        share_drop=drops,
        layer=row,
        rank_gap=gap,
        n_estimate=len(estimate),
        provenance=Provenance.of(model, where, base=base.name, n_heads=n_heads, head_scale=head_scale),
    )
