"""``unpact audit``: is each unlearned model's forgotten knowledge gone, or only hidden?

With no model arguments it audits the built-in toy world: build (or reuse) the base and
retain-only models, unlearn with several methods (the unlearned models are cached under
``OUT/models/``, so a re-run reuses them), audit each and the retain-only model. With
``--base DIR --unlearned NAME=DIR ... --forget F --retain R [--retain-only DIR]`` it audits the
user's models. Re-running with the same arguments resumes an interrupted audit.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("ga_gd", "npo_gd", "idk", "rmu")
# Items per split of the toy-world audit (not applied to the user's own models): keeps the default
# audit around 15 minutes on 2 CPU cores.
_PRESET_LIMITS = {"micro": dict(max_forget=None, max_retain=60, n_retain_attacked=16),
                  "default": dict(max_forget=None, max_retain=150, n_retain_attacked=40)}


def _unlearned_models(world: Any, methods: list[str], out: Path, seed: int, progress: bool) -> dict[str, str]:
    """Unlearn the world's base model with each method, caching each result under ``out/models/<method>``."""
    from unpact.unlearn import unlearn

    paths: dict[str, str] = {}
    base = None
    for m in methods:
        dest = out / "models" / m
        if not (dest / "config.json").exists():
            base = base or world.load_base()
            t = time.time()
            new = unlearn(base, world.forget, world.retain, method=m, seed=seed, progress=progress)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{m}."))
            new.model.save_pretrained(tmp)
            new.tokenizer.save_pretrained(tmp)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
            logger.info("unlearned with %s in %.0fs -> %s", m, time.time() - t, dest)
        paths[m] = str(dest)
    return paths


def _run(args: argparse.Namespace) -> int:
    from unpact.audit import audit

    out = Path(args.out)
    progress = not args.no_progress
    user_mode = any(x is not None for x in (args.base, args.forget, args.retain)) or args.unlearned
    # Preset item limits size the toy-world audit only; the user's own data is used in full (audit()'s
    # defaults) unless --max-forget / --max-retain / --n-retain-attacked say otherwise.
    limits: dict[str, Any] = {}
    if user_mode:
        from unpact.data import load_examples

        missing = [f"--{n}" for n, v in (("base", args.base), ("forget", args.forget), ("retain", args.retain),
                                          ("unlearned", args.unlearned)) if not v]
        if missing:
            raise ValueError(f"auditing your own models needs {', '.join(missing)} as well")
        unlearned = {}
        for spec in args.unlearned:
            if "=" not in spec:
                raise ValueError(f"--unlearned takes NAME=DIR, got {spec!r}")
            name, path = spec.split("=", 1)
            unlearned[name] = path
        base, retain_only = args.base, args.retain_only
        forget, retain = load_examples(args.forget), load_examples(args.retain)
    else:
        from unpact.toyworld import build_toyworld

        limits = dict(_PRESET_LIMITS.get(args.preset, _PRESET_LIMITS["default"]))
        world = build_toyworld(args.preset, seed=args.seed, progress=progress)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unlearned = _unlearned_models(world, methods, out, args.seed, progress)
        base, retain_only = world.load_base(), world.load_retain_only()
        forget, retain = world.forget, world.retain
    for k in ("max_forget", "max_retain", "n_retain_attacked"):
        if getattr(args, k) is not None:
            limits[k] = getattr(args, k)
    attacks = None if args.attacks is None else [a.strip() for a in args.attacks.split(",") if a.strip()]
    t = time.time()
    summary = audit(
        base, unlearned, forget, retain, retain_only=retain_only, out_dir=out, attacks=attacks,
        keywords=args.keywords, attribution=args.attribution, batch_size=args.batch_size, seed=args.seed,
        progress=progress, **limits,
    )
    print(summary.table())
    print(f"\naudit written to {out} ({time.time() - t:.0f}s)")
    try:  # the report is optional: viz is never imported by the library
        from unpact._cli._report_plugin import report_module

        print(f"report: {report_module().write_report(out)}")
    except ImportError:
        logger.info("viz not installed; no HTML report")
    except Exception as exc:  # noqa: BLE001 - a report failure must not fail the audit
        logger.warning("could not write the HTML report: %s", exc)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``audit`` subcommand."""
    p = subparsers.add_parser(
        "audit",
        help="audit unlearned models: removal, suppression or destruction (toy world by default)",
        description="Audit unlearned models with keyword-emphasis attacks and chance controls. With no model "
        "arguments, audits the built-in toy world (unlearned with several methods). Resumable: re-run with the "
        "same arguments to continue.",
    )
    p.add_argument("--out", default="runs/audit", help="output directory (default runs/audit)")
    p.add_argument("--preset", default="default", choices=["default", "micro"], help="toy world size (micro: fast)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"toy world: unlearning methods, comma-separated (default {','.join(DEFAULT_METHODS)})")
    p.add_argument("--base", default=None, help="your base model directory")
    p.add_argument("--unlearned", action="append", default=[], metavar="NAME=DIR", help="an unlearned model (repeat)")
    p.add_argument("--forget", default=None, help="forget items (JSON/JSONL, TOFU style)")
    p.add_argument("--retain", default=None, help="retain items (JSON/JSONL)")
    p.add_argument("--retain-only", default=None, help="a model trained without the forget items (chance control)")
    p.add_argument("--attacks", default=None, help="comma-separated attack names (default: all built-in)")
    p.add_argument("--keywords", default="attribution", choices=["attribution", "oracle"],
                   help="key words from the base model's attribution (default) or from the items' keywords")
    p.add_argument("--attribution", default="ig", choices=["ig", "loo"], help="attribution method (default ig)")
    p.add_argument("--max-forget", type=int, default=None, help="use at most this many forget items")
    p.add_argument("--max-retain", type=int, default=None, help="use at most this many retain items")
    p.add_argument("--n-retain-attacked", type=int, default=None, help="retain items attacked and attributed")
    p.add_argument("--batch-size", type=int, default=32, help="items per chunk (the unit of resumption)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)
