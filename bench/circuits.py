"""Benchmark of unpact.circuits on the toy world, evaluated the way MIB does (Mueller et al. 2025).

Protocol (see unpact/circuits/mib.py for the exact definitions):

1. The plain (non-emphasis) forget examples of the toy world's base model that name their subject
   are shuffled (``--seed``) and split into a scoring set (``--n-score``) and a disjoint evaluation
   set (``--n-eval``). Corruption: the subject swapped for a donor's of the same token length
   (examples for which no donor has one are skipped, and say so).
2. EAP, EAP-IG (``--steps``) and exact edge patching score every edge of each scoring example;
   each method's ranking is its scores averaged over the scoring set (plus a random ranking as a
   floor).
3. Each ranking's circuits at MIB's edge fractions are run on the evaluation set, every edge
   outside the circuit patched from the example's own counterfactual: faithfulness curve, CPR
   (area under f, higher is better) and CMD (area under |1 - f|, lower is better).
4. Time of each method on the scoring set and its speed-up over exact patching (batched, and one
   forward per edge); per-edge-type error of EAP and EAP-IG against exact patching; Spearman of
   each estimate with exact patching per scoring example (the old headline, kept for reference).

Reproduces the numbers in docs/circuits.md:

    .venv/bin/python bench/circuits.py --preset default --out bench/results/circuits_default.json
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _r(x: Any) -> Any:
    return round(x, 4) if isinstance(x, float) else x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", choices=("micro", "default"))
    ap.add_argument("--cache-dir", default=None, help="toy-world cache (default $UNPACT_CACHE or ~/.cache/unpact)")
    ap.add_argument("--n-score", type=int, default=10, help="scoring examples (default 10)")
    ap.add_argument("--n-eval", type=int, default=10, help="held-out evaluation examples (default 10)")
    ap.add_argument("--steps", type=int, default=16, help="EAP-IG steps (default 16)")
    ap.add_argument("--batch-size", type=int, default=32, help="patched forwards per batch (default 32)")
    ap.add_argument("--seed", type=int, default=0, help="split and random-ranking seed (default 0)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the summary and per-example rows as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from unpact.circuits import (
        MIB_FRACTIONS,
        circuit_quality,
        edge_attribution_patching,
        edge_type_errors,
        exact_edge_patching,
    )
    from unpact.circuits._inputs import prepare
    from unpact.circuits.edge_types import spearman
    from unpact.errors import InputError
    from unpact.toyworld import build_toyworld

    world = build_toyworld(args.preset, cache_dir=args.cache_dir, progress=False)
    subject = world.load_base()
    donors = world.forget + world.retain
    usable = [e for e in world.forget if e.subject and e.subject in e.prompt and not e.meta.get("emphasis")]
    random.Random(args.seed).shuffle(usable)
    picked = []  # keep examples that have a donor subject of the same token length (a counterfactual)
    for ex in usable:
        try:
            prepare(subject, ex, corrupt=donors, metric="logprob", corrupt_answer=None, seed=0)
        except InputError as err:
            print(f"skipped {ex.id}: {err}", flush=True)
            continue
        picked.append(ex)
        if len(picked) == args.n_score + args.n_eval:
            break
    scoring, held_out = picked[: args.n_score], picked[args.n_score :]

    scores: dict[str, list] = {"eap": [], "eap-ig": [], "exact": []}
    rows = []
    for ex in scoring:
        eap = edge_attribution_patching(subject, ex, corrupt=donors)
        ig = edge_attribution_patching(subject, ex, corrupt=donors, method="eap-ig", n_steps=args.steps)
        exact = exact_edge_patching(subject, eap, batch_size=args.batch_size)
        t0 = time.perf_counter()  # unbatched exact patching: one forward per edge
        exact_edge_patching(subject, eap, batch_size=1)
        t_exact1 = time.perf_counter() - t0
        for key, s in (("eap", eap), ("eap-ig", ig), ("exact", exact)):
            scores[key].append(s)
        v = eap.valid
        row = {
            "id": ex.id,
            "prompt": ex.prompt,
            "corrupt_prompt": eap.corrupt_prompt,
            "n_edges": eap.n_edges,
            "metric_clean": eap.metric_clean,
            "metric_corrupt": eap.metric_corrupt,
            "spearman_eap": spearman(eap.scores[v], exact.scores[v]),
            "spearman_eap_ig": spearman(ig.scores[v], exact.scores[v]),
            "t_eap": eap.seconds,
            "t_eap_ig": ig.seconds,
            "t_exact_batched": exact.seconds,
            "t_exact_unbatched": t_exact1,
        }
        rows.append(row)
        print(json.dumps({k: _r(x) for k, x in row.items() if k not in ("prompt", "corrupt_prompt")}), flush=True)

    rankings: dict[str, Any] = dict(scores)
    rankings["random"] = np.random.default_rng(args.seed).standard_normal(scores["eap"][0].scores.shape)
    quality = {}
    for name, ranking in rankings.items():
        q = circuit_quality(subject, ranking, held_out, corrupt=donors, batch_size=args.batch_size, seed=0, method=name)
        quality[name] = q.to_dict()
        print(
            f"{name:7s} CPR {q.cpr:.3f}  CMD {q.cmd:.3f}  f = {np.round(q.faithfulness, 3).tolist()}  "
            f"({q.seconds:.1f}s)",
            flush=True,
        )
    type_errors = {
        name: [e.to_dict() for e in edge_type_errors(scores[name], scores["exact"])] for name in ("eap", "eap-ig")
    }
    for name, errs in type_errors.items():
        print(f"{name} vs exact, per edge type: rel. error, scaled error, |est|/|exact|, Spearman, error/exact share")
        for e in errs:
            print(
                f"  {e['edge_type']:13s} n={e['n_edges']:3d}  {e['rel_error']:8.3f}  {e['scaled_error']:6.3f}  "
                f"{e['magnitude_ratio']:8.3f}  {e['spearman']:6.3f}  {e['error_share']:.3f}  {e['exact_share']:.3f}"
            )

    t = {key: float(sum(r[key] for r in rows)) for key in ("t_eap", "t_eap_ig", "t_exact_batched", "t_exact_unbatched")}
    summary: dict[str, Any] = {
        "cpr_eap": quality["eap"]["cpr"],
        "cmd_eap": quality["eap"]["cmd"],
        "cpr_eap_ig": quality["eap-ig"]["cpr"],
        "cmd_eap_ig": quality["eap-ig"]["cmd"],
        "cpr_exact": quality["exact"]["cpr"],
        "cmd_exact": quality["exact"]["cmd"],
        "cpr_random": quality["random"]["cpr"],
        "cmd_random": quality["random"]["cmd"],
        "fractions": list(MIB_FRACTIONS),
        "n_kept": quality["exact"]["n_kept"],
        "spearman_eap": float(np.median([r["spearman_eap"] for r in rows])),
        "spearman_eap_ig": float(np.median([r["spearman_eap_ig"] for r in rows])),
        **{f"{k}_total": x for k, x in t.items()},
        "speedup_eap_vs_exact_batched": t["t_exact_batched"] / t["t_eap"],
        "speedup_eap_ig_vs_exact_batched": t["t_exact_batched"] / t["t_eap_ig"],
        "speedup_eap_vs_exact_unbatched": t["t_exact_unbatched"] / t["t_eap"],
        "speedup_eap_ig_vs_exact_unbatched": t["t_exact_unbatched"] / t["t_eap_ig"],
        "preset": args.preset,
        "n_score": len(scoring),
        "n_eval": len(held_out),
        "scoring_ids": [e.id for e in scoring],
        "eval_ids": [e.id for e in held_out],
        "steps": args.steps,
        "seed": args.seed,
        "n_edges": rows[0]["n_edges"] if rows else 0,
        "torch_threads": args.threads,
        "device": str(subject.device),
    }
    print("summary:", json.dumps({k: _r(x) for k, x in summary.items() if not k.endswith("_ids")}, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(
                {"summary": summary, "quality": quality, "edge_type_errors": type_errors, "rows": rows}, fh, indent=1
            )


if __name__ == "__main__":
    main()
