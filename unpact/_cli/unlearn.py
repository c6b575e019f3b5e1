"""``unpact unlearn``: unlearn a forget set from a Hugging Face model directory."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from unpact._cli._common import add_format_args, add_model_args, load_subject

logger = logging.getLogger(__name__)


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``unlearn`` subcommand."""
    p = subparsers.add_parser("unlearn", help="unlearn a forget set (GA, NPO, IDK, task vector, RMU, ...)")
    p.add_argument("--model", required=True, help="Hugging Face model directory")
    p.add_argument("--forget", required=True, help="forget examples (TOFU-style JSON / JSONL)")
    p.add_argument(
        "--retain", default=None, help="retain examples (needed by *_gd, *_kl, idk, rmu, relearn, palu, unierase)"
    )
    p.add_argument(
        "--method",
        default="npo_gd",
        help="ga, ga_gd, ga_kl, npo, npo_gd, npo_kl, idk, task_vector, rmu, relearn, palu, unierase",
    )
    p.add_argument("--out", required=True, help="directory for the unlearned model (safetensors + tokenizer)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--hparam",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method hyperparameter, e.g. --hparam beta=0.2 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true")
    add_model_args(p)
    add_format_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from unpact.data import load_examples
    from unpact.errors import InputError
    from unpact.unlearn import unlearn

    hp: dict[str, Any] = {}
    for item in args.hparam:
        if "=" not in item:
            raise InputError(f"{item!r} is not KEY=VALUE", source="--hparam", fix="e.g. --hparam beta=0.2")
        k, v = item.split("=", 1)
        hp[k] = _value(v)
    subject = load_subject(args, args.model)
    forget = load_examples(args.forget)
    retain = load_examples(args.retain) if args.retain else None
    new = unlearn(
        subject,
        forget,
        retain,
        args.method,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        **hp,
    )
    out = Path(args.out)
    hf: Any = new.model
    hf.save_pretrained(out, safe_serialization=True)
    new.tokenizer.save_pretrained(out)
    print(json.dumps({"out": str(out), **hf.config.unpact_unlearn}, indent=1))
    return 0
