"""A finished sweep: :class:`SweepResult` (``sweep.json``), its table and the verdict's stability across seeds."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unpact.audit.auditdir import AuditDir
from unpact.scoring import Rate
from unpact.sweep.schedule import Schedule
from unpact.sweep.select import Choice, SweepPoint

__all__ = ["SweepResult"]


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep (``sweep.json``).

    Attributes:
        schedules: The strengths swept per method.
        seeds: Unlearning seeds.
        band: The utility band (see :func:`~unpact.sweep.select.choose_matched`).
        base_validation: The base model's validation retain accuracy.
        points: Every point's cheap audit.
        choices: The utility-matched point per method and seed.
        validation_subjects: The people (subjects) whose facts were set aside for validation.
        seconds: Time per phase (``unlearn``, ``validation``, ``audit``).
        audit_config: The cheap audit's settings.
    """

    schedules: list[Schedule]
    seeds: list[int]
    band: float
    base_validation: Rate
    points: list[SweepPoint]
    choices: list[Choice]
    validation_subjects: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    audit_config: dict[str, Any] = field(default_factory=dict)

    def chosen(self, method: str, seed: int | None = None) -> SweepPoint | None:
        """The matched point of ``method`` (first seed unless given), or ``None`` when none is in the band."""
        seed = self.seeds[0] if seed is None else seed
        for c in self.choices:
            if c.method == method and c.seed == seed and c.point is not None:
                return next(p for p in self.points if p.name == c.point)
        return None

    def stability(self) -> dict[str, dict[str, Any]]:
        """Per method, across seeds: the matched point and its cheap-audit verdict per seed, and how many agree.

        Returns:
            Method -> ``{"points": {seed: point or None}, "verdicts": {seed: label or None}, "majority": label,
            "agree": seeds with the majority verdict, "n": seeds}``.
        """
        from collections import Counter

        by_name = {p.name: p for p in self.points}
        out: dict[str, dict[str, Any]] = {}
        for c in self.choices:
            d = out.setdefault(c.method, {"points": {}, "verdicts": {}})
            d["points"][c.seed] = c.point
            d["verdicts"][c.seed] = by_name[c.point].verdict if c.point else None
        for d in out.values():
            counts = Counter(v if v is not None else "no point in the band" for v in d["verdicts"].values())
            label, k = counts.most_common(1)[0]  # ties: the first seed's
            d.update(majority=label, agree=k, n=len(d["verdicts"]))
        return out

    def table(self) -> str:
        """A plain-text table: one row per point (``*`` marks the matched ones), then each choice's reason."""

        def pct(r: Rate) -> str:
            return "-" if r.value is None else f"{100 * r.rate:.1f}"

        chosen = {c.point for c in self.choices if c.point}
        head = (
            f"{'point':<22}{'valid':>7}{'forget':>8}{'retain':>8}{'forgot':>8}"
            f"{'recov [95% CI]':>20}{'ctrl':>7}  {'best attack':<16}verdict"
        )
        rows = [head, "-" * len(head)]
        base = f"{'base':<22}{pct(self.base_validation):>7}"
        rows.append(base)
        for p in self.points:
            ci = (
                "-"
                if p.recovery.value is None
                else f"{pct(p.recovery)} [{100 * p.recovery.lo:.0f},{100 * p.recovery.hi:.0f}]"
            )
            mark = "*" if p.name in chosen else " "
            rows.append(
                f"{mark}{p.name:<21}{pct(p.validation):>7}{pct(p.forget_acc):>8}{pct(p.retain_acc):>8}"
                f"{pct(p.forgotten):>8}{ci:>20}{pct(p.control):>7}  {p.best_attack or '-':<16}{p.verdict or '-'}"
            )
        rows.append("")
        rows += [f"{c.method} (seed {c.seed}): {c.point or 'none'}: {c.reason}" for c in self.choices]
        if len(self.seeds) > 1:
            rows.append("")
            for m, d in self.stability().items():
                per = ", ".join(f"seed {s}: {d['points'][s] or 'none'} {d['verdicts'][s] or '-'}" for s in d["points"])
                rows.append(f"{m}: matched verdict {d['majority']} in {d['agree']} of {d['n']} seeds ({per})")
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "schedules": [s.to_dict() for s in self.schedules],
            "seeds": list(self.seeds),
            "band": self.band,
            "base_validation": self.base_validation.to_dict(),
            "points": [p.to_dict() for p in self.points],
            "choices": [c.to_dict() for c in self.choices],
            "validation_subjects": list(self.validation_subjects),
            "seconds": dict(self.seconds),
            "audit_config": dict(self.audit_config),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            schedules=[Schedule.from_dict(s) for s in d["schedules"]],
            seeds=[int(s) for s in d["seeds"]],
            band=float(d["band"]),
            base_validation=Rate.from_dict(d["base_validation"]),
            points=[SweepPoint.from_dict(p) for p in d["points"]],
            choices=[Choice.from_dict(c) for c in d["choices"]],
            validation_subjects=list(d["validation_subjects"]),
            seconds=dict(d.get("seconds", {})),
            audit_config=dict(d.get("audit_config", {})),
        )

    @classmethod
    def load(cls, out: str | Path) -> SweepResult:
        """Read ``OUT/sweep.json``.

        Raises:
            MissingFileError: When the sweep has not finished there.
        """
        from unpact.errors import MissingFileError

        path = AuditDir(out).sweep_path
        if not path.exists():
            raise MissingFileError(
                f"no sweep result at {str(path)!r}", path=path, fix="run 'unpact sweep --out DIR' first"
            )
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
