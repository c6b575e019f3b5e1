"""Stage ``quality``: ReLearn's answer-quality metrics on every model's plain answers."""

from __future__ import annotations

import numpy as np

from unpact.audit.context import AuditRun, Stage
from unpact.data import Example

__all__ = ["QualityStage"]


def _r(x: float) -> float | None:
    return None if x != x else round(float(x), 6)


class QualityStage(Stage):
    """KFR / KRR, Brunet, Honore, perplexity under the base model and the Linguistic Score of each
    model's plain answers to the forget items (:mod:`unpact.quality`)."""

    name = "quality"
    reads = ("records:plain", "models.base")
    writes = ("summary.quality",)

    def run(self, run: AuditRun) -> None:
        from unpact.quality import (
            Quality,
            brunet_index,
            honore_statistic,
            knowledge_rates,
            linguistic_score,
            response_perplexity,
        )

        for name, s in run.summaries.items():

            def pairs(split: str, _name: str = name) -> list[tuple[Example, str, str]]:
                out = []
                for e in run.split_items(split):
                    r = run.store.records.get((_name, e.id, "plain"))
                    if r is not None:
                        out.append((e, r.generated[0] if r.generated else "", e.answer))
                return out

            fp, rp = pairs("forget"), pairs("retain")
            rates = knowledge_rates([(p, g) for _, p, g in fp], [(p, g) for _, p, g in rp])
            answered = [(q, p) for q, p, _ in fp if p.strip()]
            w = [brunet_index(p) for _, p in answered]
            h = [honore_statistic(p) for _, p in answered]
            ppl = response_perplexity(
                run.models.base, [q for q, _ in answered], [p for _, p in answered], batch_size=run.config.batch_size
            )
            ls = [x for x in (linguistic_score(p, v) for (_, p), v in zip(answered, ppl)) if x == x]
            s.quality = Quality(
                kfr=_r(rates["kfr"]),
                krr=_r(rates["krr"]),
                brunet_forget=_r(float(np.mean(w))) if w else None,
                honore_forget=_r(float(np.mean(h))) if h else None,
                ppl_forget=_r(float(np.nanmedian(ppl))) if len(ppl) and np.isfinite(ppl).any() else None,
                linguistic_score_forget=_r(float(np.mean(ls))) if ls else None,
            )
