"""The audit entry points: :func:`audit` (any models) and :func:`audit_toyworld` (the built-in world)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unpact.audit.auditdir import AuditDir
from unpact.audit.config import AuditConfig
from unpact.audit.context import AuditRun, Callback, Stage
from unpact.audit.models import Models
from unpact.audit.resume import resume_key
from unpact.audit.shard import Shard
from unpact.audit.summary import AuditSummary
from unpact.data import Example
from unpact.errors import InputError

if TYPE_CHECKING:
    from unpact.models import Subject
    from unpact.toyworld import ToyWorld

logger = logging.getLogger(__name__)

__all__ = ["audit", "audit_toyworld", "prepare", "resolve_max_new_tokens"]


def _check_items(forget: Sequence[Example], retain: Sequence[Example]) -> None:
    for split, items in (("forget", forget), ("retain", retain)):
        bad = [type(e).__name__ for e in items if not isinstance(e, Example)]
        if bad:
            raise InputError(
                f"the {split} items must be Example objects, got {bad[0]}",
                source=f"{split} items",
                fix="load them with unpact.load_examples(path_or_list)",
            )
    if not forget or not retain:
        raise InputError("the audit needs at least one forget and one retain item", source="forget/retain items")
    ids = [e.id for e in forget] + [e.id for e in retain]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise InputError(
            f"item ids must be unique across the forget and retain items; repeated: {dup}",
            source="forget/retain items",
            fix="give every item its own id (files without ids get ids per split when loaded by the CLI)",
        )


def _probe_pool(forget: Sequence[Example], retain: Sequence[Example]) -> list[Example]:
    """The retain items the probes may learn from: none about a forget subject or repeating a forget item.

    The probe's floor (the retain-only model) means "people never seen", so a retain item about a forget
    person, or one asking a forget item's question, is left out (logged).
    """
    subjects = {e.subject for e in forget if e.subject}
    pairs = {(e.prompt, e.answer) for e in forget}
    keep = [e for e in retain if (e.subject is None or e.subject not in subjects) and (e.prompt, e.answer) not in pairs]
    if len(keep) < len(retain):
        logger.info(
            "probes: %d retain item(s) about a forget subject or repeating a forget item are not trained on",
            len(retain) - len(keep),
        )
    return keep


def resolve_max_new_tokens(config: AuditConfig, base: Subject, items: Sequence[Example]) -> int:
    """Tokens decoded per answer: ``config.max_new_tokens``, else 4 more than the longest gold answer's tokens."""
    if config.max_new_tokens is not None:
        return config.max_new_tokens
    tok = base.tokenizer
    return 4 + max(len(tok(" " + e.answer, add_special_tokens=False)["input_ids"]) for e in items)


