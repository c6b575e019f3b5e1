"""Unlearning-strength sweeps: each method along its strength, a cheap audit at every point, the matched points.

:func:`sweep` unlearns the base model with each method at every strength of its schedule
(:mod:`unpact.sweep.schedule`; one training run per method and seed gives all its step points), saves the
checkpoints, measures retain accuracy on validation facts disjoint from the audited retain items, and
audits every point with the cheap stages of :func:`unpact.audit.audit`: accuracy, the black-box and
white-box prompt attacks against the retain-only control (:data:`SWEEP_ATTACKS`) and the verdict,
optionally the weight-level evidence; :data:`SWEEP_SKIPPED_STAGES` are left out. It then picks each
method's utility-matched point (:mod:`unpact.sweep.select`). Everything is saved in one output directory
laid out like an audit's (:mod:`unpact.audit.auditdir`: ``models/POINT`` the checkpoints,
``validation.json``, ``sweep.json``) and a re-run resumes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unpact._io import atomic_save_model, atomic_write_text
from unpact.attacks.registry import DEFAULT_ATTACKS
from unpact.audit.auditdir import AuditDir
from unpact.audit.config import AuditConfig
from unpact.data import Example
from unpact.errors import InputError
from unpact.scoring import Rate, rate
from unpact.sweep.result import SweepResult
from unpact.sweep.schedule import Schedule, parse_schedules
from unpact.sweep.select import DEFAULT_BAND, SweepPoint, check_band, choose_matched

if TYPE_CHECKING:
    from unpact.audit.summary import AuditSummary
    from unpact.models import Subject

logger = logging.getLogger(__name__)

__all__ = [
    "sweep",
    "sweep_toyworld",
    "split_validation",
    "CHEAP_STAGES_OFF",
    "DEFAULT_VALIDATION",
    "SWEEP_ATTACKS",
    "SWEEP_SKIPPED_STAGES",
]

#: Validation retain items a sweep sets aside (facts disjoint from the audited retain items).
DEFAULT_VALIDATION = 200

#: The sweep's attacks unless the config names some: the audit's default set without ``sample`` (eight
#: decodings per item, as many as the other eight attacks together); the matched points' full audit runs it.
SWEEP_ATTACKS: tuple[str, ...] = tuple(a for a in DEFAULT_ATTACKS if a != "sample")

#: Stages a sweep's cheap audit leaves out: the attribution of every point (the base's, for the key words,
#: stays) and the destructive rate read from it.
SWEEP_SKIPPED_STAGES: tuple[str, ...] = ("attribution", "destructive")

#: The audit settings a sweep's cheap audit switches off (the expensive, exploratory stages);
#: ``weights=True`` keeps relearning and quantization.
CHEAP_STAGES_OFF: dict[str, Any] = {
    "lens": False,
    "circuits": 0,
    "probes": False,
    "directions": False,
    "soft_prompt": False,
    "diff_attacks": False,
    "standard_metrics": False,
}


def split_validation(
    retain: Sequence[Example], n: int = DEFAULT_VALIDATION, *, max_retain: int | None = None
) -> tuple[list[Example], list[Example]]:
    """Set retain facts aside for validation: ``(audited retain, validation)``, disjoint by fact.

    A fact is one subject's one answer (all its phrasings, :func:`unpact.stats.cluster_keys`). The
    validation items are ``n`` items spread over facts (one phrasing per fact, as many people and
    attributes as possible, :func:`unpact.evidence.spread`), taken from the facts the audit does not
    look at: those outside the first ``max_retain`` items when the audit keeps only those, else any.
    Every phrasing of a validation fact leaves the audited side, so choosing a point on validation
    accuracy never sees an audited retain fact.

    Raises:
        InputError: For ``n < 1``, or no retain fact left to set aside.
    """
    from unpact.evidence import cluster_keys, spread

    if n < 1:
        raise InputError(f"the validation split needs at least 1 item, got {n}", source="sweep validation")
    retain = list(retain)
    keys = cluster_keys(retain, by="fact")
    if max_retain is not None and max_retain < len(retain):
        head = {keys[e.id] for e in retain[:max_retain]}
        pool = [e for e in retain[max_retain:] if keys[e.id] not in head]
    else:
        pool = retain
    val = spread(pool, min(n, len({keys[e.id] for e in pool})), by="fact")  # one phrasing per fact
    held = {keys[e.id] for e in val}
    audited = [e for e in retain if keys[e.id] not in held]
    if not held or not audited:
        raise InputError(
            f"cannot set {n} validation items aside from {len(retain)} retain items and keep some for the audit",
            source="retain items",
            fix="give more retain items, or a smaller n_validation (--validation)",
        )
    return audited, val


def _hits(subject: Subject, items: Sequence[Example], max_new_tokens: int) -> list[bool]:
    from unpact.evaluate import evaluate

    return [r.lenient for r in evaluate(subject, items, max_new_tokens=max_new_tokens).records]


def _sweep_key(
    base: Subject,
    forget: Sequence[Example],
    retain: Sequence[Example],
    schedules: Sequence[Schedule],
    seeds: Sequence[int],
    n_validation: int,
    config: AuditConfig,
    unlearn_kw: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What a sweep directory's checkpoints and validation hits depend on."""
    from unpact.audit.resume import content_hash as sha

    return {
        "schedules": [s.to_dict() for s in schedules],
        "seeds": list(seeds),
        "unlearn_kw": sha(dict(unlearn_kw or {})),
        "base": base.weights_hash(),
        "forget": sha([e.to_dict() for e in forget]),
        "retain": sha([e.to_dict() for e in retain]),
        "validation": [n_validation, config.max_retain],
    }


