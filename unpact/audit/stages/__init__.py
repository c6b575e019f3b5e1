"""The audit's stages, in the order :func:`unpact.audit.audit` runs them.

A new kind of evidence is one new module here (a :class:`~unpact.audit.context.Stage` subclass) and one
line in :data:`DEFAULT_STAGES`; see docs/architecture.md.
"""

from __future__ import annotations

from unpact.audit.context import Stage
from unpact.audit.stages.diff_attacks import DiffAttackStage
from unpact.audit.stages.evidence import EvidenceStage
from unpact.audit.stages.keywords import KeywordsStage
from unpact.audit.stages.quality import QualityStage
from unpact.audit.stages.records import AccuracyStage, AttacksStage
from unpact.audit.stages.representations import DirectionStage, ProbeStage
from unpact.audit.stages.scores import DestructiveStage, ScoresStage
from unpact.audit.stages.soft_prompt import SoftPromptStage
from unpact.audit.stages.standard_metrics import StandardMetricsStage
from unpact.audit.stages.tracers import AttributionStage, CircuitsStage, LensStage
from unpact.audit.stages.tradeoff import TradeoffStage
from unpact.audit.stages.variants import VariantsStage
from unpact.audit.stages.verdict import VerdictStage
from unpact.audit.stages.weights import QuantizeStage, RelearnStage

__all__ = ["DEFAULT_STAGES", "Stage", "default_stages"]

#: The audit, stage by stage: evidence first (saved, resumable), then the numbers derived from it.
DEFAULT_STAGES: tuple[type[Stage], ...] = (
    KeywordsStage,
    AccuracyStage,
    AttacksStage,
    AttributionStage,
    LensStage,
    CircuitsStage,
    RelearnStage,
    QuantizeStage,
    ProbeStage,
    DirectionStage,
    SoftPromptStage,
    DiffAttackStage,
    ScoresStage,
    DestructiveStage,
    QualityStage,
    StandardMetricsStage,
    VariantsStage,
    TradeoffStage,
    EvidenceStage,
    VerdictStage,
)


def default_stages() -> list[Stage]:
    """Fresh instances of :data:`DEFAULT_STAGES`."""
    return [cls() for cls in DEFAULT_STAGES]