def prepare(
    config: AuditConfig,
    models: Models,
    forget: Sequence[Example],
    retain: Sequence[Example],
    *,
    holdout: Sequence[Example] = (),
    variants: Mapping[str, Sequence[Example]] | None = None,
    callback: Callback | None = None,
    shard: Shard | None = None,
) -> AuditRun:
    """Check the inputs, open the output directory and check the resume key: the state stages run on.

    Raises:
        InputError: Bad items or settings.
        AuditDirError: An unusable output directory.
        AuditConfigMismatch: The directory holds an audit with other settings, models or data.
    """
    from unpact.attacks import DEFAULT_ATTACKS, get_attack, unlearning_token_ids
    from unpact.audit.format_check import check_format, format_key
    from unpact.evidence import spread

    _check_items(list(forget), list(retain))  # every item given: the probes read beyond max_retain
    # the probes learn from every retain item given (spread over facts), not only the audited ones
    probe_train = spread(_probe_pool(forget, retain), config.probe_items, "fact")
    forget = list(forget) if config.max_forget is None else list(forget)[: config.max_forget]
    retain = list(retain) if config.max_retain is None else list(retain)[: config.max_retain]
    for name, m in models.items():  # refuse before any work what a stage would refuse later
        why = m.spec.disabled_reason("ig") if config.attribution == "ig" else None
        if why is not None:
            raise InputError(
                f"model {name!r}: integrated gradients are off for {m.spec.model_type} ({why})",
                source="setting 'attribution' (--attribution)",
                fix="audit with --attribution loo",
            )
    fmt = config.prompt_format(models.base.prompt_format)
    models = models.with_format(fmt)  # every model is put to in one format
    attacks = [a for a in (config.attacks if config.attacks is not None else DEFAULT_ATTACKS) if a != "plain"]
    if config.attacks is None and any(unlearning_token_ids(m) for _, m in models.items()):
        attacks.append("ban_unl")  # a model added an unlearning token (UniErase): decode with it banned
    max_new = resolve_max_new_tokens(config, models.base, [*forget, *retain])
    # before the directory is keyed: a wrong format must not block the rerun the error asks for
    format_check = check_format(config, models.base, forget, retain, max_new)
    key = resume_key(
        config,
        models.weights_hashes(),
        forget,
        retain,
        attacks=[get_attack(a).config() for a in attacks],
        max_new_tokens=max_new,
        prompt_format=format_key(models.base, forget[0]),
        probe_train=probe_train,
    )
    if shard is None and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        logger.warning(
            "launched with WORLD_SIZE=%s but audit() got no shard: every process runs the whole audit into the same "
            "directory; pass shard=unpact.audit.Shard.from_env() to split it",
            os.environ["WORLD_SIZE"],
        )
    shard = shard or Shard()
    with shard.main_first("open the output directory"):  # rank 0 creates it and writes the key first
        out = AuditDir.create(config.out)
        config_hash = out.check_resume(key, config.to_dict())
    return AuditRun(
        config=config,
        config_hash=config_hash,
        models=models,
        forget=forget,
        retain=retain,
        retain_attacked=retain[: config.retain_attacked],
        probe_train=probe_train,
        dir=out,
        store=out.records(shard.part_name),
        attacks=attacks,
        max_new_tokens=max_new,
        callback=callback or (lambda stage, info: None),
        format_check=format_check,
        holdout=list(holdout),
        variants={k: list(v) for k, v in (variants or {}).items()},
        shard=shard,
    )


def audit(
    config: AuditConfig,
    models: Models,
    forget: Sequence[Example],
    retain: Sequence[Example],
    *,
    stages: Sequence[Stage] | None = None,
    callback: Callback | None = None,
    holdout: Sequence[Example] = (),
    variants: Mapping[str, Sequence[Example]] | None = None,
    shard: Shard | None = None,
) -> AuditSummary:
    """Audit unlearned models against the base and the retain-only model; resumable.

    The audit is the list of its stages (:data:`unpact.audit.stages.DEFAULT_STAGES`): key words,
    accuracy, attacks, attribution, lens, circuits, then the scores, destructive rate, quality and
    verdict derived from them. A stage whose work is already saved in ``config.out`` is skipped, so a
    killed audit re-run with the same settings, models and data continues where it stopped and writes
    the same ``summary.json`` as an uninterrupted run.

    Args:
        config: The settings (:class:`~unpact.audit.config.AuditConfig`; ``config.out`` is the output
            directory).
        models: Base, retain-only control and unlearned models (:class:`~unpact.audit.models.Models`).
        forget: Forget items (the facts that should be gone).
        retain: Retain items (facts that should stay).
        stages: The stages to run (default: :func:`unpact.audit.stages.default_stages`).
        callback: Called as ``callback(stage, info)`` after every finished unit of work.
        holdout: Items about people no model was trained on: the non-members of the standard metrics'
            membership-inference scores (stage ``standard_metrics``; none: no MIA). The toy world has them.
        variants: Split name -> other wordings of the forget facts, e.g. held-out phrasings or biography
            sentences: their plain accuracy per model is reported next to the audited phrasings' (stage
            ``variants``). The toy world gives ``forget_heldout`` and ``forget_bios``.
        shard: This process's rank in a split audit (:meth:`unpact.audit.shard.Shard.from_env` under
            torchrun); every rank calls ``audit`` with the same arguments and gets the same summary.

    Returns:
        The :class:`~unpact.audit.summary.AuditSummary`, also written to ``summary.json``.
    """
    from concurrent.futures.process import BrokenProcessPool

    from unpact._procs import pool_broke
    from unpact.audit.format_check import describe_format
    from unpact.audit.plan import plan
    from unpact.audit.stage_loop import run_stages
    from unpact.audit.stages import default_stages

    run = prepare(config, models, forget, retain, holdout=holdout, variants=variants, callback=callback, shard=shard)
    format_check = run.format_check
    todo = list(stages) if stages is not None else default_stages()
    estimate = plan(run, todo)
    logger.info("%s", estimate.describe())
    if config.progress and run.shard.is_main:
        print(estimate.describe(), file=sys.stderr, flush=True)
    t_all = time.time()
    try:
        spent = run_stages(run, todo)
    except BrokenProcessPool as exc:
        raise pool_broke(exc, "of the audit") from exc
    finally:
        run.close()
    if not run.shard.is_main:  # its share is saved; rank 0 finishes the audit
        run.shard.barrier("summary")
        return run.dir.read_summary()
    parts = run.dir.record_parts()
    if parts:  # a split audit's ranks' records, folded into records.jsonl
        run.store.merge_parts(parts)

    base = run.models.base
    example = run.forget[0]
    summary = AuditSummary(
        models=run.summaries,
        attacks=run.attacks,
        config_hash=run.config_hash,
        config=config.to_dict(),
        prompt_format={
            **describe_format(base.tokenizer, base.prompt_format, example),
            "base_accuracy": format_check.to_dict() if format_check is not None else None,
        },
    )
    run.dir.write_summary(summary)
    run.dir.write_timings({**estimate.to_dict(), "seconds": spent, "total_seconds": round(time.time() - t_all, 1)})
    run.shard.barrier("summary")
    return summary


