"""Before the audit spends its time: does the base model answer in this prompt format?

An audit needs a base model that knows the facts. Under the wrong prompt format (raw questions for a
model trained on ``"Question: ...\\nAnswer:"``, or no chat template for a chat model) it answers few
items right, and every later figure is about prompts the model does not understand: a retrained
control looks destroyed, verdicts flip. :func:`check_format` scores the base model on the first
items of each split under the audit's format (and, when that fails, under common alternatives, so
the message can say which one works) and stops the audit unless ``force`` is set.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unpact.data import Example
from unpact.errors import PromptFormatError
from unpact.prompts import PromptFormat

if TYPE_CHECKING:
    from unpact.audit.context import AuditRun
    from unpact.models import Subject

logger = logging.getLogger(__name__)

__all__ = ["FormatCheck", "check_format", "ITEMS_CHECKED", "ALTERNATIVES"]

#: Items per split the check scores.
ITEMS_CHECKED = 32

#: Plain templates tried when the audit's format fails (the chat template is tried too where the
#: tokenizer has one).
ALTERNATIVES: tuple[str, ...] = ("{question}", "Question: {question}\nAnswer:", "Q: {question}\nA:")


@dataclass(frozen=True)
class FormatCheck:
    """The base model's accuracy under the audit's prompt format.

    Attributes:
        forget: Share of the first forget items answered right (lenient match).
        retain: The same for the retain items.
        n_forget: Forget items scored.
        n_retain: Retain items scored.
        threshold: The ``min_base_accuracy`` setting.
        alternatives: When the check failed: other formats' ``(description, forget, retain)``.
    """

    forget: float
    retain: float
    n_forget: int
    n_retain: int
    threshold: float
    alternatives: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Both shares reach the threshold."""
        return min(self.forget, self.retain) >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (what the summary and the report show)."""
        return {
            "forget": self.forget,
            "retain": self.retain,
            "n_forget": self.n_forget,
            "n_retain": self.n_retain,
            "threshold": self.threshold,
            "passed": self.passed,
            "alternatives": [list(a) for a in self.alternatives],
        }


def _accuracy(subject: Subject, items: Sequence[Example], max_new_tokens: int, batch_size: int) -> float:
    from unpact.evaluate import evaluate

    return evaluate(subject, items, max_new_tokens=max_new_tokens, batch_size=batch_size).accuracy("lenient")


def _label(fmt: PromptFormat) -> str:
    if fmt.chat:
        return "the chat template (--chat-template)" + (
            f" with template {fmt.template!r}" if fmt.template != "{question}" else ""
        )
    return f"template {fmt.template!r}" + (
        f", answer separator {fmt.answer_sep!r}" if fmt.answer_sep is not None else ""
    )


def _alternatives(subject: Subject) -> list[PromptFormat]:
    own = subject.prompt_format
    out = [PromptFormat(template=t) for t in ALTERNATIVES]
    if getattr(subject.tokenizer, "chat_template", None):
        out.append(PromptFormat(chat=True))
    return [f for f in out if f != own]


def check_format(run: AuditRun) -> FormatCheck | None:
    """Score the base model under the audit's prompt format; stop (or warn, with ``force``) when it fails.

    Items with their own ``template`` keep it in every format tried.

    Returns:
        The :class:`FormatCheck`, or ``None`` when ``min_base_accuracy`` is 0.

    Raises:
        PromptFormatError: The base model answers fewer than ``min_base_accuracy`` of the first
            :data:`ITEMS_CHECKED` forget or retain items right, and ``force`` is off. The message gives
            the figures and those of the alternative formats.
    """
    cfg = run.config
    if cfg.min_base_accuracy <= 0:
        return None
    base = run.models.base
    forget, retain = run.forget[:ITEMS_CHECKED], run.retain[:ITEMS_CHECKED]
    if cfg.progress:
        print(
            f"checking the prompt format: the base model answers {len(forget)} forget and {len(retain)} retain items",
            file=sys.stderr,
            flush=True,
        )

    def score(subject: Subject) -> tuple[float, float]:
        return tuple(  # type: ignore[return-value]
            _accuracy(subject, items, run.max_new_tokens, cfg.batch_size) for items in (forget, retain)
        )

    f_acc, r_acc = score(base)
    check = FormatCheck(f_acc, r_acc, len(forget), len(retain), cfg.min_base_accuracy)
    if check.passed:
        logger.info("prompt format check passed: base accuracy forget %.2f, retain %.2f", f_acc, r_acc)
        return check
    alts = [(_label(fmt), *score(base.with_format(fmt))) for fmt in _alternatives(base)]
    check = FormatCheck(f_acc, r_acc, len(forget), len(retain), cfg.min_base_accuracy, alts)
    better = [f"{label}: {fa:.0%} / {ra:.0%}" for label, fa, ra in sorted(alts, key=lambda a: -min(a[1], a[2]))]
    message = (
        f"the base model answers only {f_acc:.0%} of the first {len(forget)} forget items and {r_acc:.0%} of the "
        f"first {len(retain)} retain items right (lenient match) under {_label(base.prompt_format)}, below "
        f"min_base_accuracy={cfg.min_base_accuracy:g}: the audit would draw its conclusions from prompts the model "
        f"does not understand. Other formats (forget / retain): {'; '.join(better) or 'none to try'}"
    )
    fix = (
        "give the format the model was trained with (--template, --answer-sep, --chat-template, --system-prompt), "
        "or --force to audit anyway (--min-base-accuracy 0 turns the check off)"
    )
    if cfg.force:
        logger.warning("%s; %s", message, fix)
        print(f"warning: {message}", file=sys.stderr, flush=True)
        return check
    raise PromptFormatError(message, source="prompt format check", fix=fix)
