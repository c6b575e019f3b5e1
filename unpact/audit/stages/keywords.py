"""Stage ``keywords``: the key words of every audited item, from the base model's attribution."""

from __future__ import annotations

from unpact.audit.auditdir import BASE
from unpact.audit.context import AuditRun, Stage

__all__ = ["KeywordsStage"]


class KeywordsStage(Stage):
    """Key words per item: unPact's rule on the base model's attribution of the gold answer
    (:func:`unpact.keytokens.unpact_rule`, never a word of ``config.stop_words``), or the items' own
    ``keywords`` when ``config.keywords`` is ``"oracle"``. Every model faces the same attack words."""

    name = "keywords"
    reads = ("models.base", "items")
    writes = ("keywords", "tracers/base/forget", "tracers/base/retain")

    def done(self, run: AuditRun) -> bool:
        saved = run.dir.read_keywords()
        if saved is not None:
            run.keywords = saved
        return saved is not None

    def run(self, run: AuditRun) -> None:
        from unpact import keytokens as kt

        items = list(run.forget) + [e for e in run.retain_attacked if e not in run.forget]
        if run.config.keywords == "oracle":
            kw = {e.id: list(e.keywords) for e in items}
        else:
            alpha = kt.DEFAULT_ALPHA if run.config.alpha is None else run.config.alpha
            beta = kt.DEFAULT_BETA if run.config.beta is None else run.config.beta
            stop = kt.stop_list(run.config.stop_words)
            kw = {}
            for split in ("forget", "retain"):
                attrs = run.attributions(BASE, split)
                run.callback("keywords", {"split": split})
                for e, a in zip(run.forget if split == "forget" else run.retain_attacked, attrs):
                    idx = kt.unpact_rule(
                        a.words, a.word_scores, alpha=alpha, beta=beta, answer=e.answer, stop_words=stop
                    )
                    kw[e.id] = list(dict.fromkeys(a.words[i].strip() for i in idx))
        run.dir.write_keywords(kw)
        run.keywords = kw
