"""The unlearning direction: does undoing the mean activation change on forget prompts bring the answers back?

Refusal-like behaviour often lives in one direction of the residual stream (Arditi et al. 2024, arXiv
2406.11717). Per layer, the difference of mean activations, **unlearned minus base**, at the prompt's
last token on the forget prompts of half the forget people (half A, :func:`unpact.weights.split_halves`)
gives the mean shift ``delta_l`` and its direction ``u_l = delta_l / |delta_l|``. At inference (hooks on
every block's output, every position, prompt and generated tokens; no weight change) the unlearned
model then either

* ``ablate``: projects ``u_l`` out of its residual stream, ``h <- h - (h . u_l) u_l``, or
* ``add``: adds the mean shift back: the embedding's shift is subtracted where the stream enters block 0
  and each block's own increment ``delta_l - delta_{l-1}`` at its output, so that after block ``l`` the
  stream has ``delta_l`` taken off in all (to first order, back to the base model's mean at the forget
  prompts; the blocks still respond to the corrected stream),

and is scored on the other half's items (half B, no person in both). Controls, on the same model and
items, applied the same way:

* the direction estimated the same way on **retain** prompts (unlearned minus base there): what undoing
  any change unlearning made does, not one specific to the forget facts;
* a **random** shift: per block an increment in a random direction with the norm of ``delta``'s increment
  there (its cumulative sums give the directions ``ablate`` projects out).

(The retain-only model is no control here: its residual basis is unrelated to the base's.) How much of
the activation change the one direction carries is reported per layer: on half B's prompts, the share
``sum_i (delta_i . u_l)^2 / sum_i |delta_i|^2`` of the per-item changes ``delta_i`` (unlearned minus base).
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
from unpact.representations.probes import last_token_states

logger = logging.getLogger(__name__)

__all__ = ["DirectionResult", "unlearning_direction", "INTERVENTIONS", "SOURCES"]

#: What is done with the direction at inference.
INTERVENTIONS: tuple[str, ...] = ("ablate", "add")
#: Where the direction comes from: the forget prompts (the attack), the retain prompts and random (controls).
SOURCES: tuple[str, ...] = ("forget", "retain", "random")


@dataclass
class DirectionResult(KeyedHits, SavedResult):
    """One unlearned model's direction interventions (``representations/MODEL/direction/last.npz`` in an audit).

    Attributes:
        layer_names: ``(L,)`` the blocks whose output is changed (``"0"``, ``"1"``...).
        shift_norm: ``(L,)`` ``|delta_l|`` estimated on half A's forget prompts.
        retain_shift_norm: ``(L,)`` the same on the retain prompts.
        share_explained: ``(L,)`` share of the per-item activation change on half B's prompts along ``u_l``.
        item_ids: The half-B items scored.
        keys: ``"none"`` (the unlearned model unchanged), then ``"intervention/source"`` for every
            intervention and source (``"ablate/forget"``, ``"add/retain"``...).
        correct: ``(n_keys, n_items)`` answered right (lenient match) under each key.
        logprob: ``(n_keys, n_items)`` mean gold-answer log-probability under each key.
        n_estimate: Items the forget direction was estimated on (half A).
        provenance: Model and settings.
    """

    layer_names: list[str]
    shift_norm: np.ndarray
    retain_shift_norm: np.ndarray
    share_explained: np.ndarray
    item_ids: list[str]
    keys: list[str]
    correct: np.ndarray
    logprob: np.ndarray
    n_estimate: int = 0
    provenance: Provenance | None = None


def _shift(base_states: torch.Tensor, model_states: torch.Tensor) -> torch.Tensor:
    """``(n, L + 1, d)`` states of both models -> ``(L + 1, d)`` mean change (embedding, then each block's output)."""
    return (model_states - base_states).mean(0)


def _ablate(u: torch.Tensor) -> Callable[..., torch.Tensor]:
    """A hook projecting the unit vector ``u`` out of the activation."""

    def fn(h: torch.Tensor, *, hook: object) -> torch.Tensor:
        uu = u.to(h)
        return h - (h @ uu)[..., None] * uu

    return fn


def _subtract(v: torch.Tensor) -> Callable[..., torch.Tensor]:
    """A hook subtracting ``v`` from the activation at every position."""

    def fn(h: torch.Tensor, *, hook: object) -> torch.Tensor:
        return h - v.to(h)

    return fn


def _hooks(shift: torch.Tensor, how: str) -> list[tuple[str, Callable[..., torch.Tensor]]]:
    """The hooks of one intervention, from a ``(L + 1, d)`` mean shift (row 0: the embedding).

    ``ablate`` projects the direction of ``shift[l + 1]`` out of block ``l``'s output. ``add`` subtracts
    the embedding's shift where the stream enters block 0 and each block's own increment
    ``shift[l + 1] - shift[l]`` at its output, so the total taken off the stream after block ``l`` is
    ``shift[l + 1]`` (subtracting the cumulative shift at every block would count the earlier ones again).
    """
    if how == "ablate":
        return [
            (f"resid_post.{layer}", _ablate(shift[layer + 1] / shift[layer + 1].norm().clamp_min(1e-12)))
            for layer in range(shift.shape[0] - 1)
        ]
    steps = torch.cat([shift[:1], shift[1:] - shift[:-1]])
    return [("resid_pre.0", _subtract(steps[0]))] + [
        (f"resid_post.{layer}", _subtract(steps[layer + 1])) for layer in range(shift.shape[0] - 1)
    ]


def _random_like(shift: torch.Tensor, seed: int) -> torch.Tensor:
    """A random ``(L + 1, d)`` shift whose per-row increments have the norms of ``shift``'s (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    steps = torch.cat([shift[:1], shift[1:] - shift[:-1]])
    r = torch.randn(shift.shape, generator=gen)
    return (r / r.norm(dim=-1, keepdim=True) * steps.norm(dim=-1, keepdim=True)).cumsum(0)


def unlearning_direction(
    base: Subject,
    unlearned: Subject,
    estimate: Sequence[Example],
    retain: Sequence[Example],
    items: Sequence[Example],
    *,
    seed: int = 0,
    max_new_tokens: int = 16,
    batch_size: int = 16,
) -> DirectionResult:
    """Estimate the unlearning direction and score the interventions (see the module docstring).

    Args:
        base: The model before unlearning (left unchanged).
        unlearned: The unlearned model (left unchanged: the interventions are hooks, removed afterwards).
        estimate: Forget items the direction is estimated on (half A).
        retain: Retain items the control direction is estimated on.
        items: Forget items scored (half B: no subject shared with ``estimate``).
        seed: Seed of the random directions.
        max_new_tokens: Tokens decoded per answer.
        batch_size: Prompts per forward pass.

    Returns:
        The :class:`DirectionResult`.

    Raises:
        InputError: An empty item list, models of different widths or depths, or ``items`` sharing a
            subject with ``estimate``.
    """
    from unpact.evaluate import hooked_scores

    where = "unlearning_direction"
    estimate = check_items("estimate", estimate, Example, where=where)
    retain = check_items("retain", retain, Example, where=where)
    items = check_items("items", items, Example, where=where)
    for name, xs in (("estimate", estimate), ("retain", retain), ("items", items)):
        if not xs:
            raise InputError(f"{where}: no {name} items given", fix="pass at least one example")
    if (base.n_layers, base.d_model) != (unlearned.n_layers, unlearned.d_model):
        raise InputError(
            f"{where}: {base.name} has {base.n_layers} layers of width {base.d_model}, {unlearned.name} "
            f"{unlearned.n_layers} of width {unlearned.d_model}",
            fix="the direction is a difference of two models' activations: pass the unlearned model's own base",
        )
    check_disjoint_subjects(where, estimate, items)

    def states(subject: Subject, xs: Sequence[Example]) -> torch.Tensor:
        return last_token_states(subject, xs, batch_size=batch_size)

    delta = _shift(states(base, estimate), states(unlearned, estimate))  # (L + 1, d)
    delta_r = _shift(states(base, retain), states(unlearned, retain))
    change = (states(unlearned, items) - states(base, items))[:, 1:]  # (n, L, d)
    u = delta[1:] / delta[1:].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    along = torch.einsum("nld,ld->nl", change, u).square().sum(0)
    share = (along / change.square().sum(dim=(0, 2)).clamp_min(1e-12)).numpy()
    sources = {"forget": delta, "retain": delta_r, "random": _random_like(delta, seed)}
    keys: list[str] = []
    correct: list[np.ndarray] = []
    logprob: list[np.ndarray] = []

    def score(key: str, hooks: list) -> None:
        hit, lp = hooked_scores(unlearned, items, hooks, max_new_tokens=max_new_tokens, batch_size=batch_size)
        keys.append(key)
        correct.append(hit)
        logprob.append(lp)

    score("none", [])
    for how in INTERVENTIONS:
        for src, vec in sources.items():
            score(f"{how}/{src}", _hooks(vec, how))
    return DirectionResult(
        layer_names=[str(i) for i in range(unlearned.n_layers)],
        shift_norm=delta[1:].norm(dim=-1).numpy().astype(np.float64),
        retain_shift_norm=delta_r[1:].norm(dim=-1).numpy().astype(np.float64),
        share_explained=share.astype(np.float64),
        item_ids=[e.id for e in items],
        keys=keys,
        correct=np.stack(correct),
        logprob=np.stack(logprob),
        n_estimate=len(estimate),
        provenance=Provenance.of(unlearned, "unlearning_direction", base=base.name, seed=seed, position="last"),
    )
