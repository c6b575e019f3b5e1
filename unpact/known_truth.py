"""Models whose truth is known by construction: the suite every change to the verdict runs.

On a toy world (any preset), :func:`known_truth_models` builds unlearned-looking models of which we know
what happened to the forget facts, and the verdict each must get:

============== ================================================================= ==================
name           how it is built                                                    truth
============== ================================================================= ==================
never          the retain-only model (never saw the forget facts)                removal
base-itself    the base model itself, presented as unlearned                     not_unlearned
masked         the base model with its output logits for the forget answers'     suppression
               first tokens lowered by ``mask`` whenever a forget subject's name
               is in the prompt: the weights hold everything
noise          the base model with Gaussian noise of ``noise`` x each weight's   destruction
               standard deviation added to every matrix
graded-X       the retain-only model fine-tuned on X% of the forget facts         removal (X < 50),
               (X = 10, 30, 100): it knows exactly those                          not_unlearned (100)
============== ================================================================= ==================

The mask of ``masked`` is a forward hook on the unembedding (the prompt's token ids are read by a pre-hook
on the causal-LM module): every pass of the model and every decode of its residual sees it, copies made with
:func:`copy.deepcopy` (relearning, quantization) keep it, and a pass that gives embeddings instead of ids
(integrated gradients) is not masked. The weights hold every fact: only evidence that reads the
representations (probes, directions) or changes the mask can find them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unpact.data import Example
from unpact.models import Subject, load_model

logger = logging.getLogger(__name__)

__all__ = ["KnownTruth", "known_truth_models", "mask_answers", "add_noise", "GRADES"]

#: The graded cases: the retain-only model fine-tuned on this share of the forget facts.
GRADES: tuple[float, ...] = (0.1, 0.3, 1.0)


@dataclass(frozen=True)
class KnownTruth:
    """One model of the suite and the verdict it must get.

    Attributes:
        name: ``never``, ``base-itself``, ``masked``, ``noise``, ``graded-10``...
        subject: The model.
        truth: The verdict label it must get.
        how: One line on how it was built.
    """

    name: str
    subject: Subject
    truth: str
    how: str


def _contains(row: list[int], needle: list[int]) -> bool:
    n = len(needle)
    return n > 0 and any(row[i : i + n] == needle for i in range(len(row) - n + 1))


def mask_answers(base: Subject, forget: Sequence[Example], *, mask: float = 30.0) -> Subject:
    """A copy of ``base`` whose logits for the forget answers' first tokens drop by ``mask`` for forget subjects.

    Args:
        base: The model to copy (left unchanged).
        forget: The forget items: their subjects trigger the mask, their answers' first tokens are masked.
        mask: How much the logits drop (a large finite number, so fine-tuning still has gradients).

    Returns:
        The masked model (see the module docstring).
    """
    tok = base.tokenizer
    subjects = sorted({e.subject for e in forget if e.subject})
    needles = [list(tok(" " + s, add_special_tokens=False)["input_ids"]) for s in subjects]
    needles += [list(tok(s, add_special_tokens=False)["input_ids"]) for s in subjects]
    firsts = sorted({int(base.encode(e).answer_ids[0]) for e in forget})
    model = copy.deepcopy(base.model)
    flags: dict[str, Any] = {"rows": None}

    def pre(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:  # embeddings given: no ids to read, no mask
            flags["rows"] = None
            return
        if ids.shape[1] > 1 or flags["rows"] is None or len(flags["rows"]) != ids.shape[0]:
            flags["rows"] = [any(_contains(r, n) for n in needles) for r in ids.tolist()]

    def post(module: torch.nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
        rows = flags["rows"]
        if rows is None or not any(rows) or out.shape[0] != len(rows):
            return None
        sel = torch.tensor(rows, device=out.device, dtype=out.dtype).reshape(-1, *([1] * (out.dim() - 1)))
        delta = torch.zeros(out.shape[-1], device=out.device, dtype=out.dtype)
        delta[firsts] = mask
        return out - sel * delta

    model.register_forward_pre_hook(pre, with_kwargs=True)
    # on the unembedding: the model's own logits and every decode of the residual (Subject.decode_resid) see it
    load_model(model, tok).unembed.register_forward_hook(post)
    return load_model(model, tok, name=f"{base.name}+masked", prompt_format=base.prompt_format)


def add_noise(base: Subject, *, noise: float = 1.0, seed: int = 0) -> Subject:
    """A copy of ``base`` with Gaussian noise of ``noise`` x each matrix's standard deviation added."""
    model = copy.deepcopy(base.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.add_(torch.randn(p.shape, generator=gen).to(p) * p.std() * noise)
    return load_model(model, base.tokenizer, name=f"{base.name}+noise{noise:g}", prompt_format=base.prompt_format)


def known_truth_models(
    base: Subject,
    retain_only: Subject,
    forget: Sequence[Example],
    retain: Sequence[Example],
    *,
    seed: int = 0,
    grades: Sequence[float] = GRADES,
    progress: bool = False,
) -> list[KnownTruth]:
    """The suite's models (see the module docstring); ``base`` and ``retain_only`` are left unchanged.

    The graded models are fine-tuned with the unlearning loop (``task_vector`` with ``alpha=-1``: plain
    fine-tuning, teacher-forced answer loss, lr 1e-3, 300 steps) on the first X% of the forget facts (a fact:
    one subject's gold answer, with all its phrasings), repeated to a third of the mix, and the whole retain set.
    """
    from unpact.evidence import cluster_keys
    from unpact.unlearn import unlearn

    out = [
        KnownTruth("never", retain_only, "removal", "the retain-only model"),
        KnownTruth("base-itself", base, "not_unlearned", "the base model itself"),
        KnownTruth("masked", mask_answers(base, forget), "suppression", "base + logit mask on forget answers"),
        KnownTruth("noise", add_noise(base, seed=seed), "destruction", "base + Gaussian noise (1 x weight std)"),
    ]
    keys = cluster_keys(forget, by="fact")
    facts_in_order = list(dict.fromkeys(keys[e.id] for e in forget))
    for g in grades:
        keep = set(facts_in_order[: max(1, round(g * len(facts_in_order)))])
        facts = [e for e in forget if keys[e.id] in keep]
        # task_vector sets theta_ref - alpha * (theta_ft - theta_ref): alpha=-1 keeps the fine-tuned weights
        # the facts repeated to a third of the mix, the rest the whole retain set: the fine-tuning keeps
        # every retain fact (a mix with only a few retain items overfits them and costs the others)
        reps = max(1, round(len(retain) / (2 * len(facts))))
        mix = facts * reps + list(retain)
        model = unlearn(
            retain_only, mix, None, method="task_vector", alpha=-1.0, lr=1e-3, steps=300, seed=seed, progress=progress
        )
        truth = "not_unlearned" if g >= 0.5 else "removal"
        out.append(
            KnownTruth(
                f"graded-{round(100 * g)}", model, truth, f"retain-only + fine-tuned on {g:.0%} of the forget facts"
            )
        )
    return out
