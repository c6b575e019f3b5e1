"""Stage ``soft_prompt``: the embedding-space attack, learned on half A of the forget people, scored on half B.

Every unlearned model and the retain-only model (the control) get a soft prompt learned the same way
(:func:`unpact.attacks.soft_prompt.soft_prompt_attack`) on half A of the relearning split, and are scored
on half B's base-known items (``representations/MODEL/soft_prompt/last.npz``);
:class:`~unpact.audit.stages.evidence.EvidenceStage` turns them into the exploratory white-box test
``soft prompt``. Without a retain-only model there is no control and the stage does not run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unpact.audit.auditdir import RETAIN_ONLY
from unpact.audit.context import AuditRun, Stage

if TYPE_CHECKING:
    from unpact.audit.plan import Work

logger = logging.getLogger(__name__)

__all__ = ["SoftPromptStage"]


class SoftPromptStage(Stage):
    """A soft prompt per unlearned model and for the retain-only control (see the module docstring)."""

    name = "soft_prompt"
    shardable = True  # units: one model (and set) each; a split audit shares them out
    reads = ("records", "models")
    writes = ("representations/MODEL/soft_prompt",)

    def enabled(self, run: AuditRun) -> bool:
        if not run.config.soft_prompt or not run.models.unlearned:
            return False
        if run.models.retain_only is None:
            logger.info("soft prompt: no retain-only model to control it; skipped")
            return False
        if len({e.subject or e.id for e in run.forget}) < 2:
            logger.warning("the soft prompt needs forget items about two subjects or more (two halves)")
            return False
        return True

    def _paths(self, run: AuditRun) -> dict[str, Path]:
        names = [RETAIN_ONLY, *run.models.unlearned]
        return {m: run.dir.representations_path(m, "soft_prompt", "last") for m in names}

    def done(self, run: AuditRun) -> bool:
        return all(p.exists() for p in self._paths(run).values())

    def work(self, run: AuditRun) -> Work:
        from unpact.audit.plan import Work

        left = sum(not p.exists() for p in self._paths(run).values())
        n_b = min(run.config.weights_items, len(run.forget) // 2)
        # each step a forward and a backward pass over one batch (about two attributions' worth of passes)
        return Work(forward=left * run.config.soft_prompt_steps * run.config.batch_size * 3, decode=left * 2 * n_b)

    def run(self, run: AuditRun) -> None:
        from unpact.attacks.soft_prompt import SOFT_KEYS, SoftPromptResult, soft_prompt_attack
        from unpact.audit.stages.weights import relearn_halves

        cfg = run.config
        train, half_b = relearn_halves(run)
        todo = [(m, p) for m, p in self._paths(run).items() if not p.exists() and run.shard.owns(self.name, m)]
        bar = run.bar(len(todo), "soft prompt")
        for model, path in todo:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not half_b:  # saved empty, so the stage is done; no test is made from it (the warning says why)
                logger.warning("soft prompt: no base-known forget item in half B; nothing to score")
                z = np.zeros((len(SOFT_KEYS), 0))
                SoftPromptResult(
                    np.zeros((0, 0)), np.zeros(0), np.zeros(0), 0, [], list(SOFT_KEYS), z.astype(bool), z
                ).save(path)
            else:
                soft_prompt_attack(
                    run.models[model],
                    list(train["forget_a"]),
                    half_b,
                    n_tokens=cfg.soft_prompt_tokens,
                    steps=cfg.soft_prompt_steps,
                    seed=cfg.seed,
                    max_new_tokens=run.max_new_tokens,
                    batch_size=cfg.batch_size,
                ).save(path)
            bar.update(1)
            run.callback("soft_prompt", {"model": model})
        bar.close()


def _load(run: AuditRun, model: str) -> Any:
    """The model's saved :class:`~unpact.attacks.soft_prompt.SoftPromptResult`, or ``None`` (stage off / not run)."""
    from unpact.attacks.soft_prompt import SoftPromptResult

    path = run.dir.representations_path(model, "soft_prompt", "last")
    if not run.config.soft_prompt or not path.exists():  # a stage switched off: its old files are not evidence
        return None
    r = SoftPromptResult.load(path)
    return r if r.item_ids else None


def soft_prompt_tests(run: AuditRun, model: str, ids: list[str], clusters: dict[str, str]) -> list[Any]:
    """The exploratory white-box test ``soft prompt``: the model's half-B hits under its own soft prompt
    against the retain-only model's under its own, on the model's forgotten items."""
    from unpact.audit.stages.records import against_retain_only
    from unpact.evidence import paired_test

    if model == RETAIN_ONLY or model not in run.models.unlearned:
        return []
    mine, ctl = _load(run, model), _load(run, RETAIN_ONLY)
    if mine is None or ctl is None:
        return []
    pairs = against_retain_only(mine, ctl, "soft", ids, clusters)
    note = f"learned on {mine.n_train} half-A items, {mine.best_step} steps; control: the retain-only model's own"
    return [paired_test("soft prompt", "white_box", pairs, seed=run.config.seed, note=note)]


def soft_prompt_summary(run: AuditRun, model: str) -> dict[str, Any]:
    """Accuracy and gold log-probability on half B with and without the soft prompt; the training run."""
    from unpact.audit.stages.records import keyed_accuracy

    r = _load(run, model)
    if r is None:
        return {}
    return {
        **keyed_accuracy(run, model, r),
        "n_train": r.n_train,
        "best_step": r.best_step,
        "steps": len(r.losses),
        "logprob": {k: round(float(r.logprob[j].mean()), 6) for j, k in enumerate(r.keys)},
        "val_losses": [round(float(x), 6) for x in r.val_losses],
    }
