"""Benchmark of unpact.circuits on the toy world: EAP and EAP-IG against exact edge patching.

For each of N forget examples of the toy world's base model (corruption: the subject swapped for a
donor's of the same token length), computes EAP, EAP-IG and exact edge activation patching of
every edge, and reports the Spearman rank correlation of each estimate with exact patching and the
wall-clock time of each. Reproduces the numbers in docs/circuits.md:

    .venv/bin/python bench/circuits.py --preset micro --n 10 --out bench/circuits_micro.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import torch
from scipy.stats import spearmanr

logger = logging.getLogger(__name__)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="micro", choices=("micro", "default"))
    ap.add_argument("--cache-dir", default=None, help="toy-world cache (default $UNPACT_CACHE or ~/.cache/unpact)")
    ap.add_argument("--n", type=int, default=10, help="examples (default 10)")
    ap.add_argument("--steps", type=int, default=16, help="EAP-IG steps (default 16)")
    ap.add_argument("--batch-size", type=int, default=32, help="exact patching forwards per batch (default 32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the per-example results as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from unpact.circuits import edge_attribution_patching, exact_edge_patching, faithfulness_curve
    from unpact.toyworld import build_toyworld

    world = build_toyworld(args.preset, cache_dir=args.cache_dir, progress=False)
    subject = world.load_base()
    donors = world.forget + world.retain
    rows = []
    usable = [e for e in world.forget if e.subject and e.subject in e.prompt and not e.meta.get("emphasis")]
    for ex in usable[: args.n]:
        eap = edge_attribution_patching(subject, ex, corrupt=donors)
        ig = edge_attribution_patching(subject, ex, corrupt=donors, method="eap-ig", n_steps=args.steps)
        exact = exact_edge_patching(subject, eap, batch_size=args.batch_size)
        t0 = time.perf_counter()  # unbatched exact patching: one forward per edge
        exact_edge_patching(subject, eap, batch_size=1)
        t_exact1 = time.perf_counter() - t0
        v = eap.valid
        k = max(1, int(0.1 * eap.n_edges))
        f_eap, f_ig, f_exact = (
            faithfulness_curve(subject, [eap.top_k(k)])
            + faithfulness_curve(subject, [ig.top_k(k)])
            + faithfulness_curve(subject, [exact.top_k(k)])
        )
        row = {
            "id": ex.id,
            "prompt": ex.prompt,
            "corrupt_prompt": eap.corrupt_prompt,
            "n_edges": eap.n_edges,
            "metric_clean": eap.metric_clean,
            "metric_corrupt": eap.metric_corrupt,
            "spearman_eap": float(spearmanr(eap.scores[v], exact.scores[v])[0]),
            "spearman_eap_ig": float(spearmanr(ig.scores[v], exact.scores[v])[0]),
            "t_eap": eap.seconds,
            "t_eap_ig": ig.seconds,
            "t_exact_batched": exact.seconds,
            "t_exact_unbatched": t_exact1,
            "top10pct_k": k,
            "faith_eap": f_eap.share,
            "faith_eap_ig": f_ig.share,
            "faith_exact": f_exact.share,
        }
        rows.append(row)
        print(
            json.dumps(
                {
                    k2: (round(v2, 4) if isinstance(v2, float) else v2)
                    for k2, v2 in row.items()
                    if k2 not in ("prompt", "corrupt_prompt")
                }
            ),
            flush=True,
        )
    keys = [
        "spearman_eap",
        "spearman_eap_ig",
        "t_eap",
        "t_eap_ig",
        "t_exact_batched",
        "t_exact_unbatched",
        "faith_eap",
        "faith_eap_ig",
        "faith_exact",
    ]
    summary = {key: float(np.median([r[key] for r in rows])) for key in keys}
    summary["speedup_eap_vs_exact_batched"] = summary["t_exact_batched"] / summary["t_eap"]
    summary["speedup_eap_ig_vs_exact_batched"] = summary["t_exact_batched"] / summary["t_eap_ig"]
    summary["speedup_eap_vs_exact_unbatched"] = summary["t_exact_unbatched"] / summary["t_eap"]
    summary["speedup_eap_ig_vs_exact_unbatched"] = summary["t_exact_unbatched"] / summary["t_eap_ig"]
    summary.update(
        preset=args.preset,
        n=len(rows),
        steps=args.steps,
        n_edges=rows[0]["n_edges"] if rows else 0,
        torch_threads=args.threads,
        device=str(subject.device),
    )
    print("median:", json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