# ----- the toy world -----------------------------------------------------------------------------
def unlearn_toyworld(
    world: ToyWorld, methods: Sequence[str], out: AuditDir, *, seed: int, progress: bool, workers: int | None = None
) -> dict[str, str]:
    """The world's base model unlearned with each method, copied into ``out/models/NAME``.

    The models are made once per world, method and seed and cached next to the world
    (:func:`unpact.toyworld.unlearned.unlearned_models`, several methods side by side); the audit
    directory gets its own copy, so it stays complete if the cache is cleared.

    Returns:
        Method name -> model directory (in ``out``).
    """
    from unpact.toyworld.unlearned import unlearned_models

    paths: dict[str, str] = {}
    todo = [m for m in methods if not (out.model_dir(m) / "config.json").exists()]
    cached = unlearned_models(world, todo, seed=seed, progress=progress, workers=workers) if todo else {}
    for m in methods:
        dest = out.model_dir(m)
        if m in cached:
            _copy_model(cached[m], dest)
        paths[m] = str(dest)
    return paths


def audit_toyworld(
    config: AuditConfig | None = None,
    *,
    callback: Callback | None = None,
    device: str | None = None,
    dtype: str | None = None,
    shard: Shard | None = None,
) -> AuditSummary:
    """The whole audit of the built-in toy world: build (or reuse) it, unlearn, audit.

    Builds the ``config.preset`` world (cached) and unlearns its base model with each of ``config.methods``.
    With ``config.strength == "matched"`` (the default) each method's strength is swept first
    (:func:`unpact.sweep.sweep`, saved under ``config.out/sweep``) and the audit judges its strongest point
    whose validation retain accuracy stays within ``config.band`` of the base's (:func:`matched_toyworld`);
    with ``"default"`` each method is unlearned once at its default hyperparameters (cached next to the
    world). The models are copied to ``config.out/models/`` and audited with the retain-only model as the
    control and the world's holdout people as the membership-inference non-members. Item limits left unset
    take the preset's (:data:`unpact.audit.config.PRESET_LIMITS`).

    Args:
        config: The settings (default :class:`AuditConfig()`: the default world, four methods).
        callback: See :func:`audit`.
        device: Where to load the models for the audit (default: CPU).
        dtype: The models' dtype for the audit (default: float32, as trained).
        shard: This process's rank under torchrun (see :func:`audit`): rank 0 builds the world, unlearns
            (and sweeps) while the others wait, then every rank audits its share.

    Returns:
        The :class:`~unpact.audit.summary.AuditSummary`.
    """
    from unpact.toyworld import build_toyworld
    from unpact.unlearn import METHODS

    config = (config or AuditConfig()).with_preset_limits()
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown:
        raise InputError(
            f"unknown unlearning method(s) {unknown}",
            source="setting 'methods' (--methods)",
            fix=f"choose from {sorted(METHODS)}",
        )
    shard = shard or Shard()
    with shard.main_first("build the toy world"):  # rank 0 builds (or finds) it; the others then find it cached
        out = AuditDir.create(config.out)  # refuse a foreign directory before hours of work
        world = build_toyworld(config.preset, seed=config.seed, progress=config.progress, workers=config.workers)
    base, control = world.load_base(device, dtype), world.load_retain_only(device, dtype)
    picked: tuple[dict[str, str], list[str]] | None = None
    if shard.is_main:  # the unlearning (and the sweep) run once, on rank 0
        retain = world.retain
        if config.strength == "matched":
            unlearned, retain = matched_toyworld(world, config, out, control)
        else:
            unlearned = unlearn_toyworld(
                world, config.methods, out, seed=config.seed, progress=config.progress, workers=config.workers
            )
        picked = (unlearned, [e.id for e in retain])
    unlearned, retain_ids = shard.broadcast(picked)
    by_id = {e.id: e for e in world.retain}
    retain = [by_id[i] for i in retain_ids]
    models = Models(base, unlearned, retain_only=control, device=device, dtype=dtype)
    variants = {"forget_heldout": world.forget_heldout, "forget_bios": world.forget_bios}
    return audit(
        config,
        models,
        world.forget,
        retain,
        callback=callback,
        holdout=world.holdout,
        variants=variants,
        shard=shard,
    )


