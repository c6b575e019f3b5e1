"""The utility-matched point of each method: the strongest one whose validation retain accuracy stays in the band.

A fair comparison of unlearning methods holds utility fixed. For each method (and seed) the sweep picks
the *strongest* point whose retain accuracy, measured on validation items disjoint from the audited
retain items, is at least ``band`` times the base model's (default 0.9). The chosen points keep most of
the model's utility; the verdict's destruction rule (an absolute retain-accuracy drop on the audited
items) is still applied to them in the audit. A method with no point in the band is reported as such
(no point is chosen for it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from unpact.errors import InputError
from unpact.scoring import Rate

__all__ = ["DEFAULT_BAND", "SweepPoint", "Choice", "choose_matched", "check_band"]

#: Default utility band: validation retain accuracy at least 90% of the base model's.
DEFAULT_BAND = 0.9


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: a method at one strength and seed, and its cheap audit.

    Attributes:
        name: The point's model name in the sweep's audit (``"ga_gd@15"``, ``"ga_gd@15.s1"``).
        method: The unlearning method.
        kind: ``"steps"`` or ``"alpha"``.
        strength: Steps or alpha.
        seed: Unlearning seed.
        validation: Retain accuracy on the validation items (facts disjoint from the audited retain items).
        forget_acc: Plain accuracy on the forget items.
        retain_acc: Plain accuracy on the audited retain items.
        forgotten: Share of the base-known forget items answered wrong.
        recovery: Recovered by any attack, among the forgotten items.
        control: The retain-only model's rate under the same attacks on the same items.
        best_attack: The attack with the largest excess over its control (``None``: none).
        verdict: The cheap audit's verdict label.
        verdict_reason: Its sentence.
        extra: Other numbers (e.g. the weight-level evidence when it ran).
    """

    name: str
    method: str
    kind: str
    strength: float
    seed: int
    validation: Rate
    forget_acc: Rate
    retain_acc: Rate
    forgotten: Rate
    recovery: Rate
    control: Rate
    best_attack: str | None
    verdict: str | None
    verdict_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        for k in ("validation", "forget_acc", "retain_acc", "forgotten", "recovery", "control"):
            d[k] = getattr(self, k).to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepPoint:
        """Inverse of :meth:`to_dict`."""
        rates = ("validation", "forget_acc", "retain_acc", "forgotten", "recovery", "control")
        kw: dict[str, Any] = {k: (Rate.from_dict(v) if k in rates else v) for k, v in d.items()}
        return cls(**kw)


@dataclass(frozen=True)
class Choice:
    """The utility-matched point of one method and seed, or why there is none.

    Attributes:
        method: The method.
        seed: Its seed.
        point: The chosen point's name, or ``None`` when no point is in the band.
        reason: One sentence: the band, the base's validation accuracy and the chosen point's, or why
            none was chosen.
        threshold: The validation accuracy a point needed (``band`` times the base's).
    """

    method: str
    seed: int
    point: str | None
    reason: str
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Choice:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


def check_band(band: float) -> float:
    """``band`` if it lies in (0, 1], else :class:`InputError`."""
    if isinstance(band, bool) or not isinstance(band, (int, float)) or not 0 < band <= 1:
        raise InputError(f"the utility band must be in (0, 1], got {band!r}", source="band (--band)", fix="e.g. 0.9")
    return float(band)


def choose_matched(points: Sequence[SweepPoint], base_validation: float, band: float = DEFAULT_BAND) -> list[Choice]:
    """The strongest in-band point of every (method, seed) in ``points``.

    Args:
        points: Sweep points (any methods and seeds).
        base_validation: The base model's validation retain accuracy.
        band: A point is in the band when its validation accuracy is >= ``band * base_validation``.

    Returns:
        One :class:`Choice` per (method, seed), in the order they first appear.

    Raises:
        InputError: For a band outside (0, 1] or a base accuracy outside [0, 1].
    """
    check_band(band)
    if not 0 <= base_validation <= 1:
        raise InputError(f"base validation accuracy must be in [0, 1], got {base_validation}", source="choose_matched")
    threshold = band * base_validation
    groups: dict[tuple[str, int], list[SweepPoint]] = {}
    for p in points:
        groups.setdefault((p.method, p.seed), []).append(p)
    out = []
    for (method, seed), pts in groups.items():
        pts = sorted(pts, key=lambda p: p.strength)
        # a small tolerance: 0.9 x 0.8 is 0.7200000000000001 in floating point, and 144/200 must count
        inside = [p for p in pts if p.validation.value is not None and p.validation.rate >= threshold - 1e-9]
        head = f"band: validation retain accuracy >= {band:g} x base {base_validation:.1%} = {threshold:.1%}"
        if not inside:
            weakest = pts[0]
            reason = (
                f"no point in the band ({head}); the weakest, {weakest.name}, keeps {weakest.validation.rate:.1%}: "
                f"{method} cannot unlearn here without losing utility"
            )
            out.append(Choice(method, seed, None, reason, threshold))
            continue
        best = inside[-1]
        above = [p for p in pts if p.strength > best.strength]
        why = f"the strongest point in the band ({head}): {best.validation.rate:.1%}" + (
            f"; the next, {above[0].name}, keeps {above[0].validation.rate:.1%}" if above else "; the last point swept"
        )
        if best.verdict == "not_unlearned":
            why += (
                f"; at this point only {best.forgotten.rate:.0%} of the base-known forget items are forgotten "
                "(the cheap audit: not unlearned), so within the band the method barely unlearns"
            )
        out.append(Choice(method, seed, best.name, why, threshold))
    return out
