"""Where an edge-score estimate (EAP, EAP-IG) disagrees with exact patching, split by edge type.

An edge's type is its upstream kind (``embed``, ``head``, ``mlp``) and its downstream kind
(``attn``: a layer's attention input, ``mlp``, ``logits``), e.g. ``head->attn``. For each type,
pooled over the examples given, :func:`edge_type_errors` reports

* ``rel_error = sum |estimate - exact| / sum |exact|`` over the type's edges (its mean absolute
  error normalised by the type's own exact scale; 0 is perfect, 1 is an error as large as the
  effects themselves, e.g. an estimate of 0; it explodes for types whose exact effects are ~0);
* ``scaled_error = mean |estimate - exact|`` over the type's edges divided by ``mean |exact|``
  over *all* edges (the error in units of the graph's typical edge effect, comparable across types);
* ``magnitude_ratio = sum |estimate| / sum |exact|``: whether the estimate is too small (an
  estimate near 0 has ``rel_error`` near 1 and a ratio near 0) or too large;
* ``spearman``: rank correlation of estimate and exact scores of the edges of that type;
* ``error_share`` / ``exact_share``: the type's share of the total absolute error and of the
  total exact effect ``sum |exact|`` (an estimate whose error concentrates on one type has
  ``error_share`` far above ``exact_share`` there).

Example:
    >>> errs = edge_type_errors(eap_scores, exact_scores)   # lists of EdgeScores, same examples
    >>> {e.edge_type: round(e.rel_error, 2) for e in errs}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from unpact.circuits.results import EdgeScores
from unpact.errors import InputError

__all__ = ["EdgeTypeError", "edge_type", "edge_type_errors", "spearman"]


def edge_type(upstream: str, downstream: str) -> str:
    """``"embed->attn"``, ``"head->mlp"``, ``"mlp->logits"``... of one edge given its node names."""
    up = "embed" if upstream == "embed" else ("head" if ".h" in upstream else "mlp")
    down = "logits" if downstream == "logits" else ("attn" if downstream.startswith("a") else "mlp")
    return f"{up}->{down}"


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks ``0..n-1`` with ties given their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two ``(n,)`` arrays (``nan`` for ``n < 3`` or a constant array)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if len(a) != len(b):
        raise InputError(f"spearman needs arrays of one length, got {len(a)} and {len(b)}")
    if len(a) < 3:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass(frozen=True)
class EdgeTypeError:
    """Disagreement of an estimate with exact patching on the edges of one type (see the module docstring).

    Attributes:
        edge_type: ``"head->attn"`` etc., or ``"all"``.
        n_edges: Edges of this type in one graph.
        n_values: Edge scores compared (``n_edges`` times the number of examples).
        rel_error: ``sum |estimate - exact| / sum |exact|`` over the type's edges.
        scaled_error: Mean ``|estimate - exact|`` of the type over mean ``|exact|`` of all edges.
        magnitude_ratio: ``sum |estimate| / sum |exact|`` over the type's edges.
        spearman: Rank correlation over the pooled values.
        error_share: Share of the total absolute error on this type.
        exact_share: Share of the total ``sum |exact|`` on this type.
        mean_abs_exact: Mean ``|exact|`` of the type (its scale, metric units).
    """

    edge_type: str
    n_edges: int
    n_values: int
    rel_error: float
    scaled_error: float
    magnitude_ratio: float
    spearman: float
    error_share: float
    exact_share: float
    mean_abs_exact: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _pairs(
    estimate: EdgeScores | Sequence[EdgeScores], exact: EdgeScores | Sequence[EdgeScores]
) -> list[tuple[EdgeScores, EdgeScores]]:
    est = [estimate] if isinstance(estimate, EdgeScores) else list(estimate)
    ref = [exact] if isinstance(exact, EdgeScores) else list(exact)
    if not est or len(est) != len(ref):
        raise InputError(
            f"{len(est)} estimates for {len(ref)} exact scores",
            source="edge_type_errors",
            fix="pass one exact EdgeScores per estimate, for the same examples in the same order",
        )
    for e, x in zip(est, ref):
        if e.upstream != x.upstream or e.downstream != x.downstream:
            raise InputError("estimate and exact scores have different graphs", source="edge_type_errors")
        if not np.array_equal(e.input_ids, x.input_ids) or not np.array_equal(e.corrupt_ids, x.corrupt_ids):
            raise InputError(
                f"example {e.example.id!r}: the estimate and the exact scores are of different clean/corrupt inputs",
                source="edge_type_errors",
                fix="compute exact scores with exact_edge_patching(subject, estimate) for each estimate",
            )
    return list(zip(est, ref))


def edge_type_errors(
    estimate: EdgeScores | Sequence[EdgeScores], exact: EdgeScores | Sequence[EdgeScores]
) -> list[EdgeTypeError]:
    """Per-edge-type error of ``estimate`` against ``exact``, pooled over examples, plus an ``"all"`` row.

    Args:
        estimate: EAP / EAP-IG scores of one or more examples.
        exact: :func:`~unpact.circuits.exact_edge_patching` scores of the same examples, same order.

    Returns:
        One :class:`EdgeTypeError` per edge type present (in graph order), then ``"all"``.

    Raises:
        InputError: Different numbers of estimates and exact scores, or mismatched graphs/inputs.
    """
    pairs = _pairs(estimate, exact)
    first = pairs[0][0]
    us, vs = np.nonzero(first.valid)
    types = [edge_type(first.upstream[u], first.downstream[v]) for u, v in zip(us, vs)]
    est = np.stack([e.scores[us, vs].astype(np.float64) for e, _ in pairs])  # (n_examples, n_edges)
    ref = np.stack([x.scores[us, vs].astype(np.float64) for _, x in pairs])
    err = np.abs(est - ref)
    total_err, total_ref = float(err.sum()), float(np.abs(ref).sum())
    mean_ref = float(np.abs(ref).mean())
    order = list(dict.fromkeys(types))
    rows = []
    for name in [*order, "all"]:
        sel = np.ones(len(types), dtype=bool) if name == "all" else np.asarray([t == name for t in types])
        e, x, d = est[:, sel].ravel(), ref[:, sel].ravel(), err[:, sel]
        scale = float(np.abs(x).sum())
        rows.append(
            EdgeTypeError(
                edge_type=name,
                n_edges=int(sel.sum()),
                n_values=int(x.size),
                rel_error=float(d.sum()) / scale if scale > 0 else math.nan,
                scaled_error=float(d.mean()) / mean_ref if mean_ref > 0 else math.nan,
                magnitude_ratio=float(np.abs(e).sum()) / scale if scale > 0 else math.nan,
                spearman=spearman(e, x),
                error_share=float(d.sum()) / total_err if total_err > 0 else math.nan,
                exact_share=scale / total_ref if total_ref > 0 else math.nan,
                mean_abs_exact=float(np.abs(x).mean()),
            )
        )
    return rows
