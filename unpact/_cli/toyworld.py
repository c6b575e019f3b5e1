"""``unpact toyworld build``: build the toy world (models + TOFU-style splits) into a directory."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from unpact._cli._common import _unescape

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``toyworld`` subcommand."""
    p = subparsers.add_parser("toyworld", help="build the synthetic toy world (models + data splits)")
    sub = p.add_subparsers(dest="toyworld_command", metavar="ACTION")
    b = sub.add_parser("build", help="build (or reuse from the cache) a toy world and copy it to --out")
    b.add_argument("--preset", default="default", help="micro (tests) or default (the demo)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", default=None, help="directory to write base/, retain_only/, data/ and config.json to")
    b.add_argument("--cache-dir", default=None, help="cache directory (default $UNPACT_CACHE or ~/.cache/unpact)")
    b.add_argument(
        "--template",
        default=None,
        type=_unescape,
        help="train the models on questions in this prompt template (holding {question}; default: the bare question)",
    )
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_build)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _build(args: argparse.Namespace) -> int:
    from unpact.errors import InputError
    from unpact.toyworld import build_toyworld

    world = build_toyworld(
        args.preset,
        seed=args.seed,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
        workers=0,
        overrides={"template": args.template} if args.template not in (None, "{question}") else None,
    )
    root = world.root
    if args.out:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise InputError(
                "the directory exists and is not empty", source=f"--out {out}", fix="choose a new directory"
            )
        shutil.copytree(world.root, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("unlearned"))
        root = out
    print(
        json.dumps(
            {
                "root": str(root),
                "base": str(root / "base"),
                "retain_only": str(root / "retain_only"),
                "data": str(root / "data"),
                "template": world.prompt_format.template,
                "stats": world.config.get("stats"),
            },
            indent=1,
        )
    )
    return 0
