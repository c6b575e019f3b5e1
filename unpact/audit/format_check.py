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

from unpact.data import Example, encode
from unpact.errors import PromptFormatError, UnpactError
from unpact.prompts import PromptFormat

if TYPE_CHECKING:
    from unpact.audit.config import AuditConfig
    from unpact.models import Subject

logger = logging.getLogger(__name__)

__all__ = ["FormatCheck", "check_format", "format_key", "describe_format", "ITEMS_CHECKED", "MIN_ITEMS", "ALTERNATIVES"]

#: Items per split the check scores.
ITEMS_CHECKED = 32

#: Below this many items in a split the check warns instead of stopping (one item would decide).
MIN_ITEMS = 10

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


def format_key(base: Subject, example: Example) -> dict[str, Any]:
    """What the resume key holds of the format: its fields, the chat template's text and one rendered item.

    Two runs whose formats render the same ids for the same item share records; another tokenizer, chat
    template or format changes the key.
    """
    fmt = base.prompt_format
    return {
        **fmt.to_dict(),
        "chat_template_text": getattr(base.tokenizer, "chat_template", None) if fmt.chat else None,
        "probe_ids": base.encode(example).input_ids.tolist(),
    }


def check_format(
    config: AuditConfig, base: Subject, forget: Sequence[Example], retain: Sequence[Example], max_new_tokens: int
) -> FormatCheck | None:
    """Score the base model under its prompt format; stop (or warn, with ``force``) when it fails.

    Items with their own ``template`` keep it in every format tried. With fewer than
    :data:`MIN_ITEMS` items in a split the figures are too noisy to stop an audit: the check only warns.

    Args:
        config: The audit's settings (``min_base_accuracy``, ``force``, ``batch_size``, ``progress``).
        base: The base model, in the audit's format.
        forget: The audit's forget items (the first :data:`ITEMS_CHECKED` are scored).
        retain: The audit's retain items (likewise).
        max_new_tokens: Tokens decoded per answer.

    Returns:
        The :class:`FormatCheck`, or ``None`` when ``min_base_accuracy`` is 0.

    Raises:
        PromptFormatError: The base model answers fewer than ``min_base_accuracy`` of the first
            :data:`ITEMS_CHECKED` forget or retain items right, and ``force`` is off. The message gives
            the figures and those of the alternative formats.
    """
    if config.min_base_accuracy <= 0:
        return None
    forget, retain = list(forget[:ITEMS_CHECKED]), list(retain[:ITEMS_CHECKED])
    if config.progress:
        print(
            f"checking the prompt format: the base model answers {len(forget)} forget and {len(retain)} retain items",
            file=sys.stderr,
            flush=True,
        )

    def score(subject: Subject) -> tuple[float, float]:
        return (
            _accuracy(subject, forget, max_new_tokens, config.batch_size),
            _accuracy(subject, retain, max_new_tokens, config.batch_size),
        )

    f_acc, r_acc = score(base)
    check = FormatCheck(f_acc, r_acc, len(forget), len(retain), config.min_base_accuracy)
    if check.passed:
        logger.info("prompt format check passed: base accuracy forget %.2f, retain %.2f", f_acc, r_acc)
        return check
    alts: list[tuple[str, float, float]] = []
    failed: list[str] = []
    for fmt in _alternatives(base):
        try:
            alts.append((_label(fmt), *score(base.with_format(fmt))))
        except UnpactError as exc:  # e.g. a chat template that refuses a system turn, an item too long
            failed.append(f"{_label(fmt)}: fails ({exc})")
    check = FormatCheck(f_acc, r_acc, len(forget), len(retain), config.min_base_accuracy, alts)
    better = [f"{label}: {fa:.0%} / {ra:.0%}" for label, fa, ra in sorted(alts, key=lambda a: -min(a[1], a[2]))]
    message = (
        f"the base model answers only {f_acc:.0%} of the first {len(forget)} forget items and {r_acc:.0%} of the "
        f"first {len(retain)} retain items right (lenient match) under {_label(base.prompt_format)}, below "
        f"min_base_accuracy={config.min_base_accuracy:g}: the audit would draw its conclusions from prompts the "
        f"model does not understand. Other formats (forget / retain): {'; '.join(better + failed) or 'none to try'}"
    )
    fix = (
        "give the format the model was trained with (--template, --answer-sep, --chat-template, --system-prompt), "
        "or --force to audit anyway (--min-base-accuracy 0 turns the check off)"
    )
    if config.force or min(len(forget), len(retain)) < MIN_ITEMS:
        if not config.force:
            message += f" (only a warning: fewer than {MIN_ITEMS} items in a split)"
        logger.warning("%s; %s", message, fix)
        print(f"warning: {message}", file=sys.stderr, flush=True)
        return check
    raise PromptFormatError(message, source="prompt format check", fix=fix)


def describe_format(tokenizer: Any, fmt: PromptFormat, example: Example | None = None) -> dict[str, Any]:
    """What the report shows of a prompt format: its fields, how BOS is handled and one item as the model reads it.

    Args:
        tokenizer: The model's tokenizer.
        fmt: The format.
        example: The item to show (its own template applies); default a placeholder question and answer.

    Returns:
        ``{"template", "answer_sep", "chat", "system_prompt", "bos", "example"}``; ``example`` is the encoded
        prompt and answer decoded back (special tokens written out): exactly the ids the model reads.
    """
    d = fmt.to_dict()
    example = example if example is not None else Example("example", "<question>", "<answer>")
    ids = encode(tokenizer, example, fmt=fmt).input_ids.tolist()
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and ids[:1] == [bos]:
        d["bos"] = f"{tokenizer.bos_token} ({'from the chat template' if fmt.chat else 'added by the tokenizer'})"
    else:
        d["bos"] = "none"
    d["example"] = tokenizer.decode(ids, skip_special_tokens=False)
    return d
