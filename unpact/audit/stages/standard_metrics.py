"""Stage ``standard_metrics``: the field's standard numbers (TOFU, open-unlearning, MUSE) of every model.

Per model, once (saved as ``metrics/MODEL.json``, :class:`unpact.standard_metrics.StandardMetrics`): truth
ratios of the forget and retain items, model utility, and the four membership-inference scores of the forget
items against holdout items about people no model saw. Each unlearned model (and the base) is then compared
with the retain-only model: forget quality (KS p-value, with both n), AUC and PrivLeak per score. The result
is the summary section ``standard_metrics``. Without holdout items there is no MIA; without a retain-only
model no forget quality or PrivLeak; items without paraphrased/perturbed answers skip the stage (logged).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from unpact._io import atomic_write_text
from unpact.audit.auditdir import RETAIN_ONLY
from unpact.audit.context import AuditRun, Stage
from unpact.errors import InputError

if TYPE_CHECKING:
    from unpact.audit.plan import Work
    from unpact.standard_metrics import StandardMetrics

logger = logging.getLogger(__name__)

__all__ = ["StandardMetricsStage", "standard_section"]


def _r(x: float) -> float | None:
    return None if x != x else round(float(x), 6)


def _sig(x: float) -> float | None:
    """Four significant digits (a p-value of 1e-19 must not round to 0)."""
    return None if x != x else float(f"{float(x):.4g}")


def _items_digest(run: AuditRun) -> str:
    """A hash of the forget, retain and holdout items' content."""
    from unpact.audit.resume import content_hash

    return content_hash([[e.to_dict() for e in items] for items in (run.forget, run.retain, run.holdout)])


def standard_section(mine: StandardMetrics, ref: StandardMetrics | None) -> dict[str, Any]:
    """The summary section of one model: its own numbers, and the comparison with the retain-only model."""
    from unpact.standard_metrics import compare_standard_metrics

    out: dict[str, Any] = {
        "model_utility": _r(mine.model_utility()),
        "forget_truth_ratio": _r(mine.forget_truth_ratio_score()),
        "mia_auc": {k: _r(v) for k, v in mine.mia_auc().items()},
        "n_forget": len(mine.forget_ids),
        "n_retain": len(mine.retain_ids),
        "n_holdout": len(mine.holdout_ids),
        "settings": {k: v for k, v in mine.settings.items() if k != "variants_digest"},
    }
    if ref is not None:
        cmp = compare_standard_metrics(mine, ref)
        fq = cmp.forget_quality
        out.update(
            forget_quality={"pvalue": _sig(fq.pvalue), "statistic": _r(fq.statistic), "n": [fq.n_a, fq.n_b]},
            privleak={k: _r(v) for k, v in cmp.privleak.items()},
            mia_auc_reference={k: _r(v) for k, v in cmp.auc_reference.items()},
            model_utility_reference=_r(cmp.model_utility_reference),
        )
    return out


class StandardMetricsStage(Stage):
    """TOFU / MUSE metrics per model against the retain-only model (see the module docstring)."""

    name = "standard_metrics"
    reads = ("models", "items", "holdout")
    writes = ("metrics/MODEL.json", "summary.sections.standard_metrics")

    def enabled(self, run: AuditRun) -> bool:
        return bool(run.config.standard_metrics)

    def _kw(self, run: AuditRun) -> dict[str, Any]:
        return {"max_items": run.config.standard_items}

    def _items_key(self, run: AuditRun) -> dict[str, Any]:
        return {"items": _items_digest(run), "max_items": run.config.standard_items}

    def _skipped(self, run: AuditRun) -> str | None:
        """The reason these items were found unusable before (saved), else ``None``."""
        path = run.dir.metrics_skipped_path
        if not path.exists():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        return str(saved["reason"]) if saved.get("items") == self._items_key(run) else None

    def _missing(self, run: AuditRun) -> list[str]:
        if self._skipped(run) is not None:
            return []
        return [m for m in run.models.names if self._load(run, m) is None]

    def _key(self, run: AuditRun, model: str) -> dict[str, Any]:
        """What a saved result depends on: the items' content, the settings and the model's weights."""
        return {
            "items": _items_digest(run),
            "max_items": run.config.standard_items,
            "weights": run.models[model].weights_hash(),
        }

    def _load(self, run: AuditRun, model: str) -> StandardMetrics | None:
        """The saved result of ``model`` when it was computed on these items, settings and weights."""
        from unpact.standard_metrics import StandardMetrics

        path = run.dir.metrics_path(model)
        if not path.exists():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") != self._key(run, model):
            return None
        return StandardMetrics.from_dict(saved["metrics"])

    def work(self, run: AuditRun) -> Work:
        from unpact.audit.plan import Work

        n = min(len(run.forget), run.config.standard_items) * 5  # paraphrase, perturbed answers, MIA
        return Work(forward=len(self._missing(run)) * n)

    def done(self, run: AuditRun) -> bool:
        return False  # cheap when saved: the section is rebuilt from the files on every run

    def run(self, run: AuditRun) -> None:
        from unpact.standard_metrics import standard_metrics

        results: dict[str, StandardMetrics] = {}
        why = self._skipped(run)
        if why is not None:
            logger.info("standard metrics skipped (as before): %s", why)
            return
        todo = self._missing(run)
        bar = run.bar(len(todo), "standard metrics")
        for name in run.models.names:
            saved = self._load(run, name)
            if saved is None:
                try:
                    saved = standard_metrics(run.models[name], run.forget, run.holdout, run.retain, **self._kw(run))
                except InputError as exc:
                    logger.warning("standard metrics skipped: %s", exc)
                    info = {"reason": str(exc), "items": self._items_key(run)}
                    atomic_write_text(run.dir.metrics_skipped_path, json.dumps(info) + "\n")
                    return
                payload = {"key": self._key(run, name), "metrics": saved.to_dict()}
                atomic_write_text(run.dir.metrics_path(name), json.dumps(payload) + "\n")
                bar.update(1)
            results[name] = saved
        bar.close()
        ref = results.get(RETAIN_ONLY)
        for name, s in run.summaries.items():
            if name in results:
                s.sections["standard_metrics"] = standard_section(results[name], ref if name != RETAIN_ONLY else None)
