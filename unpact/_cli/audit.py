"""``unpact audit``: is each unlearned model's forgotten knowledge gone, or only hidden?

With no model arguments it audits the built-in toy world (:func:`unpact.audit.audit_toyworld`). With
``--base DIR --unlearned NAME=DIR ... --forget F --retain R [--retain-only DIR]`` it audits the user's
models (:func:`unpact.audit.audit`). Every other option is a setting of :class:`unpact.audit.AuditConfig`
(the options are generated from it). Re-running with the same settings resumes an interrupted audit.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from unpact._cli._common import add_format_args, add_model_args, format_settings, load_options
from unpact.errors import InputError

logger = logging.getLogger(__name__)


def _user_models(args: argparse.Namespace) -> tuple[Any, list[Any], list[Any]]:
    from unpact.audit import Models
    from unpact.data import load_examples

    missing = [
        f"--{n}"
        for n, v in (
            ("base", args.base),
            ("forget", args.forget),
            ("retain", args.retain),
            ("unlearned", args.unlearned),
        )
        if not v
    ]
    if missing:
        raise InputError(
            f"auditing your own models needs {', '.join(missing)} as well",
            source="unpact audit",
            fix="give --base, --unlearned NAME=DIR, --forget and --retain (or none of them for the toy world)",
        )
    unlearned: dict[str, str] = {}
    for spec in args.unlearned:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputError(
                f"--unlearned takes NAME=DIR, got {spec!r}",
                source="--unlearned",
                fix="e.g. --unlearned npo=runs/npo-model",
            )
        if name in unlearned:
            raise InputError(
                f"model name {name!r} given twice", source="--unlearned", fix="give each model its own name"
            )
        unlearned[name] = path
    forget = load_examples(args.forget, id_prefix="forget-")
    retain = load_examples(args.retain, id_prefix="retain-")
    opts = load_options(args)
    return Models(args.base, unlearned, retain_only=args.retain_only, **opts), forget, retain


def _shard(config: Any, device: str | None) -> tuple[Any, str | None]:
    """This process's shard (under torchrun: its rank) and the device its models go to (``cuda``: its own GPU)."""
    import os

    from unpact.audit.shard import Shard

    shard = Shard.from_env(timeout_s=config.dist_timeout, device=device)
    if shard.split and device == "cuda":  # one GPU per rank on each machine
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    if shard.split:
        logger.info("rank %d of %d (device %s)", shard.rank, shard.world, device or "cpu")
    return shard, device


def _run(args: argparse.Namespace) -> int:
    from unpact.audit import audit, audit_toyworld
    from unpact.audit.config import from_namespace

    if args.list_stages:
        from unpact.audit.stages import default_stages

        for i, st in enumerate(default_stages(), start=1):
            print(f"{i:2d}. {st.name:<12} reads {', '.join(st.reads) or '-'}; writes {', '.join(st.writes)}")
        return 0
    config = from_namespace(args, **format_settings(args))
    if config.workers is None:  # the command line uses worker processes unless told otherwise
        config = config.replace(workers=0)
    shard, device = _shard(config, args.device)
    user_mode = any(x is not None for x in (args.base, args.forget, args.retain, args.retain_only)) or args.unlearned
    t = time.time()
    if user_mode:
        args.device = device
        models, forget, retain = _user_models(args)
        summary = audit(config, models, forget, retain, shard=shard)
    else:
        if args.tokenizer is not None:
            raise InputError(
                "--tokenizer is for your own models; the toy world has its own tokenizer",
                source="unpact audit",
                fix="give --base, --unlearned, --forget and --retain too, or drop --tokenizer",
            )
        summary = audit_toyworld(config, device=device, dtype=args.dtype, shard=shard)
    if not shard.is_main:  # rank 0 prints the table and writes the report
        return 0
    print(summary.table())
    print(f"\naudit written to {config.out} ({time.time() - t:.0f}s)")
    try:  # the report is optional: viz is never imported by the library
        from unpact._cli._report_plugin import report_module

        print(f"report: {report_module().write_report(config.out)}")
    except ImportError:
        logger.info("viz not installed; no HTML report")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``audit`` subcommand (its settings generated from :class:`unpact.audit.AuditConfig`)."""
    from unpact.audit.config import add_arguments

    p = subparsers.add_parser(
        "audit",
        help="audit unlearned models: removal, suppression or destruction (toy world by default)",
        description="Audit unlearned models with keyword-emphasis attacks and chance controls. With no model "
        "arguments, audits the built-in toy world (unlearned with several methods). Resumable: re-run with the "
        "same settings to continue.",
    )
    g = p.add_argument_group("your models (all optional: without them the toy world is audited)")
    g.add_argument("--base", default=None, help="your base model directory")
    g.add_argument("--unlearned", action="append", default=[], metavar="NAME=DIR", help="an unlearned model (repeat)")
    g.add_argument("--forget", default=None, help="forget items (JSON/JSONL, TOFU style)")
    g.add_argument("--retain", default=None, help="retain items (JSON/JSONL)")
    g.add_argument("--retain-only", default=None, help="a model trained without the forget items (the control)")
    add_model_args(g)
    add_format_args(p.add_argument_group("prompt format (default: the bare question; the toy world: its own)"))
    add_arguments(p.add_argument_group("settings"))
    p.add_argument("--list-stages", action="store_true", help="list the audit's stages and exit")
    p.set_defaults(func=_run)
