"""Measure every unlearning method on the default toy world (the table in docs/toyworld.md).

Usage:
    .venv/bin/python bench/toyworld_table.py [--preset default] [--cache-dir DIR] [--out bench/results]

Columns: lenient accuracy (greedy, 16 new tokens) on the forget people (trained phrasings), the
retain people (trained phrasings; every 3rd item, to save time), and held-out phrasings of both,
plus the mean teacher-forced answer log-prob on forget. Methods run with their documented defaults.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from unpact.evaluate import evaluate
    from unpact.toyworld import build_toyworld
    from unpact.unlearn import METHODS, unlearn

    w = build_toyworld(args.preset, cache_dir=args.cache_dir)
    sets = {
        "forget": w.forget,
        "retain": w.retain[::3],
        "forget_heldout": w.forget_heldout,
        "retain_heldout": w.retain_heldout[::3],
    }
    rows = []

    def score(name: str, subject, seconds: float) -> None:
        row = {"model": name, "unlearn_seconds": round(seconds, 1)}
        for key, ex in sets.items():
            res = evaluate(subject, ex)
            row[key] = res.accuracy("lenient")
            row[key + "_exact"] = res.accuracy("exact")
            if key == "forget":
                row["forget_logprob"] = res.mean_logprob
        row["n"] = {k: len(v) for k, v in sets.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)

    base = w.load_base()
    score("base", base, 0.0)
    score("retain_only", w.load_retain_only(), 0.0)
    for m in args.methods or list(METHODS):
        t = time.time()
        new = unlearn(base, w.forget, w.retain, m, progress=False)
        score(m, new, time.time() - t)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"toyworld_table_{args.preset}.json").write_text(json.dumps({"config": w.config, "rows": rows}, indent=1))
    print("\n| model | forget | retain | forget held-out | retain held-out | forget log-prob |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['forget']:.3f} | {r['retain']:.3f} | {r['forget_heldout']:.3f} | "
            f"{r['retain_heldout']:.3f} | {r['forget_logprob']:.2f} |"
        )


if __name__ == "__main__":
    main()
