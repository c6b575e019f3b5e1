"""Lens recovery: is the forgotten answer decodable at some layer, and erased only after it?

Many answers start with a generic token (``" The"``, ``" 19"``) that says nothing about *which* answer the
model holds. Per item, the **first distinguishing token** of the gold answer is the first answer token at
which the gold answer's token prefix differs from every other value of its attribute (``meta["attribute"]``;
all items when absent): before it, the prefix is shared with some other value; from it on, it is the
gold answer's alone. When the gold answer is a token prefix of another value, no token distinguishes it
and its last token is used.

From a saved lens trajectory (:class:`unpact.lens.LensTrajectory`, logit or tuned lens) the rank of that
token at the position predicting it (the gold prefix teacher-forced) is read at every layer;
``best_rank`` is its minimum over the layers. The audit compares, on each model's forgotten items, "top-1
at some layer" for the model and for the retain-only model (the same maximum over layers: a control with
the same number of chances).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from unpact.data import Example

__all__ = ["distinguishing_index", "layer_ranks"]


def distinguishing_index(items: Sequence[Example], answer_ids: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """Item id -> index (within its answer's tokens) of the gold answer's first distinguishing token.

    Args:
        items: The items (their attribute groups the candidate answers).
        answer_ids: Answer text -> its token ids as the model reads it after the prompt (every item's
            answer must be there; the candidates are the answers of ``items`` only, so pass all the
            items whose answers should count, e.g. forget and retain).

    Returns:
        ``{item id: k}``, ``0 <= k < len(answer_ids[item.answer])``.
    """
    by_attr: dict[str, set[str]] = {}
    for e in items:
        by_attr.setdefault(_attribute(e), set()).add(e.answer)
    out: dict[str, int] = {}
    for e in items:
        gold = list(answer_ids[e.answer])
        others = [list(answer_ids[a]) for a in by_attr[_attribute(e)] if a != e.answer and a in answer_ids]
        k = 0
        while k < len(gold) - 1 and any(o[: k + 1] == gold[: k + 1] for o in others):
            k += 1
        out[e.id] = k
    return out


def _attribute(e: Example) -> str:
    return str(e.meta.get("attribute", "")) if isinstance(e.meta, Mapping) else ""


class _Trajectory(Protocol):
    """What :func:`layer_ranks` reads of a :class:`unpact.lens.LensTrajectory`."""

    answer_span: tuple[int, int]
    rank: np.ndarray


def layer_ranks(trajectory: _Trajectory, k: int) -> np.ndarray:
    """``(L,)`` rank (0 = top-1) per layer of the answer's ``k``-th token, at the position that predicts it.

    Args:
        trajectory: A :class:`unpact.lens.LensTrajectory` of the item (gold answer teacher-forced).
        k: Index of the token within the answer (:func:`distinguishing_index`).
    """
    pos = trajectory.answer_span[0] - 1 + k
    return np.asarray(trajectory.rank[:, pos])