def _check_sweep_key(d: AuditDir, key: dict[str, Any]) -> None:
    """Refuse a directory holding another sweep (its checkpoints would be reused as this one's)."""
    from unpact.errors import AuditConfigMismatch

    path = d.sweep_key_path
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != key:
            differ = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
            raise AuditConfigMismatch(
                f"{str(d.root)!r} holds a sweep with other {', '.join(differ)}",
                source="--out",
                fix="re-run with the same settings to resume it, or choose a new output directory",
            )
    else:
        atomic_write_text(path, json.dumps(key, indent=1, sort_keys=True) + "\n")


def _check_unlearn_kw(schedules: Sequence[Schedule], unlearn_kw: Mapping[str, Any] | None) -> None:
    """Refuse ``unlearn_kw`` entries that the sweep sets itself (the swept strength, the seed...)."""
    given = set(unlearn_kw or {})
    for sched in schedules:
        own = {"method", "seed", "progress"} | (
            {"steps", "checkpoints", "on_checkpoint"} if sched.kind == "steps" else {"alpha"}
        )
        clash = sorted(given & own)
        if clash:
            swept = "steps" if sched.kind == "steps" else "alpha"
            raise InputError(
                f"unlearn_kw sets {', '.join(clash)}, which the sweep sets itself for {sched.method!r} "
                f"(it sweeps {swept}: {', '.join(f'{p:g}' for p in sched.points)})",
                source="sweep(unlearn_kw=...)",
                fix=f"give the strengths as points={{{sched.method!r}: [...]}} (--points {sched.method}=...) "
                "and the seeds as seeds=[...]; leave them out of unlearn_kw",
            )


def _unlearn_schedule(
    base: Subject,
    forget: Sequence[Example],
    retain: Sequence[Example],
    sched: Schedule,
    seed: int,
    out: AuditDir,
    names: Sequence[str],
    progress: bool,
    unlearn_kw: Mapping[str, Any],
) -> None:
    """Unlearn once along ``sched`` and save each point's model to ``models/NAME``."""
    import torch

    from unpact.unlearn import get_method, unlearn

    dests = [out.model_dir(n) for n in names]

    def save(subject: Subject, dest: Path) -> None:
        from unpact._modeldir import _quiet_loading

        with _quiet_loading():
            atomic_save_model(subject.model, subject.tokenizer, dest)

    if sched.kind == "steps":
        steps = [int(p) for p in sched.points]
        by_step = dict(zip(steps, dests))
        final = unlearn(
            base,
            forget,
            retain,
            method=sched.method,
            steps=steps[-1],
            seed=seed,
            progress=progress,
            checkpoints=steps[:-1],
            on_checkpoint=lambda k, s: save(s, by_step[k]),
            **unlearn_kw,
        )
        save(final, dests[-1])
        return
    if not get_method(sched.method).linear_in_alpha:  # e.g. UniErase's edit scale: one run per point
        for alpha, dest in zip(sched.points, dests):
            save(
                unlearn(base, forget, retain, sched.method, seed=seed, progress=progress, alpha=alpha, **unlearn_kw),
                dest,
            )
        return
    one = unlearn(base, forget, retain, method=sched.method, seed=seed, progress=progress, alpha=1.0, **unlearn_kw)
    ref = dict(base.model.named_parameters())
    edited = {k: p.detach().clone() for k, p in one.model.named_parameters()}
    for alpha, dest in zip(sched.points, dests):
        with torch.no_grad():  # theta(alpha) = theta + alpha (theta_1 - theta): the edit is linear in alpha
            for k, p in one.model.named_parameters():
                p.copy_(ref[k] + alpha * (edited[k] - ref[k]))
        cfg: Any = one.model.config
        cfg.unpact_unlearn = {**cfg.unpact_unlearn, "hparams": {"alpha": alpha}}
        save(one, dest)