def _copy_model(src: Path, dest: Path) -> None:
    """Copy a model directory to ``dest`` atomically (the audit directory keeps its own copy)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    shutil.copytree(src, tmp, dirs_exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def matched_toyworld(
    world: ToyWorld, config: AuditConfig, out: AuditDir, control: Subject
) -> tuple[dict[str, str], list[Example]]:
    """Each method at its utility-matched point: sweep its strength (``out/sweep``), copy the chosen models.

    Returns:
        Method name -> model directory (in ``out/models``), for the methods with a point in the band (the
        others are logged and listed in the sweep's choices), and the retain items to audit (the sweep's
        validation facts left out, so the point was never chosen on an audited item).
    """
    from unpact.sweep import DEFAULT_VALIDATION, split_validation, sweep

    result = sweep(
        world.load_base(),  # unlearned as in --strength default: float32 on CPU, whatever the audit's device
        world.forget,
        world.retain,
        list(config.methods),
        out=out.sweep_dir,
        retain_only=control,
        config=config,
        band=config.band,
        points=config.sweep_points,
        seeds=(config.seed,),
        progress=config.progress,
    )
    retain, _ = split_validation(world.retain, DEFAULT_VALIDATION, max_retain=config.max_retain)
    paths: dict[str, str] = {}
    for method in config.methods:
        point = result.chosen(method)
        if point is None:
            logger.warning("%s has no point in the utility band; not audited (see sweep.json)", method)
            continue
        dest = out.model_dir(method)
        src = AuditDir(out.sweep_dir).model_dir(point.name)
        if (dest / "config.json").exists() and _unlearn_record(dest) != _unlearn_record(src):
            raise InputError(
                f"{str(out.root)!r} already holds another {method} model than the matched point {point.name}",
                source="--out",
                fix="audit into a new directory (an audit directory keeps the models its records were made with)",
            )
        if not (dest / "config.json").exists():
            _copy_model(src, dest)
        paths[method] = str(dest)
    if not paths:
        raise InputError(
            f"no method reached the utility band (validation retain accuracy >= {config.band} x the base's)",
            source="setting 'band' (--band)",
            fix="lower the band, or audit the default strengths (--strength default)",
        )
    return paths, retain


def _unlearn_record(model_dir: Path) -> Any:
    import json

    return json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("unpact_unlearn")
