"""The destructive rate: how far unlearning moved the attribution on prompts it should not touch.

Destructive rate (:func:`destructive_rate`; unPact's finding 3, formula not published)
    On retain prompts, attribute the gold answer on the base and the unlearned model and
    normalise positive word contributions to shares. Per item the destructive rate is the total
    variation distance ``0.5 * sum_w |share_after(w) - share_before(w)|`` (0 = attention pattern
    intact, 1 = entirely moved), split into the part on function words and on content words
    (the two parts add up to it). Report it with the retain accuracy drop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unpact.scoring import _r6

__all__ = ["DestructiveRate", "destructive_rate", "attention_shift"]


@dataclass(frozen=True)
class DestructiveRate:
    """How far unlearning moved the attribution mass on prompts it should not touch.

    Attributes:
        rate: Mean total-variation distance between before/after word shares (0..1).
        function_part: Mean part of it on function words.
        content_part: Mean part on content words (``function_part + content_part == rate``).
        n: Items.
        per_item: ``(n,)`` per-item distances.
    """

    rate: float
    function_part: float
    content_part: float
    n: int
    per_item: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (6 decimals; ``per_item`` is not included)."""
        return {
            "rate": _r6(self.rate),
            "function_part": _r6(self.function_part),
            "content_part": _r6(self.content_part),
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DestructiveRate:
        """Inverse of :meth:`to_dict` (``per_item`` comes back empty)."""
        f = lambda x: float("nan") if x is None else float(x)
        return cls(f(d["rate"]), f(d["function_part"]), f(d["content_part"]), int(d["n"]), np.zeros(0))


def destructive_rate(before: Sequence[Any], after: Sequence[Any]) -> DestructiveRate:
    """Destructive rate from paired attributions (objects with ``.words`` and ``.word_scores``).

    Args:
        before: Base model attributions on retain items.
        after: Unlearned model attributions on the same items, same order.

    Returns:
        The :class:`DestructiveRate`.

    Raises:
        ValueError: If the lists differ in length or an item's words differ.
    """
    from unpact.keytokens import is_function_word, positive_shares

    if len(before) != len(after):
        raise ValueError(f"{len(before)} base attributions but {len(after)} unlearned ones; pair them item by item")
    per, fparts, cparts = [], [], []
    for b, a in zip(before, after):
        if list(b.words) != list(a.words):
            raise ValueError(
                "paired attributions split the prompt into different words; use the same prompt and tokenizer"
            )
        d = np.abs(positive_shares(a.word_scores) - positive_shares(b.word_scores))
        fw = np.array([is_function_word(w) for w in b.words], dtype=bool)
        per.append(0.5 * d.sum())
        fparts.append(0.5 * d[fw].sum())
        cparts.append(0.5 * d[~fw].sum())
    if not per:
        return DestructiveRate(float("nan"), float("nan"), float("nan"), 0, np.zeros(0))
    return DestructiveRate(
        float(np.mean(per)), float(np.mean(fparts)), float(np.mean(cparts)), len(per), np.asarray(per, dtype=np.float64)
    )


def attention_shift(before: Sequence[Any], after: Sequence[Any], keywords: Sequence[Sequence[str]]) -> float:
    """Mean drop of the key words' share from ``before`` to ``after`` (unPact's finding 1 on forget items).

    Returns:
        Mean over items of ``sum share_before(key) - sum share_after(key)`` (positive = focus lost);
        ``nan`` for no items.
    """
    from unpact.keytokens import positive_shares

    drops = []
    for b, a, kws in zip(before, after, keywords):
        ks = {k.lower() for k in kws}
        m = np.array([w.strip().lower() in ks for w in b.words], dtype=bool)
        drops.append(positive_shares(b.word_scores)[m].sum() - positive_shares(a.word_scores)[m].sum())
    return float(np.mean(drops)) if drops else float("nan")