def _point(name: str, sched: Schedule, strength: float, seed: int, summary: AuditSummary, val: Rate) -> SweepPoint:
    m = summary.models[name]
    sc = m.scores
    best = sc.best_attack()
    extra: dict[str, Any] = {"levels": {k: v.outcome for k, v in m.levels.items()}}
    return SweepPoint(
        name=name,
        method=sched.method,
        kind=sched.kind,
        strength=float(strength),
        seed=seed,
        validation=val,
        forget_acc=sc.forget_acc,
        retain_acc=sc.retain_acc,
        forgotten=sc.forgotten,
        recovery=sc.recovery_any.rate,
        control=sc.recovery_any.control,
        best_attack=best[0] if best else None,
        verdict=m.verdict.label if m.verdict else None,
        verdict_reason=m.verdict.reason if m.verdict else "",
        extra=extra,
    )


def sweep(
    base: Subject,
    forget: Sequence[Example],
    retain: Sequence[Example],
    methods: Sequence[str],
    *,
    out: str | Path,
    retain_only: Subject | None = None,
    points: str | Mapping[str, Sequence[float]] | None = None,
    seeds: Sequence[int] = (0,),
    band: float = DEFAULT_BAND,
    n_validation: int = DEFAULT_VALIDATION,
    weights: bool = False,
    config: AuditConfig | None = None,
    progress: bool = True,
    unlearn_kw: Mapping[str, Any] | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> SweepResult:
    """Unlearn with each method along its strength, audit every point cheaply, choose the matched points.

    Args:
        base: The model before unlearning.
        forget: Forget items.
        retain: Retain items; some facts are set aside from them for validation
            (:func:`split_validation`), the rest are the audited retain items.
        methods: Method names (:data:`unpact.unlearn.METHODS`).
        out: Output directory (an audit directory, see :mod:`unpact.audit.auditdir`); a re-run resumes.
        retain_only: The control model trained without the forget items (recommended; without it the
            attacks are compared with permuted-gold answers).
        points: Strengths per method (:func:`~unpact.sweep.schedule.parse_schedules`; default the schedules'
            defaults).
        seeds: Unlearning seeds: each gives its own run and its own matched point (verdict stability).
        band: The utility band of the matched point (validation retain accuracy >= band x base's).
        n_validation: Validation retain items set aside (one phrasing per fact, spread over facts).
        weights: Also run the weight-level evidence (relearning, quantization) at every point.
        config: Settings of the cheap audit (item limits, attacks, seed...); its expensive stages are
            switched off (:data:`CHEAP_STAGES_OFF`) and ``out`` is replaced.
        progress: Progress bars and phase lines.
        unlearn_kw: Extra arguments of :func:`unpact.unlearn.unlearn` (``lr``, ``batch_size``, hyperparameters).
        device: Where the saved points are loaded for validation and the cheap audit (default: CPU).
        dtype: Their dtype (default: as saved).

    Raises:
        InputError: Bad strengths, seeds or band, or ``unlearn_kw`` setting what the sweep sets (the swept
            ``alpha`` or ``steps``, the seed), before any work.
        AuditConfigMismatch: ``out`` holds a sweep with other methods, strengths, seeds, data or base model.

    Returns:
        The :class:`SweepResult` (also ``OUT/sweep.json``).
    """
    from unpact.audit.models import Models
    from unpact.audit.run import audit, resolve_max_new_tokens
    from unpact.audit.stages import default_stages

    t0 = time.time()
    schedules = parse_schedules(list(methods), points)  # every input checked before any work
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"seeds must be distinct and at least one, got {seeds}", source="seeds (--seeds)")
    check_band(band)
    _check_unlearn_kw(schedules, unlearn_kw)
    base_cfg = config or AuditConfig()
    audited, validation = split_validation(retain, n_validation, max_retain=base_cfg.max_retain)
    d = AuditDir.create(out)
    _check_sweep_key(d, _sweep_key(base, forget, retain, schedules, seeds, n_validation, base_cfg, unlearn_kw))
    names: dict[tuple[str, int], list[str]] = {}
    for sched in schedules:
        for seed in seeds:
            tail = "" if seed == seeds[0] else f".s{seed}"
            names[(sched.method, seed)] = [sched.label(p) + tail for p in sched.points]
    seconds: dict[str, float] = {}

    def say(msg: str) -> None:
        logger.info(msg)
        if progress:
            print(f"[sweep] {msg}", flush=True)

    t = time.time()
    for sched in schedules:
        for seed in seeds:
            todo = names[(sched.method, seed)]
            if all((d.model_dir(n) / "config.json").exists() for n in todo):
                continue
            say(f"unlearning {sched.method} (seed {seed}) at {sched.kind} {', '.join(f'{p:g}' for p in sched.points)}")
            _unlearn_schedule(base, forget, retain, sched, seed, d, todo, progress, dict(unlearn_kw or {}))
    seconds["unlearn"] = round(time.time() - t, 1)

    t = time.time()
    all_names = [n for ns in names.values() for n in ns]
    fmt = base_cfg.prompt_format(base.prompt_format)
    models = Models(
        base, {n: str(d.model_dir(n)) for n in all_names}, retain_only=retain_only, device=device, dtype=dtype
    ).with_format(fmt)  # validated in the audit's format, with its answer length
    max_new = resolve_max_new_tokens(base_cfg, models.base, [*forget, *retain])
    ids = [e.id for e in validation]
    saved: dict[str, Any] = {}
    if d.validation_path.exists():
        saved = json.loads(d.validation_path.read_text(encoding="utf-8"))
    val_hits: dict[str, list[bool]] = saved.get("hits", {}) if saved.get("ids") == ids else {}
    todo = [n for n in ["base", *all_names] if n not in val_hits]
    if todo:
        say(f"validation retain accuracy on {len(validation)} items of {len({e.subject for e in validation})} people")
    for n in todo:
        val_hits[n] = _hits(models.base if n == "base" else models.unlearned[n], validation, max_new)
        atomic_write_text(d.validation_path, json.dumps({"ids": ids, "hits": val_hits}))
    seconds["validation"] = round(time.time() - t, 1)

    clusters = [e.subject or e.id for e in validation]
    val = {n: rate(h, clusters) for n, h in val_hits.items()}

    t = time.time()
    off = dict(CHEAP_STAGES_OFF)
    if not weights:
        off.update(relearn=False, quantize=False)
    if base_cfg.attacks is None:
        off["attacks"] = SWEEP_ATTACKS
    cheap = base_cfg.replace(out=str(d.root), progress=progress, **off)
    say(f"cheap audit of {len(all_names)} points (accuracy, attacks {', '.join(cheap.attacks or ())}, verdict)")
    stages = [st for st in default_stages() if st.name not in SWEEP_SKIPPED_STAGES]
    summary = audit(cheap, models, forget, audited, stages=stages)
    seconds["audit"] = round(time.time() - t, 1)

    pts = []
    for sched in schedules:
        for seed in seeds:
            for strength, n in zip(sched.points, names[(sched.method, seed)]):
                pts.append(_point(n, sched, strength, seed, summary, val[n]))
    choices = choose_matched(pts, val["base"].rate, band)
    seconds["total"] = round(time.time() - t0, 1)
    result = SweepResult(
        schedules=schedules,
        seeds=seeds,
        band=band,
        base_validation=val["base"],
        points=pts,
        choices=choices,
        validation_subjects=sorted({e.subject or e.id for e in validation}),
        seconds=seconds,
        audit_config=cheap.to_dict(),
    )
    atomic_write_text(d.sweep_path, json.dumps(result.to_dict(), indent=1, sort_keys=True) + "\n")
    for c in choices:
        say(f"{c.method} seed {c.seed}: {c.point or 'no point'} ({c.reason})")
    return result


