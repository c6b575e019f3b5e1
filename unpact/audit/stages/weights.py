"""Stages ``relearn`` and ``quantize``: is the knowledge still in the weights? Attacks on copies.

``relearn`` fine-tunes copies of every unlearned model **and of the retain-only model** (the control,
identically: same learning rate, steps, seed) on half A of the forget facts (and, for comparison, on
retain items, on unrelated text and on half B itself), and measures half B, whose facts share no subject
with half A, at steps 0, 1, 2, 4, ... ``relearn_steps``; plus the in-context version (half A's facts
as few-shot examples, no weight change). ``quantize`` scores round-to-nearest int8 / int4 copies of every
model on the forget items. Both save one result per (model, run) under ``weights/MODEL/KIND/`` and are
resumable; the user's models are never changed. :class:`~unpact.audit.stages.evidence.EvidenceStage`
turns them into paired tests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unpact._result import SavedResult
from unpact.audit.auditdir import BASE, RETAIN_ONLY
from unpact.audit.context import AuditRun, Stage
from unpact.data import Example
from unpact.evidence import spread

if TYPE_CHECKING:
    from unpact.audit.plan import Work

logger = logging.getLogger(__name__)

__all__ = [
    "RelearnStage",
    "QuantizeStage",
    "QuantEval",
    "schedule",
    "weight_items",
    "relearn_halves",
    "known_items",
]

#: Retain items each quantized model is scored on (its retain accuracy after quantization).
QUANT_RETAIN_ITEMS = 32


def schedule(last: int) -> list[int]:
    """Steps ``0, 1, 2, 4, ...`` up to ``last`` (``last`` included)."""
    out, k = [0], 1
    while k < last:
        out.append(k)
        k *= 2
    return [*out, last] if last > 0 else out


def known_items(run: AuditRun, items: Sequence[Example]) -> list[Example]:
    """The items the base model answers right on the plain prompt (from the accuracy stage's records)."""
    from unpact.scoring import is_hit

    recs = run.store.records
    return [e for e in items if (r := recs.get((BASE, e.id, "plain"))) is not None and is_hit(r)]


def weight_items(run: AuditRun) -> list[Example]:
    """The forget items the weight attacks measure: base-known, spread over facts, ``weights_items`` at most."""
    return spread(known_items(run, run.forget), run.config.weights_items, "fact")


def relearn_halves(run: AuditRun) -> tuple[dict[str, Any], list[Example]]:
    """``(train sets, half B's base-known items measured)``.

    The train sets are :func:`unpact.weights.relearning.relearn_sets`'s (half A, a seeded retain sample
    as large as half A, unrelated text, half B); no subject is in both halves.
    """
    from unpact.weights.relearning import relearn_sets

    sets, b = relearn_sets(run.forget, run.retain, seed=run.config.seed)
    return sets, spread(known_items(run, b), run.config.weights_items, "fact")


def _relearn_models(run: AuditRun) -> list[str]:
    return [RETAIN_ONLY, *run.models.unlearned] if run.models.retain_only is not None else []


class RelearnStage(Stage):
    """Relearning curves of half B for every unlearned model and the retain-only control."""

    name = "relearn"
    shardable = True  # units: one model (and set) each; a split audit shares them out
    reads = ("records", "models")
    writes = ("weights/MODEL/relearn",)
    train_sets = ("forget_a", "retain", "unrelated", "forget_b", "in_context")

    def enabled(self, run: AuditRun) -> bool:
        if not run.config.relearn:
            return False
        if run.models.retain_only is None:
            logger.info("relearning needs a retain-only model as its control: skipped")
            return False
        if len({e.subject or e.id for e in run.forget}) < 2:
            logger.warning("relearning needs forget items about at least two subjects (two halves): skipped")
            return False
        return True

    def _paths(self, run: AuditRun) -> dict[tuple[str, str], Path]:
        return {(m, s): run.dir.weights_path(m, "relearn", s) for m in _relearn_models(run) for s in self.train_sets}

    def done(self, run: AuditRun) -> bool:
        return all(p.exists() for p in self._paths(run).values())

    def work(self, run: AuditRun) -> Work:
        from unpact.audit.plan import Work

        left = [k for k, p in self._paths(run).items() if not p.exists()]
        n_b = min(run.config.weights_items, len(run.forget) // 2)
        n_steps = len(schedule(run.config.relearn_steps))
        # a fine-tuning step costs about an attribution pass; every checkpoint decodes half B
        return Work(
            decode=sum(n_b * (1 if s == "in_context" else n_steps) for _, s in left),
            attribute=sum(run.config.relearn_steps for _, s in left if s != "in_context"),
        )

    def run(self, run: AuditRun) -> None:
        from unpact.weights.relearning import relearn

        cfg = run.config
        train, half_b = relearn_halves(run)
        half_a = list(train["forget_a"])
        if not half_b:  # saved as empty curves, so the stage is done and the weights level says why
            logger.warning("relearning: no base-known forget item in half B; nothing to measure")
            if not run.shard.is_main:  # rank 0 saves the empty curves
                return
            from unpact.weights.relearning import RelearnCurve

            for (_, train_set), path in self._paths(run).items():
                path.parent.mkdir(parents=True, exist_ok=True)
                steps0 = [0] if train_set == "in_context" else schedule(cfg.relearn_steps)
                empty = np.zeros((len(steps0), 0))
                RelearnCurve(train_set, steps0, [], empty.astype(bool), empty, 0.0, cfg.seed, 0, 0, None).save(path)
            return
        steps = schedule(cfg.relearn_steps)
        todo = [(k, p) for k, p in self._paths(run).items() if not p.exists() and run.shard.owns(self.name, *k)]
        bar = run.bar(len(todo), "relearn")
        for (model, train_set), path in todo:
            subject = run.models[model]
            path.parent.mkdir(parents=True, exist_ok=True)
            if train_set == "in_context":
                curve = _in_context(subject, half_a, half_b, cfg.seed, run.max_new_tokens)
            else:
                curve = relearn(
                    subject,
                    train[train_set],
                    half_b,
                    train_set=train_set,
                    steps=steps,
                    lr=cfg.relearn_lr,
                    seed=cfg.seed,
                    max_new_tokens=run.max_new_tokens,
                )
            curve.save(path)
            bar.update(1)
            run.callback("relearn", {"model": model, "train_set": train_set})
        bar.close()


#: Solved examples shown before each question by in-context relearning (fewer when the prompt gets too long).
IN_CONTEXT_SHOTS = (4, 2, 1)


def _in_context(subject: Any, shots: Sequence[Example], items: Sequence[Example], seed: int, max_new: int) -> Any:
    """The in-context result stored as a one-step curve (step 0: no weight change), with as many shots as fit."""
    from unpact.errors import InputError
    from unpact.provenance import Provenance
    from unpact.weights.relearning import RelearnCurve, in_context

    for n_shots in IN_CONTEXT_SHOTS:
        try:
            correct, logprob = in_context(subject, shots, items, n_shots=n_shots, seed=seed, max_new_tokens=max_new)
            break
        except InputError as exc:  # a prompt longer than the model's context
            logger.info("in-context relearning with %d shots does not fit (%s); fewer", n_shots, exc)
    else:
        n_shots = 0
        correct, logprob = in_context(subject, shots, items, n_shots=0, seed=seed, max_new_tokens=max_new)
    return RelearnCurve(
        train_set="in_context",
        steps=[0],
        eval_ids=[e.id for e in items],
        correct=np.asarray(correct, dtype=bool)[None, :],
        logprob=np.asarray(logprob, dtype=np.float64)[None, :],
        lr=0.0,
        seed=seed,
        batch_size=0,
        n_train=n_shots,
        provenance=Provenance.of(subject, "in_context", n_shots=n_shots),
    )


@dataclass
class QuantEval(SavedResult):
    """One quantized model's scores (``weights/MODEL/quantize/SCHEME.npz``).

    Attributes:
        scheme: The quantization scheme's name (``int8-channel``, ``int4-g32``...).
        share_quantized: Share of the model's parameters quantized.
        code_agreement: Share of quantized weights whose code equals the base model's.
        forget_ids: The forget items scored (:func:`weight_items`).
        forget_correct: ``(n_forget,)`` answered right (lenient match) after quantization.
        forget_logprob: ``(n_forget,)`` mean gold-answer log-prob after quantization.
        retain_correct: ``(n_retain,)`` the first retain items answered right after quantization.
        report: The quantization report (layers, backend, parameter counts).
    """

    scheme: str
    share_quantized: float
    code_agreement: float | None
    forget_ids: list[str]
    forget_correct: np.ndarray
    forget_logprob: np.ndarray
    retain_correct: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


class QuantizeStage(Stage):
    """Forget and retain accuracy of int8 / int4 round-to-nearest copies of every model."""

    name = "quantize"
    shardable = True  # units: one model (and set) each; a split audit shares them out
    reads = ("records", "models")
    writes = ("weights/MODEL/quantize",)

    def enabled(self, run: AuditRun) -> bool:
        return run.config.quantize

    def _paths(self, run: AuditRun) -> dict[tuple[str, Any], Path]:
        from unpact.weights.quantization import DEFAULT_SCHEMES

        return {
            (m, s): run.dir.weights_path(m, "quantize", s.name()) for m in run.models.names for s in DEFAULT_SCHEMES
        }

    def done(self, run: AuditRun) -> bool:
        return all(p.exists() for p in self._paths(run).values())

    def work(self, run: AuditRun) -> Work:
        from unpact.audit.plan import Work

        left = sum(not p.exists() for p in self._paths(run).values())
        return Work(decode=left * (min(run.config.weights_items, len(run.forget)) + QUANT_RETAIN_ITEMS))

    def run(self, run: AuditRun) -> None:
        from unpact.evaluate import evaluate
        from unpact.weights.quantization import quantize

        forget = weight_items(run)
        retain = list(run.retain[:QUANT_RETAIN_ITEMS])
        if not forget:  # saved as empty results, so the stage is done
            logger.warning("quantization: no base-known forget item; nothing to measure")
            if not run.shard.is_main:  # rank 0 saves the empty results
                return
            for (_, scheme), path in self._paths(run).items():
                path.parent.mkdir(parents=True, exist_ok=True)
                e = np.zeros(0)
                QuantEval(scheme.name(), float("nan"), None, [], e.astype(bool), e, e.astype(bool)).save(path)
            return
        todo = [(k, p) for k, p in self._paths(run).items() if not p.exists() and run.shard.owns(self.name, *k)]
        bar = run.bar(len(todo), "quantize")
        for (model, scheme), path in todo:
            q, report = quantize(run.models[model], scheme, reference=run.models.base)
            res = evaluate(q, forget + retain, max_new_tokens=run.max_new_tokens, batch_size=run.config.batch_size)
            recs = res.records
            path.parent.mkdir(parents=True, exist_ok=True)
            QuantEval(
                scheme=scheme.name(),
                share_quantized=float(report.share_quantized),
                code_agreement=None if report.code_agreement is None else float(report.code_agreement),
                forget_ids=[e.id for e in forget],
                forget_correct=np.array([r.lenient for r in recs[: len(forget)]], dtype=bool),
                forget_logprob=np.array([r.answer_logprob for r in recs[: len(forget)]], dtype=np.float64),
                retain_correct=np.array([r.lenient for r in recs[len(forget) :]], dtype=bool),
                report={"backend": report.backend, "layers": len(report.layers), "n_params": report.n_params_total},
            ).save(path)
            del q
            bar.update(1)
            run.callback("quantize", {"model": model, "scheme": scheme.name()})
        bar.close()
