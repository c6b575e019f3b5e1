"""Stages ``attribution``, ``lens`` and ``circuits``: tracer results of every model, saved per item."""

from __future__ import annotations

import logging
from typing import Any

from unpact.audit.auditdir import BASE
from unpact.audit.context import AuditRun, Stage
from unpact.audit.plan import Work
from unpact.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["AttributionStage", "LensStage", "CircuitsStage"]


class AttributionStage(Stage):
    """Attribution of the gold answer on every model, forget items and attacked retain items
    (compare with the base's: :meth:`unpact.attribution.Attribution.diff`; the destructive rate)."""

    name = "attribution"
    reads = ("models", "items")
    writes = ("tracers/MODEL/forget", "tracers/MODEL/retain")

    def _missing(self, run: AuditRun) -> int:
        return sum(
            not run.dir.tracer_path(m, s, e.id).exists()
            for m in run.models.names
            for s in ("forget", "retain")
            for e in run.split_items("forget" if s == "forget" else "retain_attacked")
        )

    def done(self, run: AuditRun) -> bool:
        return self._missing(run) == 0

    def work(self, run: AuditRun) -> Work:
        return Work(attribute=self._missing(run))  # the key-word stage's base attributions included

    def run(self, run: AuditRun) -> None:
        bar = run.bar(2 * len(run.models.names), self.name)
        for name in run.models.names:
            for split in ("forget", "retain"):
                run.attributions(name, split)
                bar.update(1)
        bar.close()


class LensStage(Stage):
    """Logit-lens trajectories of the forget items on every model (for the report)."""

    name = "lens"
    reads = ("models", "items")
    writes = ("tracers/MODEL/lens",)

    def enabled(self, run: AuditRun) -> bool:
        return run.config.lens

    def done(self, run: AuditRun) -> bool:
        return self.work(run).forward == 0

    def work(self, run: AuditRun) -> Work:
        return Work(
            forward=sum(not run.dir.tracer_path(m, "lens", e.id).exists() for m in run.models.names for e in run.forget)
        )

    def run(self, run: AuditRun) -> None:
        from unpact.lens import logit_lens

        bar = run.bar(len(run.models.names) * len(run.forget), self.name)
        for name, subject in run.models.items():
            for _, ch in run.chunks(run.forget):
                paths = [run.dir.tracer_path(name, "lens", e.id) for e in ch]
                if not all(p.exists() for p in paths):
                    # the report reads ranks, log-probs and top tokens: the full distributions
                    # (layers x positions x vocab per item) would cost a file write each
                    lens = logit_lens(subject, ch, keep_distributions=False, batch_size=len(ch))
                    for t, p in zip(lens, paths):
                        t.save(p)
                    run.callback(self.name, {"model": name})
                bar.update(len(ch))
        bar.close()


class CircuitsStage(Stage):
    """EAP-IG edge scores of ``config.circuits`` forget items on the base model, and their circuit
    diff on every other model (corruption: the subject swapped for another item's; mean ablation when
    no same-length donor exists). For the report only: circuits do not change records or verdicts."""

    name = "circuits"
    reads = ("models", "items")
    writes = ("tracers/MODEL/circuits",)

    def enabled(self, run: AuditRun) -> bool:
        return run.config.circuits > 0

    def _items(self, run: AuditRun) -> list[Any]:
        return [e for e in run.forget if e.subject and e.subject in e.prompt][: run.config.circuits]

    def done(self, run: AuditRun) -> bool:
        return self.work(run).attribute == 0

    def work(self, run: AuditRun) -> Work:
        missing = sum(
            not run.dir.tracer_path(m, "circuits", e.id).exists() for m in run.models.names for e in self._items(run)
        )
        return Work(attribute=missing)

    def run(self, run: AuditRun) -> None:
        from unpact.circuits import circuit_diff, edge_attribution_patching
        from unpact.circuits.results import EdgeScores

        items = self._items(run)
        donors = [e for e in run.forget + run.retain if e.subject and e.subject in e.prompt]
        bar = run.bar(len(items), self.name)
        for e in items:
            others = [d for d in donors if d.subject != e.subject]
            # The base and every other model of one item always share the corruption.
            how: dict[str, Any] = {"corrupt": others, "method": "eap-ig", "seed": run.config.seed}
            base_path = run.dir.tracer_path(BASE, "circuits", e.id)
            try:
                if base_path.exists():
                    base_scores = EdgeScores.load(base_path)
                    if base_scores.corruption == "mean":
                        how = {"corrupt": "mean", "method": "eap"}
                else:
                    try:
                        base_scores = edge_attribution_patching(run.models.base, e, **how)
                    except InputError:
                        how = {"corrupt": "mean", "method": "eap"}
                        base_scores = edge_attribution_patching(run.models.base, e, **how)
                    base_scores.save(base_path)
                for name, subject in run.models.items():
                    path = run.dir.tracer_path(name, "circuits", e.id)
                    if name == BASE or path.exists():
                        continue
                    circuit_diff(base_scores, edge_attribution_patching(subject, e, **how)).save(path)
            except (NotImplementedError, InputError) as exc:
                logger.warning("no circuit for item %s: %s", e.id, exc)
            bar.update(1)
        bar.close()
