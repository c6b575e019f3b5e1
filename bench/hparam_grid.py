"""Grid over one unlearning method's hyperparameters on a toy world (e.g. PALU's k and n).

Usage:
    .venv/bin/python bench/hparam_grid.py --method palu --grid top_k=1,10,100,1000 \
        --grid prefix_tokens=1,2,3,-1 [--preset default] [--steps 60] [--out bench/results]

Each grid point unlearns the base model with the method's defaults plus that point's values (one seed)
and scores lenient greedy accuracy on the forget people and every 3rd retain item (trained phrasings),
as ``bench/toyworld_table.py`` does. Writes ``<out>/hparam_grid_<method>_<preset>.json`` and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch


def _parse_grid(specs: list[str]) -> dict[str, list[float | int]]:
    grid: dict[str, list[float | int]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid {spec!r}: expected NAME=V1,V2,... (e.g. top_k=1,10,100)")
        grid[name] = [float(v) if "." in v or "e" in v else int(v) for v in values.split(",")]
    return grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True)
    ap.add_argument("--grid", action="append", default=[], help="NAME=V1,V2,... (repeatable)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = _parse_grid(args.grid)

    from unpact.evaluate import evaluate
    from unpact.toyworld import build_toyworld
    from unpact.unlearn import unlearn

    w = build_toyworld(args.preset, cache_dir=args.cache_dir)
    sets = {"forget": w.forget, "retain": w.retain[::3]}
    base = w.load_base()
    rows = [{"point": "base", **{k: evaluate(base, ex).accuracy("lenient") for k, ex in sets.items()}}]
    print(json.dumps(rows[0]), flush=True)
    names = list(grid)
    for values in itertools.product(*(grid[n] for n in names)):
        point = dict(zip(names, values))
        t = time.time()
        new = unlearn(base, w.forget, w.retain, args.method, steps=args.steps, progress=False, **point)
        row = {"point": point, "unlearn_seconds": round(time.time() - t, 1)}
        row.update({k: evaluate(new, ex).accuracy("lenient") for k, ex in sets.items()})
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"hparam_grid_{args.method}_{args.preset}.json"
    path.write_text(json.dumps({"method": args.method, "steps": args.steps, "grid": grid, "rows": rows}, indent=1))
    print(f"\nwritten {path}\n\n| {' | '.join(names)} | forget | retain |")
    print("|" + " --- |" * (len(names) + 2))
    for r in rows:
        p = r["point"]
        cells = [str(p[n]) for n in names] if isinstance(p, dict) else ["base"] + [""] * (len(names) - 1)
        print(f"| {' | '.join(cells)} | {r['forget']:.3f} | {r['retain']:.3f} |")


if __name__ == "__main__":
    main()
