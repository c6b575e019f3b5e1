"""The audit's typed result: :class:`AuditSummary` of one :class:`ModelSummary` per model.

``summary.json`` holds :meth:`AuditSummary.to_dict`, versioned by :data:`SUMMARY_SCHEMA`; the
verdict, the table and the report read these types, never the raw JSON.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import dacite

from unpact.destructive import DestructiveRate
from unpact.errors import DataFileError
from unpact.evidence import EvidenceTest, LevelOutcome
from unpact.quality import Quality
from unpact.scoring import Rate, RecoveryReport
from unpact.verdict import Verdict

__all__ = ["ModelSummary", "AuditSummary", "format_table", "SUMMARY_SCHEMA"]

#: Version of ``summary.json``'s layout.
SUMMARY_SCHEMA = 3

Role = Literal["base", "retain_only", "unlearned"]


@dataclass
class ModelSummary:
    """Everything the audit concluded about one model.

    Attributes:
        role: ``base``, ``retain_only`` (the control) or ``unlearned``.
        scores: Accuracy, forgetting and recovery per attack against the control.
        retain_attacked: Retain items attacked (the retain-side control of every attack).
        destructive: Destructive rate on retain prompts (``None`` for the base model).
        key_share_drop: Mean drop of the key words' attribution share on forget items.
        quality: ReLearn's answer quality (KFR, KRR, Linguistic Score of the forget and the retain answers,
            :class:`unpact.quality.Quality`).
        verdict: The verdict (``None`` for the base model).
        evidence: Every paired test against the control, by threat level (:mod:`unpact.evidence`).
        levels: Threat level -> what it concluded (``recoverable``, ``residue``, ``not_recoverable``...).
        sections: Results of further evidence stages, by stage name (JSON-ready dicts; each stage
            module documents its section).
    """

    role: Role
    scores: RecoveryReport
    retain_attacked: int = 0
    destructive: DestructiveRate | None = None
    key_share_drop: float | None = None
    quality: Quality | None = None
    verdict: Verdict | None = None
    evidence: list[EvidenceTest] = field(default_factory=list)
    levels: dict[str, LevelOutcome] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuditSummary:
    """The audit's result (what ``summary.json`` holds).

    Attributes:
        models: Model name -> its :class:`ModelSummary` (base first, then the control, then the
            unlearned models).
        attacks: Attack names audited.
        config_hash: Hash of the resume key (settings, models, data, schema).
        config: The settings (:meth:`unpact.audit.AuditConfig.to_dict`).
        prompt_format: How the models were prompted: the format's fields, the BOS handling, one
            rendered item (:meth:`unpact.prompts.PromptFormat.describe`) and the base model's accuracy
            under it (``base_accuracy``, :class:`unpact.audit.format_check.FormatCheck`).
        schema: :data:`SUMMARY_SCHEMA` of the code that wrote it.
    """

    models: dict[str, ModelSummary]
    attacks: list[str]
    config_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    prompt_format: dict[str, Any] = field(default_factory=dict)
    schema: int = SUMMARY_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``nan`` becomes ``None``; rates keep 6 decimals)."""
        return _jsonable(self)

    @classmethod
    def from_dict(cls, d: Any, *, source: str | os.PathLike[str] = "summary") -> AuditSummary:
        """Inverse of :meth:`to_dict`.

        Raises:
            DataFileError: Another schema version or a malformed summary (names ``source``).
        """
        if not isinstance(d, Mapping):
            raise DataFileError(f"expected a JSON object, got {type(d).__name__}", path=source)
        if d.get("schema") != SUMMARY_SCHEMA:
            raise DataFileError(
                f"written by another unpact version (summary schema {d.get('schema')!r}, this version reads "
                f"{SUMMARY_SCHEMA})",
                path=source,
                fix="re-run the audit into a new directory",
            )
        try:
            return dacite.from_dict(cls, dict(d), config=_DACITE)
        except (dacite.DaciteError, KeyError, TypeError, ValueError) as exc:
            raise DataFileError(
                f"not an audit summary ({exc})", path=source, fix="re-run the audit to rewrite it"
            ) from exc

    def verdicts(self) -> dict[str, str]:
        """Model name -> verdict label."""
        return {m: s.verdict.label for m, s in self.models.items() if s.verdict is not None}

    def table(self) -> str:
        """A plain-text table (see :func:`format_table`)."""
        return format_table(self)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict") and not isinstance(obj, AuditSummary):  # leaves: Rate, Verdict, Quality...
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return None if obj != obj else obj
    return obj


_DACITE = dacite.Config(
    type_hooks={
        Rate: Rate.from_dict,
        DestructiveRate: DestructiveRate.from_dict,
        Verdict: Verdict.from_dict,
        EvidenceTest: EvidenceTest.from_dict,
        LevelOutcome: LevelOutcome.from_dict,
        Quality: Quality.from_dict,
    },
    cast=[tuple],
    strict=True,
)


def _pct(x: float | None) -> str:
    return "  -  " if x is None or x != x else f"{100 * x:5.1f}"


def format_table(summary: AuditSummary) -> str:
    """One line per model: forget/retain accuracy, best attack recovery vs control, destructive rate, verdict."""
    head = (
        f"{'model':<14} {'forget':>6} {'retain':>6} {'forgot':>6} {'best attack':<16} {'recov':>6} "
        f"{'ctrl':>6} {'any':>6} {'ctrl':>6} {'destr':>6} verdict"
    )
    lines = [head, "-" * len(head)]
    order = {"base": 0, "retain_only": 1}  # then the unlearned models (a summary read from JSON has them sorted)
    for name, m in sorted(summary.models.items(), key=lambda nm: order.get(nm[1].role, 2)):
        s = m.scores
        best = s.best_attack()
        a = s.recovery_any
        lines.append(
            f"{name:<14} {_pct(s.forget_acc.value):>6} {_pct(s.retain_acc.value):>6} "
            f"{_pct(s.forgotten.value):>6} {best[0] if best else '-':<16} "
            f"{_pct(best[1].rate.value if best else None):>6} {_pct(best[1].control.value if best else None):>6} "
            f"{_pct(a.rate.value):>6} {_pct(a.control.value):>6} "
            f"{_pct(m.destructive.rate if m.destructive else None):>6} {m.verdict.label if m.verdict else '-'}"
        )
    return "\n".join(lines)
