"""Fabricated audit directories and fake result objects for the viz / report tests.

The audit directory follows ``unpact.audit`` exactly (``summary.json`` with ``models``, ``records.jsonl``
lines of ``unpact.scoring.ItemRecord``, ``tracers/<model>/forget/<id>.npz`` attributions); the attributions
are real ones computed on tiny random models, so the report is built from real result files.
"""

from __future__ import annotations

import json
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


def model_summary(forget: tuple[int, int], retain: tuple[int, int], recov: dict[str, tuple[int, int, int]],
                  verdict: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "forget_acc": rate(*forget), "retain_acc": rate(*retain), "n_known": 10, "forgotten": rate(8, 10),
        "control": "retain_only",
        "recovery": {a: {"rate": rate(k, n), "control": rate(c, n), "excess": (k - c) / n} for a, (k, n, c) in recov.items()},
        "recovery_any": {"rate": rate(6, 8), "control": rate(1, 8), "excess": 5 / 8},
        "destructive": {"rate": 0.21}, "quality": {"kfr": 0.8, "krr": 0.9}, "verdict": verdict,
    }


def make_audit_dir(root: Path, *, with_tracers: bool = True) -> Path:
    """A small audit directory (base, retain_only, npo_gd) with a ``<script>`` prompt in the records."""
    root.mkdir(parents=True, exist_ok=True)
    recov = {"restate": (5, 8, 1), "repeat": (3, 8, 1), "quote": (1, 8, 0)}
    summary = {
        "config_hash": "abc123", "attacks": list(recov), "config": {"preset": "micro", "note": EVIL},
        "models": {
            "base": model_summary((10, 10), (19, 20), {}, None),
            "retain_only": model_summary((1, 10), (19, 20), {a: (1, 8, 1) for a in recov},
                                         {"label": "removal", "reason": "control", "evidence_attack": None,
                                          "destructive": False, "retain_drop": 0.0, "forgotten": 0.9}),
            "npo_gd": model_summary((2, 10), (17, 20), recov,
                                    {"label": "suppression", "reason": f"attack 'restate' recovers 5/8 {EVIL}",
                                     "evidence_attack": "restate", "destructive": False, "retain_drop": 0.1,
                                     "forgotten": 0.8}),
        },
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    recs = []
    for model in summary["models"]:
        for i in range(3):
            recs.append({"model": model, "item": f"f{i}", "attack": "plain", "split": "forget",
                         "prompt": f"Who is {EVIL} number {i}?", "gold": "teal", "keywords": ["number"],
                         "generated": [f"<b>bold</b> {EVIL}"], "lenient": False, "exact": False, "rouge_l": 0.0,
                         "first_token_top1": False, "answer_logprob": -3.2, "perm_gold": None, "perm_hit": False})
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    if with_tracers:
        from unpact.attribution import leave_one_out
        from unpact.testing import tiny_subject

        ex = [Example(f"f{i}", f"Where was Ada {EVIL} born {i}?", "London", keywords=("Ada",)) for i in range(2)]
        for name, seed in (("base", 0), ("npo_gd", 1)):
            folder = root / "tracers" / name / "forget"
            folder.mkdir(parents=True, exist_ok=True)
            for a in leave_one_out(tiny_subject("gpt2", seed=seed), ex):
                a.save(folder / f"{a.example.id}.npz")
    return root


def fake_attribution(words: list[str], scores: np.ndarray, keywords: tuple[str, ...] = (), matrix: np.ndarray | None = None) -> Any:
    ex = Example("x", "".join(words), "teal", keywords=keywords)
    return SimpleNamespace(example=ex, tokens=list(words), token_scores=np.asarray(scores, float), words=list(words),
                           word_scores=np.asarray(scores, float), token_to_word=np.arange(len(words)),
                           answer_tokens=["te", "al"], matrix=matrix)


def fake_lens(n_layers: int, n_pos: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    probs = rng.uniform(size=(n_layers + 1, n_pos))
    ranks = rng.integers(0, 500, size=(n_layers + 1, n_pos))
    return SimpleNamespace(probs=probs, ranks=ranks, tokens=[f"t{i}" for i in range(n_pos)])
