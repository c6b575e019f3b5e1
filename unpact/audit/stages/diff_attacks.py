"""Stage ``diff_attacks``: attacks chosen from the circuit and lens diffs, on half A of the forget people.

Every unlearned model and the retain-only model (the control, treated as if unlearned) get the attacks of
:func:`unpact.attacks.tracer_diffs.diff_attacks`, chosen on (at most ``diff_attack_items`` of) half A of the
relearning split and scored on half B's base-known items (``representations/MODEL/diff_attacks/last.npz``).
:class:`~unpact.audit.stages.evidence.EvidenceStage` turns them into the exploratory white-box tests
``circuit-diff attack`` and ``lens-diff attack``, each against the same attack on the retain-only model.
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

__all__ = ["DiffAttackStage", "diff_attack_tests", "diff_attack_summary"]

#: Test name per attack key.
TEST_NAMES = {"circuit": "circuit-diff attack", "lens": "lens-diff attack"}


class DiffAttackStage(Stage):
    """The circuit- and lens-diff attacks per unlearned model and for the retain-only control."""

    name = "diff_attacks"
    shardable = True  # units: one model (and set) each; a split audit shares them out
    reads = ("records", "models")
    writes = ("representations/MODEL/diff_attacks",)

    def enabled(self, run: AuditRun) -> bool:
        if not run.config.diff_attacks or not run.models.unlearned or run.models.retain_only is None:
            return False
        if len({e.subject or e.id for e in run.forget}) < 2:
            logger.warning("the diff attacks need forget items about two subjects or more (two halves)")
            return False
        return True

    def _paths(self, run: AuditRun) -> dict[str, Path]:
        names = [RETAIN_ONLY, *run.models.unlearned]
        return {m: run.dir.representations_path(m, "diff_attacks", "last") for m in names}

    def done(self, run: AuditRun) -> bool:
        return all(p.exists() for p in self._paths(run).values())

    def work(self, run: AuditRun) -> Work:
        from unpact.audit.plan import Work

        left = sum(not p.exists() for p in self._paths(run).values())
        n_a = min(run.config.diff_attack_items, len(run.forget) // 2)
        n_b = min(run.config.weights_items, len(run.forget) // 2)
        # edge attribution on half A for both models; the lens (2) and the contrasts' states (4) on half A;
        # three decodes of half B
        return Work(attribute=left * 2 * n_a, forward=left * 6 * n_a, decode=left * 3 * n_b)

    def run(self, run: AuditRun) -> None:
        from unpact.attacks.tracer_diffs import DIFF_KEYS, DiffAttackResult, diff_attacks
        from unpact.audit.stages.weights import relearn_halves
        from unpact.evidence import spread

        cfg = run.config
        train, half_b = relearn_halves(run)
        estimate = spread(list(train["forget_a"]), cfg.diff_attack_items, "fact")
        todo = [(m, p) for m, p in self._paths(run).items() if not p.exists() and run.shard.owns(self.name, m)]
        bar = run.bar(len(todo), "diff attacks")
        for model, path in todo:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not half_b:  # saved empty, so the stage is done; no test is made from it (the warning says why)
                logger.warning("diff attacks: no base-known forget item in half B; nothing to score")
                z = np.zeros((len(DIFF_KEYS), 0))
                DiffAttackResult([], list(DIFF_KEYS), z.astype(bool), z, [], [], 0, np.zeros(0)).save(path)
            else:
                diff_attacks(
                    run.models.base,
                    run.models[model],
                    estimate,
                    list(train["retain"])[: len(estimate)],
                    half_b,
                    max_new_tokens=run.max_new_tokens,
                    batch_size=cfg.batch_size,
                ).save(path)
            bar.update(1)
            run.callback("diff_attacks", {"model": model})
        bar.close()


def _load(run: AuditRun, model: str) -> Any:
    from unpact.attacks.tracer_diffs import DiffAttackResult

    path = run.dir.representations_path(model, "diff_attacks", "last")
    if not run.config.diff_attacks or not path.exists():  # a stage switched off: its old files are not evidence
        return None
    r = DiffAttackResult.load(path)
    return r if r.item_ids else None


def diff_attack_tests(run: AuditRun, model: str, ids: list[str], clusters: dict[str, str]) -> list[Any]:
    """Exploratory white-box tests: each diff attack on the model against the same attack on the retain-only model."""
    from unpact.audit.stages.records import against_retain_only
    from unpact.evidence import paired_test

    if model not in run.models.unlearned:
        return []
    mine, ctl = _load(run, model), _load(run, RETAIN_ONLY)
    if mine is None or ctl is None:
        return []
    tests = []
    for key, name in TEST_NAMES.items():
        if key not in mine.keys or key not in ctl.keys:
            continue
        what = f"heads {', '.join(mine.heads) or 'none'}" if key == "circuit" else f"lens row {mine.layer}"
        note = f"{what} (chosen on {mine.n_estimate} half-A items); control: the retain-only model, chosen the same way"
        pairs = against_retain_only(mine, ctl, key, ids, clusters)
        tests.append(paired_test(name, "white_box", pairs, seed=run.config.seed, note=note))
    return tests


def diff_attack_summary(run: AuditRun, model: str) -> dict[str, Any]:
    """Half-B accuracy per condition, the heads and the lens row chosen."""
    from unpact.audit.stages.records import keyed_accuracy

    r = _load(run, model)
    if r is None:
        return {}
    return {
        **keyed_accuracy(run, model, r),
        "n_estimate": r.n_estimate,
        "heads": list(r.heads),
        "share_drop": list(r.share_drop),
        "layer": r.layer,
        "rank_gap": [round(float(x), 6) for x in r.rank_gap],
    }
