"""``unpact sweep``: each unlearning method along its strength, a cheap audit at every point, the matched points.

With no model arguments it sweeps the built-in toy world (:func:`unpact.sweep.sweep_toyworld`); with
``--base DIR --forget F --retain R [--retain-only DIR]`` the user's model (:func:`unpact.sweep.sweep`).
Re-running with the same settings resumes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from unpact._cli._common import add_model_args, load_options
from unpact.errors import InputError


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise InputError(f"--seeds takes comma-separated integers, got {text!r}", source="--seeds") from exc


def _run(args: argparse.Namespace) -> int:
    from unpact.audit.config import DEFAULT_METHODS, AuditConfig
    from unpact.sweep import sweep, sweep_toyworld

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else list(DEFAULT_METHODS)
    limits = {"max_forget": args.max_forget, "max_retain": args.max_retain}
    cfg_kw: dict[str, Any] = {k: v for k, v in limits.items() if v is not None}
    if args.attacks:
        cfg_kw["attacks"] = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    kw: dict[str, Any] = {
        "points": args.points,
        "seeds": _ints(args.seeds),
        "band": args.band,
        "n_validation": args.validation,
        "weights": args.weights,
        "progress": not args.quiet,
    }
    from unpact.sweep import check_band, parse_schedules

    parse_schedules(methods, args.points)  # bad input fails before the toy world is built
    check_band(args.band)
    t = time.time()
    user = [n for n, v in (("--base", args.base), ("--forget", args.forget), ("--retain", args.retain)) if v]
    if user:
        if len(user) < 3:
            raise InputError(
                "sweeping your own model needs --base, --forget and --retain",
                source="unpact sweep",
                fix="give all three (and --retain-only for the control), or none for the toy world",
            )
        from unpact.data import load_examples
        from unpact.models import load_model

        opts = load_options(args)
        base = load_model(args.base, **opts)
        control = load_model(args.retain_only, **opts) if args.retain_only else None
        config = AuditConfig(workers=0, **cfg_kw)
        result = sweep(
            base,
            load_examples(args.forget, id_prefix="forget-"),
            load_examples(args.retain, id_prefix="retain-"),
            methods,
            out=args.out,
            retain_only=control,
            config=config,
            device=args.device,
            dtype=args.dtype,
            **kw,
        )
    else:
        config = AuditConfig(preset=args.preset, workers=0, **cfg_kw)
        result = sweep_toyworld(methods, out=args.out, config=config, **kw)
    print(result.table())
    print(f"\nsweep written to {args.out} ({time.time() - t:.0f}s)")
    try:  # the plots are optional: viz is never imported by the library
        from unpact._cli._report_plugin import sweep_plots_module

        for path in sweep_plots_module().save_sweep_plots(result, args.out):
            print(f"plot: {path}")
    except ImportError as exc:
        print(f"no plots: {exc}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``sweep`` subcommand."""
    from unpact.sweep import DEFAULT_BAND, DEFAULT_VALIDATION

    p = subparsers.add_parser(
        "sweep",
        help="unlearn along each method's strength, audit every point cheaply, pick utility-matched points",
        description="Unlearning-strength sweep: each method at every strength of its schedule (one training run "
        "per method and seed), a cheap audit at every point (accuracy, attacks against the retain-only control, "
        "verdict), and each method's strongest point whose validation retain accuracy stays within the band. "
        "Toy world by default. Resumable: re-run with the same settings to continue.",
    )
    p.add_argument("--out", default="runs/sweep", help="output directory (default: runs/sweep)")
    p.add_argument("--methods", default=None, help="comma-separated unlearning methods (default: the audit's four)")
    p.add_argument(
        "--points",
        default=None,
        help='strengths: "5,10,20" (steps, every step-trained method) or "ga_gd=5,10;task_vector=0.5,1" '
        "(default: steps 5,10,20,30,45,60,90; task_vector alpha 0.25..3)",
    )
    p.add_argument("--seeds", default="0", help="comma-separated unlearning seeds; each gets its own matched point")
    p.add_argument(
        "--band",
        type=float,
        default=DEFAULT_BAND,
        help=f"utility band: validation retain accuracy >= BAND x the base's (default {DEFAULT_BAND})",
    )
    p.add_argument(
        "--validation",
        type=int,
        default=DEFAULT_VALIDATION,
        help=f"validation retain items set aside (default {DEFAULT_VALIDATION})",
    )
    p.add_argument("--weights", action="store_true", help="also relearning and quantization at every point")
    p.add_argument("--attacks", default=None, help="comma-separated attacks of the cheap audit (default: the audit's)")
    p.add_argument("--max-forget", type=int, default=None, help="use at most this many forget items")
    p.add_argument("--max-retain", type=int, default=None, help="audit at most this many retain items")
    p.add_argument("--preset", default="default", choices=("default", "micro"), help="toy world preset")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("your model (all optional: without them the toy world is swept)")
    g.add_argument("--base", default=None, help="your base model directory")
    g.add_argument("--forget", default=None, help="forget items (JSON/JSONL, TOFU style)")
    g.add_argument("--retain", default=None, help="retain items (JSON/JSONL)")
    g.add_argument("--retain-only", default=None, help="a model trained without the forget items (the control)")
    add_model_args(g)
    p.set_defaults(func=_run)
