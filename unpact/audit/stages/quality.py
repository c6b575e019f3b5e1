"""Stage ``quality``: ReLearn's answer-quality metrics on every model's plain answers.

As the published evaluator aggregates them (:mod:`unpact.quality`; ``zjunlp/unlearn`` ``evals/evaluate.py``):
KFR on the forget items, KRR on the retain items, and for the forget answers and the retain answers the mean
Brunet index and Honore statistic (over every answer, an empty one included), the mean perplexity (empty answers
left out) and the Linguistic Score of those three means. ReLearn scores the perplexity under the model before the
facts were trained in; here that is the audit's retain-only model (it never saw the forget facts), else the base
model. :attr:`unpact.quality.Quality.ppl_model` names the one used.
"""

from __future__ import annotations

import logging

from unpact.audit.auditdir import BASE, RETAIN_ONLY
from unpact.audit.context import AuditRun, Stage
from unpact.quality import Quality, relearn_metrics, response_perplexity

__all__ = ["QualityStage"]

logger = logging.getLogger(__name__)


def _rounded(q: Quality) -> Quality:
    """``q`` with its float fields at 6 decimals (as the summary keeps rates)."""
    return Quality.from_dict({k: round(v, 6) if isinstance(v, float) else v for k, v in q.to_dict().items()})


class QualityStage(Stage):
    """KFR / KRR, Brunet, Honore, perplexity and the Linguistic Score of each model's plain answers to the forget
    and the retain items, perplexity under the retain-only model (else the base model)."""

    name = "quality"
    reads = ("records:plain", "models.retain_only", "models.base")
    writes = ("summary.quality",)

    def run(self, run: AuditRun) -> None:
        ref_name, ref = (
            (RETAIN_ONLY, run.models.retain_only) if run.models.retain_only is not None else (BASE, run.models.base)
        )
        for name, s in run.summaries.items():
            sides = {}
            for split in ("forget", "retain"):
                items, answers = [], []
                for e in run.split_items(split):
                    r = run.store.records.get((name, e.id, "plain"))
                    if r is not None:
                        items.append(e)
                        answers.append(r.generated[0] if r.generated else "")
                ppl = response_perplexity(ref, items, answers, batch_size=run.config.batch_size)
                sides[split] = (answers, [e.answer for e in items], ppl)
            (fa, fg, fp), (ra, rg, rp) = sides["forget"], sides["retain"]
            if not fa and not ra:
                logger.info("quality: no plain answers of %s, skipped", name)
                continue
            q = relearn_metrics(fa, fg, ra, rg, fp, ppl_retain=rp, ppl_model=ref_name)
            s.quality = _rounded(q)
