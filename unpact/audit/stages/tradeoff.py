"""Stage ``tradeoff``: which point of its strength sweep each audited model is, and why (toy world, matched)."""

from __future__ import annotations

import json
from typing import Any

from unpact.audit.auditdir import BASE, AuditDir
from unpact.audit.context import AuditRun, Stage

__all__ = ["TradeoffStage"]


class TradeoffStage(Stage):
    """Copies the sweep's choice into the summary: per audited method its point, strength and reason
    (section ``tradeoff``), and on the base model the band and every method's choice, including those
    with no point in the band (which were not audited). Runs when the audit directory holds a sweep
    (``sweep/sweep.json``, written by :func:`unpact.audit.run.matched_toyworld`)."""

    name = "tradeoff"
    reads = ("sweep/sweep.json",)
    writes = ("summary.sections.tradeoff",)

    def _path(self, run: AuditRun) -> Any:
        return AuditDir(run.dir.sweep_dir).sweep_path

    def enabled(self, run: AuditRun) -> bool:
        return bool(self._path(run).exists())

    def done(self, run: AuditRun) -> bool:
        return False  # a few lines of JSON: the sections are rebuilt on every run

    def run(self, run: AuditRun) -> None:
        from unpact.sweep import SweepResult

        res = SweepResult.from_dict(json.loads(self._path(run).read_text(encoding="utf-8")))
        points = {p.name: p for p in res.points}
        for c in res.choices:
            s = run.summaries.get(c.method)
            if s is None or c.point is None or c.seed != res.seeds[0]:
                continue
            p = points[c.point]
            s.sections["tradeoff"] = {
                "point": p.name,
                "kind": p.kind,
                "strength": p.strength,
                "seed": p.seed,
                "validation": p.validation.to_dict(),
                "reason": c.reason,
            }
        if BASE in run.summaries:
            run.summaries[BASE].sections["tradeoff"] = {
                "band": res.band,
                "base_validation": res.base_validation.to_dict(),
                "choices": [c.to_dict() for c in res.choices],
                "sweep_seconds": res.seconds,
                "n_points": len(res.points),
            }
