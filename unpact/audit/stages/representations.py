"""Stages ``probes`` and ``directions``: is the forgotten answer still in the residual stream?

Per-layer linear probes (:func:`unpact.representations.fit_probes`) are fit on every model, the base
and the retain-only model included: trained on retain people, tested on the forget items the base model
answers, at the prompt's last token and (where every question names its subject) at the subject's last
token. The retain-only model's probe is the floor (what can be guessed about a person never seen);
without one, the same model's shuffled-label probe is the control. One result per model and position under
``representations/MODEL/probe/{last,subject}.npz``, resumable; :class:`~unpact.audit.stages.evidence.EvidenceStage`
turns them into the white-box ``probe`` test.

``directions`` estimates each unlearned model's unlearning direction on half A of the forget people
(:func:`unpact.representations.unlearning_direction`, the relearning split), ablates it or adds the mean
shift back with hooks, and scores half B, against the same done with the direction estimated on retain
prompts and with random directions (``representations/MODEL/direction/last.npz``; white-box tests
``direction ablate`` and ``direction add``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unpact.audit.context import AuditRun, Stage

if TYPE_CHECKING:
    from unpact.audit.plan import Work

logger = logging.getLogger(__name__)

__all__ = ["ProbeStage", "DirectionStage"]


class ProbeStage(Stage):
    """Per-layer probes of every model (see the module docstring)."""

    name = "probes"
    shardable = True  # units: one model (and set) each; a split audit shares them out
    reads = ("records", "models")
    writes = ("representations/MODEL/probe",)

    def enabled(self, run: AuditRun) -> bool:
        if not run.config.probes:
            return False
        if len({e.subject or e.id for e in run.probe_train}) < 2:
            logger.warning("probes need retain items about at least two subjects (one to validate): skipped")
            return False
        return True

    def _paths(self, run: AuditRun) -> dict[tuple[str, str], Path]:
        """(model, position) -> result file: the last prompt token, and the subject's where every item names it."""
        positions = ["last", "subject"] if _names_subjects(run) else ["last"]
        return {(m, p): run.dir.representations_path(m, "probe", p) for m in run.models.names for p in positions}

    def done(self, run: AuditRun) -> bool:
        return all(p.exists() for p in self._paths(run).values())

    def work(self, run: AuditRun) -> Work:
        from unpact.audit.plan import Work

        left = sum(not p.exists() for p in self._paths(run).values())
        # one prompt-only forward pass per item; the two probe fits (300 full-batch steps over every layer)
        # cost about as much as attributing a fifth of the items (6 s per model on the default world)
        n = len(run.probe_train) + len(run.forget)
        return Work(forward=left * n, attribute=left * n // 5)

    def run(self, run: AuditRun) -> None:
        from unpact.audit.stages.weights import known_items
        from unpact.representations import ProbeResult, fit_probes

        cfg = run.config
        test = known_items(run, run.forget)
        train = run.probe_train
        todo = [(key, p) for key, p in self._paths(run).items() if not p.exists() and run.shard.owns(self.name, *key)]
        bar = run.bar(len(todo), "probes")
        for (model, position), path in todo:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not test:  # saved empty, so the stage is done and the white-box level says why
                logger.warning("probes: no base-known forget item; nothing to decode")
                e = np.zeros((1, 0), dtype=np.int64)
                ProbeResult(["embed"], [], e, np.zeros(0, np.int64), np.zeros(1), e, 0, 0).save(path)
            else:
                fit_probes(
                    run.models[model],
                    train,
                    test,
                    seed=cfg.seed,
                    batch_size=cfg.batch_size,
                    position=position,  # type: ignore[arg-type]
                ).save(path)
            bar.update(1)
            run.callback("probes", {"model": model, "position": position})
        bar.close()


def _names_subjects(run: AuditRun) -> bool:
    """Whether every probe item's question names its subject (case ignored): the subject-token probe needs it."""
    import re

    items = [*run.probe_train, *run.forget]
    ok = all(e.subject and re.search(re.escape(e.subject), e.prompt, re.IGNORECASE) for e in items)
    if not ok:
        logger.info("probes: some questions do not name their subject; probing the last prompt token only")
    return ok


class DirectionStage(Stage):
    """The unlearning direction of every unlearned model, ablated or added back (see the module docstring)."""

    name = "directions"
    shardable = True  # units: one model (and set) each; a split audit shares them out
    reads = ("records", "models")
    writes = ("representations/MODEL/direction",)

    def enabled(self, run: AuditRun) -> bool:
        if not run.config.directions:
            return False
        if len({e.subject or e.id for e in run.forget}) < 2:
            logger.warning("the unlearning direction needs forget items about two subjects or more (two halves)")
            return False
        return bool(run.models.unlearned)

    def _paths(self, run: AuditRun) -> dict[str, Path]:
        return {m: run.dir.representations_path(m, "direction", "last") for m in run.models.unlearned}

    def done(self, run: AuditRun) -> bool:
        return all(p.exists() for p in self._paths(run).values())

    def work(self, run: AuditRun) -> Work:
        from unpact.audit.plan import Work
        from unpact.representations.directions import INTERVENTIONS, SOURCES

        left = sum(not p.exists() for p in self._paths(run).values())
        n_b = min(run.config.weights_items, len(run.forget) // 2)
        # states of both models on half A, the retain sample and half B; half B decoded once per intervention
        return Work(
            forward=left * 2 * (len(run.forget) + n_b), decode=left * n_b * (1 + len(INTERVENTIONS) * len(SOURCES))
        )

    def run(self, run: AuditRun) -> None:
        from unpact.audit.stages.weights import relearn_halves
        from unpact.representations.directions import unlearning_direction

        cfg = run.config
        train, half_b = relearn_halves(run)
        todo = [(m, p) for m, p in self._paths(run).items() if not p.exists() and run.shard.owns(self.name, m)]
        bar = run.bar(len(todo), "directions")
        for model, path in todo:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not half_b:  # saved empty, so the stage is done and the evidence says why
                from unpact.representations import DirectionResult

                logger.warning("unlearning direction: no base-known forget item in half B; nothing to score")
                z = np.zeros(0)
                empty = np.zeros((0, 0))
                DirectionResult([], z, z, z, [], [], empty.astype(bool), empty).save(path)
            else:
                unlearning_direction(
                    run.models.base,
                    run.models[model],
                    list(train["forget_a"]),
                    list(train["retain"]),
                    half_b,
                    seed=cfg.seed,
                    max_new_tokens=run.max_new_tokens,
                    batch_size=cfg.batch_size,
                ).save(path)
            bar.update(1)
            run.callback("directions", {"model": model})
        bar.close()
