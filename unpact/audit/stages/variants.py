"""Stage ``variants``: plain accuracy on other wordings of the forget facts (held-out phrasings, biography sentences).

The audit's accuracy and attacks use the forget items as given (the trained phrasings on the toy world). A model
can stop answering those and still answer the same facts asked another way: the held-out phrasings
(generalisation of the unlearning) or the biography sentences (related-fact leakage). Each split given to
:func:`unpact.audit.audit` as ``variants`` is decoded greedily on every model (saved per model as
``metrics/variants/MODEL.json``); the summary section ``variants`` holds per split the model's accuracy, the
base's and the retain-only model's (the floor), each with its 95% interval clustered by fact.
"""

from __future__ import annotations

import json
from typing import Any

from unpact._io import atomic_write_text
from unpact.audit.auditdir import BASE, RETAIN_ONLY
from unpact.audit.context import AuditRun, Stage

__all__ = ["VariantsStage"]


class VariantsStage(Stage):
    """Greedy accuracy of every model on each variant split of the forget facts (see the module docstring)."""

    name = "variants"
    reads = ("models", "variants")
    writes = ("metrics/variants/MODEL.json", "summary.sections.variants")

    def enabled(self, run: AuditRun) -> bool:
        return bool(run.variants)

    def _key(self, run: AuditRun, model: str) -> dict[str, Any]:
        """What saved hits depend on: the items' content, the answer length and the model's weights."""
        from unpact.audit.resume import content_hash

        digest = content_hash({split: [e.to_dict() for e in v] for split, v in run.variants.items()})
        return {"items": digest, "max_new_tokens": run.max_new_tokens, "weights": run.models[model].weights_hash()}

    def _load(self, run: AuditRun, model: str) -> dict[str, list[bool]] | None:
        path = run.dir.variants_path(model)
        if not path.exists():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        return saved["hits"] if saved.get("key") == self._key(run, model) else None

    def done(self, run: AuditRun) -> bool:
        return False  # cheap when saved: the section is rebuilt from the files on every run

    def run(self, run: AuditRun) -> None:
        from unpact.evaluate import evaluate
        from unpact.evidence import cluster_keys
        from unpact.scoring import rate

        hits: dict[str, dict[str, list[bool]]] = {}
        todo = [m for m in run.models.names if self._load(run, m) is None]
        bar = run.bar(len(todo), "variants")
        for name in run.models.names:
            saved = self._load(run, name)
            if saved is None:
                saved = {
                    split: [
                        r.lenient for r in evaluate(run.models[name], items, max_new_tokens=run.max_new_tokens).records
                    ]
                    for split, items in run.variants.items()
                }
                atomic_write_text(run.dir.variants_path(name), json.dumps({"key": self._key(run, name), "hits": saved}))
                bar.update(1)
            hits[name] = saved
        bar.close()
        keys = {split: list(cluster_keys(items, by="fact").values()) for split, items in run.variants.items()}
        for name, s in run.summaries.items():
            section: dict[str, Any] = {}
            for split in run.variants:
                row = {"accuracy": rate(hits[name][split], keys[split]).to_dict(), "n": len(hits[name][split])}
                for other in (BASE, RETAIN_ONLY):
                    if other in hits and other != name:
                        row[other] = rate(hits[other][split], keys[split]).to_dict()
                section[split] = row
            s.sections["variants"] = section
