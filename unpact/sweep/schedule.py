"""Unlearning strength schedules: which points of each method's strength a sweep visits.

A method's strength is its number of optimizer steps (every method trained by the shared loop), or
``alpha`` for ``task_vector`` (the multiple of the fine-tuning change subtracted). One run of ``k`` steps
gives every step point below ``k``: the loop's learning rate has a fixed warm-up and is constant after
it, so it does not depend on the run's length, and the model after ``j`` of ``k`` steps is exactly the
model of a ``j``-step run with the same seed (:func:`unpact.unlearn.unlearn`'s ``checkpoints``). For
``task_vector`` one fine-tune gives every ``alpha``: ``theta(alpha) = theta + alpha (theta_1 - theta)``
where ``theta_1`` is the ``alpha = 1`` model (the task-vector edit is linear in ``alpha``). UniErase's
strength is ``alpha`` too, the scale of its closed-form edit; each of its points is one run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from unpact.errors import InputError

__all__ = ["DEFAULT_STEP_POINTS", "DEFAULT_ALPHA_POINTS", "Schedule", "default_schedule", "parse_schedules"]

#: Step counts a sweep visits by default: from barely trained to 1.5 times the shared default (60 steps).
DEFAULT_STEP_POINTS: tuple[int, ...] = (5, 10, 20, 30, 45, 60, 90)
#: The default ``alpha`` points (``task_vector``'s multiple, UniErase's edit scale).
DEFAULT_ALPHA_POINTS: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)

Kind = Literal["steps", "alpha"]


@dataclass(frozen=True)
class Schedule:
    """The strengths one method is unlearned at, weakest first.

    Attributes:
        method: A name in :data:`unpact.unlearn.METHODS`.
        kind: ``"steps"`` (optimizer steps) or ``"alpha"`` (``task_vector``'s multiple).
        points: The strengths, increasing.
    """

    method: str
    kind: Kind
    points: tuple[float, ...]

    def label(self, strength: float) -> str:
        """The point's name in the sweep: ``"ga_gd@15"`` (steps) or ``"task_vector@a0.5"`` (alpha)."""
        return f"{self.method}@{int(strength)}" if self.kind == "steps" else f"{self.method}@a{strength:g}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"method": self.method, "kind": self.kind, "points": list(self.points)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Schedule:
        """Inverse of :meth:`to_dict`."""
        return cls(str(d["method"]), d["kind"], tuple(d["points"]))


def _kind(method: str) -> Kind:
    from unpact.unlearn import get_method

    return "alpha" if get_method(method).post is not None else "steps"


def default_schedule(method: str) -> Schedule:
    """The default schedule of ``method``: :data:`DEFAULT_STEP_POINTS`, or :data:`DEFAULT_ALPHA_POINTS`.

    Raises:
        UnknownNameError: For an unknown method.
    """
    kind = _kind(method)
    pts = DEFAULT_STEP_POINTS if kind == "steps" else DEFAULT_ALPHA_POINTS
    return Schedule(method, kind, tuple(float(p) for p in pts))


def _check_points(method: str, kind: Kind, points: Sequence[Any], source: str) -> tuple[float, ...]:
    try:
        vals = [float(p) for p in points]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{method}: strengths must be numbers, got {list(points)!r}", source=source) from exc
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"{method}: strengths must be finite numbers, got {vals}", source=source)
    if not vals:
        raise InputError(f"{method}: no strengths given", source=source, fix="give e.g. 5,10,20")
    if kind == "steps" and any(v != int(v) or v < 1 for v in vals):
        raise InputError(f"{method}: step counts must be whole numbers >= 1, got {vals}", source=source)
    if kind == "alpha" and any(not v > 0 for v in vals):
        raise InputError(f"{method}: alpha must be > 0, got {vals}", source=source)
    if len(set(vals)) != len(vals):
        raise InputError(f"{method}: strengths repeat: {vals}", source=source, fix="give each once")
    return tuple(sorted(vals))


def parse_schedules(methods: Sequence[str], spec: str | Mapping[str, Sequence[float]] | None = None) -> list[Schedule]:
    """One schedule per method: the defaults, overridden by ``spec``.

    Args:
        methods: Method names.
        spec: ``None`` (defaults), a mapping ``method -> strengths``, or the command-line form
            ``"ga_gd=5,10,20;rmu=10,20"`` (a bare ``"5,10,20"`` applies to every step-trained method).

    Returns:
        The schedules, in ``methods``' order.

    Raises:
        InputError: Malformed strengths, or a method in ``spec`` that is not swept.
        UnknownNameError: An unknown method.
    """
    source = "sweep points (--points)"
    given: dict[str, Sequence[Any]] = {}
    every: Sequence[Any] | None = None
    if isinstance(spec, str):
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            if "=" in part:
                name, _, vals = part.partition("=")
                if name.strip() in given:
                    raise InputError(f"strengths given twice for {name.strip()}", source=source, fix="give each once")
                given[name.strip()] = [v for v in vals.split(",") if v.strip()]
            elif every is not None:
                raise InputError(f"two bare strength lists in {spec!r}", source=source, fix="give one, or METHOD=...")
            else:
                every = [v for v in part.split(",") if v.strip()]
    elif spec is not None:
        given = dict(spec)
    stray = sorted(set(given) - set(methods))
    if stray:
        raise InputError(f"strengths given for {stray}, which are not swept", source=source, fix=f"sweep {stray} too")
    out = []
    for m in methods:
        kind = _kind(m)
        pts = given.get(m, every if (every is not None and kind == "steps") else None)
        sched = default_schedule(m)
        out.append(sched if pts is None else Schedule(m, kind, _check_points(m, kind, pts, source)))
    return out
