"""Stage ``verdict``: removal, suppression, destruction... for every model but the base."""

from __future__ import annotations

from unpact.audit.auditdir import BASE
from unpact.audit.context import AuditRun, Stage

__all__ = ["VerdictStage"]


class VerdictStage(Stage):
    """Applies :func:`unpact.verdict.decide` with ``config.rule`` to each model's scores."""

    name = "verdict"
    reads = ("summary.scores", "summary.levels")
    writes = ("summary.verdict",)

    def run(self, run: AuditRun) -> None:
        from unpact.verdict import decide

        base = run.summaries[BASE].scores
        for name, s in run.summaries.items():
            s.verdict = None if name == BASE else decide(s.scores, base, run.config.rule, s.levels or None)
