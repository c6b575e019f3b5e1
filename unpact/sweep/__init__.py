"""Unlearning-strength sweeps and utility-matched points (see docs/tradeoff.md).

Example:
    >>> from unpact.sweep import sweep
    >>> result = sweep(base, forget, retain, ["ga_gd", "rmu"], out="runs/sweep", retain_only=control)
    >>> [(c.method, c.point) for c in result.choices]
"""

from __future__ import annotations

from unpact.sweep.result import SweepResult
from unpact.sweep.run import CHEAP_STAGES_OFF, DEFAULT_VALIDATION, split_validation, sweep, sweep_toyworld
from unpact.sweep.schedule import (
    DEFAULT_ALPHA_POINTS,
    DEFAULT_STEP_POINTS,
    Schedule,
    default_schedule,
    parse_schedules,
)
from unpact.sweep.select import DEFAULT_BAND, Choice, SweepPoint, check_band, choose_matched

__all__ = [
    "CHEAP_STAGES_OFF",
    "DEFAULT_ALPHA_POINTS",
    "DEFAULT_BAND",
    "DEFAULT_STEP_POINTS",
    "DEFAULT_VALIDATION",
    "Choice",
    "Schedule",
    "SweepPoint",
    "SweepResult",
    "check_band",
    "choose_matched",
    "default_schedule",
    "parse_schedules",
    "split_validation",
    "sweep",
    "sweep_toyworld",
]