def sweep_toyworld(
    methods: Sequence[str] | None = None,
    *,
    out: str | Path = "runs/sweep",
    preset: str = "default",
    config: AuditConfig | None = None,
    **kw: Any,
) -> SweepResult:
    """:func:`sweep` of the built-in toy world: its base model, forget and retain items, retain-only control.

    Args:
        methods: Methods (default :data:`unpact.audit.config.DEFAULT_METHODS`).
        out: Output directory.
        preset: ``"default"`` or ``"micro"`` (built once and cached, :func:`unpact.toyworld.build_toyworld`).
        config: The cheap audit's settings (default: the preset's item limits, worker processes automatic).
        **kw: Further arguments of :func:`sweep` (``points``, ``seeds``, ``band``, ``weights``...).
    """
    from unpact.audit.config import DEFAULT_METHODS
    from unpact.toyworld import build_toyworld

    config = (config or AuditConfig(preset=preset, workers=0)).with_preset_limits()  # type: ignore[arg-type]
    world = build_toyworld(config.preset, seed=config.seed, progress=kw.get("progress", True), workers=config.workers)
    return sweep(
        world.load_base(),
        world.forget,
        world.retain,
        list(methods or DEFAULT_METHODS),
        out=out,
        retain_only=world.load_retain_only(),
        config=config,
        **kw,
    )
