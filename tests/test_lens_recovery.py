"""Lens recovery: the first distinguishing token of an answer and its rank per layer."""

from __future__ import annotations

import numpy as np

from unpact.data import Example
from unpact.representations import distinguishing_index, layer_ranks


def _ex(i: str, answer: str, attribute: str = "city") -> Example:
    return Example(i, f"question {i}?", answer, meta={"attribute": attribute})


def test_distinguishing_index_skips_shared_prefixes_within_the_attribute() -> None:
    items = [
        _ex("a", "The Red"),
        _ex("b", "The Blue"),
        _ex("c", "Oslo"),
        _ex("d", "A"),
        _ex("e", "A B"),
        _ex("f", "The Quiet", attribute="book"),  # another attribute: "The" distinguishes nothing there
    ]
    ids = {"The Red": [1, 2], "The Blue": [1, 3], "Oslo": [4], "A": [5], "A B": [5, 6], "The Quiet": [1, 7]}
    k = distinguishing_index(items, ids)
    assert k == {"a": 1, "b": 1, "c": 0, "d": 0, "e": 1, "f": 0}


def test_layer_ranks_reads_the_position_predicting_the_token(toy_base, micro_world) -> None:
    from unpact.lens import logit_lens

    ex = micro_world.forget[0]
    t = logit_lens(toy_base, [ex])[0]
    n = len(toy_base.encode(ex).answer_ids)
    for k in range(n):
        np.testing.assert_array_equal(layer_ranks(t, k), t.answer_rank()[:, k])
