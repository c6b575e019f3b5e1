"""Stages ``scores`` and ``destructive``: per-model numbers derived from the records and tracers."""

from __future__ import annotations

from unpact.audit.auditdir import BASE
from unpact.audit.context import AuditRun, Stage

__all__ = ["ScoresStage", "DestructiveStage"]


class ScoresStage(Stage):
    """Accuracy, forgetting and recovery per attack against the control, for every model
    (:func:`unpact.scoring.recovery_summary`, intervals clustered by the verdict rule's ``cluster``):
    starts each model's summary."""

    name = "scores"
    reads = ("records",)
    writes = ("summary.scores",)

    def run(self, run: AuditRun) -> None:
        from unpact.audit.summary import ModelSummary
        from unpact.evidence import cluster_keys
        from unpact.scoring import recovery_summary

        recs = list(run.store.records.values())
        # intervals clustered like the evidence's tests (a fact's phrasings are not independent items)
        clusters = cluster_keys(run.forget + run.retain, by=run.config.rule.cluster)
        f_ids, r_ids = [e.id for e in run.forget], [e.id for e in run.retain]
        for name in run.models.names:
            scores = recovery_summary(
                recs,
                name,
                base=BASE,
                attacks=run.attacks,
                forget_ids=f_ids,
                retain_ids=r_ids,
                control_model=run.models.control_for(name),
                clusters=clusters,
            )
            run.summaries[name] = ModelSummary(
                role=run.models.role(name),
                scores=scores,
                retain_attacked=len(run.retain_attacked),
            )


class DestructiveStage(Stage):
    """Destructive rate (attribution moved on retain prompts) and the key words' share drop on
    forget prompts, base vs each other model."""

    name = "destructive"
    reads = ("tracers/MODEL/forget", "tracers/MODEL/retain", "keywords")
    writes = ("summary.destructive", "summary.key_share_drop")

    def run(self, run: AuditRun) -> None:
        from unpact.destructive import attention_shift, destructive_rate

        for name, s in run.summaries.items():
            if name == BASE:
                continue
            s.destructive = destructive_rate(run.attributions(BASE, "retain"), run.attributions(name, "retain"))
            drop = attention_shift(
                run.attributions(BASE, "forget"),
                run.attributions(name, "forget"),
                [run.keywords.get(e.id, []) for e in run.forget],
            )
            s.key_share_drop = None if drop != drop else round(float(drop), 6)
