"""``unpact circuit --model DIR --prompt P --answer A [--corrupt C] [--json]``: score a prompt's circuit edges.

Prints the top edges (EAP or EAP-IG) and the faithfulness of the top-k circuit; ``--json`` prints
the same as one JSON object; ``--out FILE.npz`` saves the full :class:`~unpact.circuits.EdgeScores`.
Without ``--corrupt`` the corruption is mean ablation over positions (EAP only).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from unpact._cli._common import add_example_args, subject_and_example

logger = logging.getLogger(__name__)


def _run(args: argparse.Namespace) -> int:
    from unpact.circuits import edge_attribution_patching, faithfulness
    from unpact.errors import InputError

    subject, example = subject_and_example(args, subject=args.subject)
    method = args.method
    if args.corrupt is None and method == "eap-ig":
        raise InputError(
            "--method eap-ig needs --corrupt",
            source="--corrupt",
            fix="give a corrupt prompt of the same token length, or use --method eap (mean ablation)",
        )
    scores = edge_attribution_patching(
        subject,
        example,
        corrupt=args.corrupt if args.corrupt is not None else "mean",
        method=method,
        metric=args.metric,
        corrupt_answer=args.corrupt_answer,
        n_steps=args.steps,
    )
    circuit = scores.top_k(args.top_k)
    faith = faithfulness(subject, circuit)
    if args.out:
        scores.save(args.out)
    if args.json:
        out = scores.to_dict(top=args.top_k)
        out["faithfulness"] = {"k": len(circuit), "share": faith.share, "metric_circuit": faith.metric_circuit}
        print(json.dumps(out, indent=1, ensure_ascii=False, allow_nan=True))
        return 0
    print(
        f"{method} on {subject.name}: {scores.n_edges} edges, {scores.corruption} corruption, {scores.metric} "
        f"clean {scores.metric_clean:.4f} corrupt {scores.metric_corrupt:.4f} ({scores.seconds:.2f}s)"
    )
    print(f"top-{len(circuit)} circuit keeps {faith.share:.3f} of the metric gap")
    for u, v, s in scores.edge_list()[: args.top_k]:
        print(f"  {u:>10} -> {v:<7} {s:+.5f}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``circuit`` subcommand."""
    p = subparsers.add_parser(
        "circuit",
        help="score circuit edges of one prompt/answer by edge attribution patching",
        description="Edge attribution patching (EAP / EAP-IG): the edges between embedding, attention heads, MLPs "
        "and logits that carry the answer, and the faithfulness of the top-k circuit.",
    )
    add_example_args(p)
    p.add_argument("--corrupt", default=None, help="corrupt prompt with the same token length (default: mean ablation)")
    p.add_argument("--subject", default=None, help="subject string in the prompt (marks the key tokens)")
    p.add_argument("--method", choices=("eap", "eap-ig"), default="eap", help="default eap")
    p.add_argument("--metric", choices=("logprob", "logit_diff"), default="logprob", help="default logprob")
    p.add_argument("--corrupt-answer", default=None, help="corrupt answer (needed by --metric logit_diff)")
    p.add_argument("--steps", type=int, default=16, help="EAP-IG interpolation steps (default 16)")
    p.add_argument("--top-k", type=int, default=20, help="edges shown and circuit size (default 20)")
    p.add_argument("--out", default=None, help="save the EdgeScores to this .npz file")
    p.set_defaults(func=_run)
