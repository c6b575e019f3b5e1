"""``unpact evaluate``: accuracy (exact / lenient), ROUGE-L and answer log-prob of a model on a split."""

from __future__ import annotations

import argparse
import json
import logging

from unpact._cli._common import add_format_args, add_model_args, load_subject

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = subparsers.add_parser("evaluate", help="score a model on question/answer examples")
    p.add_argument("--model", required=True, help="Hugging Face model directory")
    p.add_argument("--split", required=True, help="examples file (TOFU-style JSON / JSONL)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print the full result (summary + per-item records) as JSON")
    p.add_argument("--out", default=None, help="also save the result to this JSON file")
    add_model_args(p)
    add_format_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from unpact.data import load_examples
    from unpact.evaluate import evaluate

    result = evaluate(
        load_subject(args, args.model),
        load_examples(args.split),
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    if args.out:
        result.save(args.out)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, ensure_ascii=False))
    else:
        s = result.summary()
        lo, hi = result.interval("lenient")
        print(
            f"n={s['n']}  exact={s['exact']:.3f}  lenient={s['lenient']:.3f} [{lo:.3f}, {hi:.3f}]  "
            f"first_token={s['first_token']:.3f}  rouge_l={s['rouge_l']:.3f}  answer_logprob={s['answer_logprob']:.3f}"
        )
    return 0
