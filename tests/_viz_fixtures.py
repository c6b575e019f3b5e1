"""Fabricated audit directories and fake result objects for the viz / report tests.

The audit directory is written through ``unpact.audit.AuditDir`` with the audit's own types (a typed
``AuditSummary``, ``ItemRecord`` lines, attributions at ``AuditDir.tracer_path``); the attributions are real
ones computed on tiny random models, so the report is built from real result files.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from unpact.data import Example

EVIL = "</script><script>window.__pwned = 1; document.title = 'PWNED'</script><img src=x onerror=\"window.__pwned=2\">"


def rate(k: int, n: int) -> dict[str, Any]:
    from unpact.metrics import wilson_interval

    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n, "lo": lo, "hi": hi}


def model_summary(
    forget: tuple[int, int],
    retain: tuple[int, int],
    recov: dict[str, tuple[int, int, int]],
    verdict: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "forget_acc": rate(*forget),
        "retain_acc": rate(*retain),
        "n_known": 10,
        "forgotten": rate(8, 10),
        "control": "retain_only",
        "recovery": {
            a: {"rate": rate(k, n), "control": rate(c, n), "excess": (k - c) / n} for a, (k, n, c) in recov.items()
        },
        "recovery_any": {"rate": rate(6, 8), "control": rate(1, 8), "excess": 5 / 8},
        "destructive": {"rate": 0.21},
        "quality": {"kfr": 0.8, "krr": 0.9, "linguistic_score_forget": 0.31, "linguistic_score_retain": 0.42},
        "verdict": verdict,
    }


def _typed_model(
    role: str,
    forget: tuple[int, int],
    retain: tuple[int, int],
    recov: dict[str, tuple[int, int, int]],
    verdict: dict[str, Any] | None,
) -> Any:
    from unpact.audit import ModelSummary
    from unpact.destructive import DestructiveRate
    from unpact.quality import Quality
    from unpact.scoring import AttackRecovery, Rate, RecoveryReport
    from unpact.scoring import rate as rates
    from unpact.verdict import Verdict

    def r(k: int, n: int) -> Rate:
        return rates([True] * k + [False] * (n - k))

    scores = RecoveryReport(
        forget_acc=r(*forget),
        retain_acc=r(*retain),
        n_known=10,
        forgotten=r(8, 10),
        control="retain_only",
        recovery={
            a: AttackRecovery(r(k, n), r(c, n), (k - c) / n if n else None, r(0, n)) for a, (k, n, c) in recov.items()
        },
        recovery_any=AttackRecovery(r(6, 8), r(1, 8), 5 / 8, r(0, 8)),
    )
    return ModelSummary(
        role=role,
        scores=scores,
        retain_attacked=8,  # type: ignore[arg-type]
        destructive=None if role == "base" else DestructiveRate(0.21, 0.1, 0.11, 8, np.zeros(0)),
        quality=Quality(
            kfr=0.8, krr=0.9, linguistic_score_forget=0.31, linguistic_score_retain=0.42, ppl_model="retain_only"
        ),
        verdict=None if verdict is None else Verdict.from_dict(verdict),
    )


def make_audit_dir(root: Path, *, with_tracers: bool = True) -> Path:
    """A small audit directory (base, retain_only, npo_gd) with a ``<script>`` prompt in the records, written
    through :class:`unpact.audit.AuditDir` like a real audit."""
    from unpact.audit import AuditDir, AuditSummary
    from unpact.audit.records import RecordStore
    from unpact.scoring import ItemRecord

    d = AuditDir.create(root)
    recov = {"restate": (5, 8, 1), "repeat": (3, 8, 1), "quote": (1, 8, 0)}
    models = {
        "base": _typed_model("base", (10, 10), (19, 20), {a: (0, 0, 0) for a in recov}, None),
        "retain_only": _typed_model(
            "retain_only",
            (1, 10),
            (19, 20),
            {a: (1, 8, 1) for a in recov},
            {
                "label": "removal",
                "reason": "control",
                "evidence_attack": None,
                "destructive": False,
                "retain_drop": 0.0,
                "forgotten": 0.9,
            },
        ),
        "npo_gd": _typed_model(
            "unlearned",
            (2, 10),
            (17, 20),
            recov,
            {
                "label": "suppression",
                "reason": f"attack 'restate' recovers 5/8 {EVIL}",
                "evidence_attack": "restate",
                "destructive": False,
                "retain_drop": 0.1,
                "forgotten": 0.8,
            },
        ),
    }
    d.write_summary(
        AuditSummary(models=models, attacks=list(recov), config_hash="abc123", config={"preset": "micro", "note": EVIL})
    )
    recs = []
    for model in models:
        for i in range(3):
            recs.append(
                ItemRecord(
                    model=model,
                    item=f"f{i}",
                    attack="plain",
                    split="forget",
                    prompt=f"Who is {EVIL} number {i}?",
                    gold="teal",
                    keywords=("number",),
                    generated=(f"<b>bold</b> {EVIL}",),
                    lenient=False,
                    exact=False,
                    rouge_l=0.0,
                    first_token_top1=False,
                    answer_logprob=-3.2,
                )
            )
    RecordStore(d.records_path).extend(recs)
    if with_tracers:
        from unpact.attribution import leave_one_out
        from unpact.testing import tiny_subject

        ex = [Example(f"f{i}", f"Where was Ada {EVIL} born {i}?", "London", keywords=("Ada",)) for i in range(2)]
        for name, seed in (("base", 0), ("npo_gd", 1)):
            for a in leave_one_out(tiny_subject("gpt2", seed=seed), ex):
                a.save(d.tracer_path(name, "forget", a.example.id))
    return root


def fake_attribution(
    words: list[str], scores: np.ndarray, keywords: tuple[str, ...] = (), matrix: np.ndarray | None = None
) -> Any:
    ex = Example("x", "".join(words), "teal", keywords=keywords)
    return SimpleNamespace(
        example=ex,
        tokens=list(words),
        token_scores=np.asarray(scores, float),
        words=list(words),
        word_scores=np.asarray(scores, float),
        token_to_word=np.arange(len(words)),
        answer_tokens=["te", "al"],
        matrix=matrix,
    )


def fake_lens(n_layers: int, n_pos: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    probs = rng.uniform(size=(n_layers + 1, n_pos))
    ranks = rng.integers(0, 500, size=(n_layers + 1, n_pos))
    return SimpleNamespace(probs=probs, ranks=ranks, tokens=[f"t{i}" for i in range(n_pos)])
