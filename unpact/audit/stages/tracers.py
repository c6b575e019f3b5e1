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
    shardable = True

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
                run.attributions(name, split, load=not run.shard.split)  # a rank computes its chunks only
                bar.update(1)
        bar.close()


class LensStage(Stage):
    """Logit-lens trajectories of the forget items on every model (for the report)."""

    name = "lens"
    reads = ("models", "items")
    writes = ("tracers/MODEL/lens",)
    shardable = True

    def enabled(self, run: AuditRun) -> bool:
        return run.config.lens

    def done(self, run: AuditRun) -> bool:
        return self.work(run).forward == 0

    def work(self, run: AuditRun) -> Work:
        return Work(
            forward=sum(not run.dir.tracer_path(m, "lens", e.id).exists() for m in run.models.names for e in run.forget)
        )

    def run(self, run: AuditRun) -> None:
        from concurrent.futures import Future, as_completed

        from unpact.audit.workers import lens_unit, unit_threads, worker_count

        tuned = self._tuned_lenses(run)
        bar = run.bar(len(run.models.names) * len(run.forget), self.name)
        units: list[tuple[str, list[Any], list[str]]] = []
        for name in run.models.names:
            for start, ch in run.chunks(run.forget):
                files = [run.dir.tracer_path(name, "lens", e.id) for e in ch]
                if all(p.exists() for p in files) or not run.shard.owns("lens", name, start):
                    bar.update(len(ch))
                else:
                    units.append((name, ch, [str(p) for p in files]))
        n = worker_count(run)
        if n > 1 and len(units) > 1:
            pool = run.record_workers(n)
            futures: dict[Future[None], tuple[str, int]] = {
                pool.submit_lens(name, ch, paths, tuned.get(name)): (name, len(ch)) for name, ch, paths in units
            }
            for f in as_completed(futures):
                f.result()
                name, k = futures[f]
                run.callback(self.name, {"model": name})
                bar.update(k)
        else:
            with unit_threads(run):
                for name, ch, paths in units:
                    lens_unit(run.models[name], ch, paths, tuned.get(name))
                    run.callback(self.name, {"model": name})
                    bar.update(len(ch))
        bar.close()

    def _tuned_lenses(self, run: AuditRun) -> dict[str, str]:
        """With ``lens_method="tuned"``: model -> its tuned lens's path (fit on the probes' retain items if missing)."""
        if run.config.lens_method != "tuned":
            return {}
        from unpact.representations import fit_tuned_lens

        out = {}
        for name in run.models.names:
            path = run.dir.representations_path(name, "tuned_lens", "lens")
            if not path.exists():
                logger.info("fitting a tuned lens for %s on %d retain items", name, len(run.probe_train))
                path.parent.mkdir(parents=True, exist_ok=True)
                fit_tuned_lens(
                    run.models[name],
                    run.probe_train,
                    forget=run.forget,
                    seed=run.config.seed,
                    progress=run.config.progress,
                ).save(path)
            out[name] = str(path)
        return out


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
