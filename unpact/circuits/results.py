"""Result objects of the circuit tracer: edge scores, circuits, faithfulness and circuit diffs.

:class:`EdgeScores` and :class:`CircuitDiff` save and load through :class:`~unpact._result.SavedResult`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unpact._result import SavedResult
from unpact.data import Example
from unpact.errors import InputError, check_count
from unpact.provenance import Provenance

logger = logging.getLogger(__name__)

__all__ = ["EdgeScores", "Circuit", "Faithfulness", "CircuitDiff", "circuit_diff", "mean_scores", "top_k_mask"]


def _example_to_dict(ex: Example) -> dict[str, Any]:
    return {
        "id": ex.id,
        "prompt": ex.prompt,
        "answer": ex.answer,
        "subject": ex.subject,
        "keywords": list(ex.keywords),
        "meta": dict(ex.meta),
    }


def top_k_mask(scores: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` valid edges with the largest ``|score|``, ties broken by position (row-major).

    Args:
        scores: ``(n_up, n_down)`` edge scores.
        valid: ``(n_up, n_down)`` bool, the edges that exist.
        k: Number of edges (at most the number of valid edges are returned).

    Returns:
        ``(n_up, n_down)`` bool mask.
    """
    flat = np.where(valid, np.abs(scores), -np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[: min(k, int(valid.sum()))]
    mask = np.zeros(flat.shape, dtype=bool)
    mask[order] = True
    return mask.reshape(valid.shape)


def mean_scores(scores: Sequence[EdgeScores]) -> np.ndarray:
    """Mean edge scores over several examples of the same graph (how a ranking is built from a scoring set).

    Args:
        scores: :class:`EdgeScores` of several examples, one model graph, one metric.

    Returns:
        ``(n_up, n_down)`` float64 mean of ``scores[i].scores`` (0 where no edge exists).

    Raises:
        InputError: No scores, or scores of different graphs or metrics.
    """
    if len(scores) == 0:
        raise InputError("no EdgeScores to average", source="mean_scores", fix="score at least one example")
    first = scores[0]
    for s in scores[1:]:
        if s.upstream != first.upstream or s.downstream != first.downstream:
            raise InputError(
                f"example {s.example.id!r} was scored on another graph than {first.example.id!r}",
                source="mean_scores",
                fix="average scores of one model architecture and size",
            )
        if s.metric != first.metric:
            raise InputError(
                f"example {s.example.id!r} uses metric {s.metric!r}, {first.example.id!r} uses {first.metric!r}",
                source="mean_scores",
                fix="score every example with the same metric",
            )
    return np.mean(np.stack([s.scores.astype(np.float64) for s in scores]), axis=0)


@dataclass
class EdgeScores(SavedResult):
    """Edge scores of one example's graph (see :mod:`unpact.circuits`).

    ``scores[u, v]`` estimates ``metric(u -> v patched to corrupt) - metric(clean)``: negative
    means the edge carries the clean behaviour (corrupting it lowers the metric). Rank edges by
    ``abs(score)``.

    Attributes:
        upstream: ``n_up`` upstream node names (``embed``, ``a{L}.h{H}``, ``m{L}``).
        downstream: ``n_down`` downstream node names (``a{L}``, ``m{L}``, ``logits``).
        scores: ``(n_up, n_down)`` float32 edge scores (0 where no edge exists).
        valid: ``(n_up, n_down)`` bool, True where the edge exists.
        position_scores: ``(seq, n_up, n_down)`` the score split by the position of the residual
            stream the edge carries (``scores == position_scores.sum(0)``), or ``None``
            (exact patching).
        metric: ``"logprob"`` or ``"logit_diff"``.
        metric_clean: Metric on the clean input.
        metric_corrupt: Metric with every edge patched (the corrupt input; under mean ablation,
            every node at its mean).
        method: ``"eap"``, ``"eap-ig"`` or ``"exact"``.
        corruption: ``"tokens"``, ``"prompt"`` or ``"mean"``.
        example: The clean example.
        corrupt_prompt: The corrupt prompt text, if any.
        tokens: ``seq`` decoded tokens of the clean sequence (prompt + answer).
        input_ids: ``(seq,)`` clean ids.
        corrupt_ids: ``(seq,)`` corrupt ids.
        answer_span: ``(start, stop)`` of the answer tokens.
        key_positions: Positions of the subject / key tokens in the prompt.
        corrupt_token: First corrupt-answer token for ``logit_diff``, else -1.
        seconds: Wall-clock time of the computation.
        provenance: Model, weights hash, method and arguments.
    """

    upstream: list[str]
    downstream: list[str]
    scores: np.ndarray
    valid: np.ndarray
    position_scores: np.ndarray | None
    metric: str
    metric_clean: float
    metric_corrupt: float
    method: str
    corruption: str
    example: Example
    corrupt_prompt: str | None
    tokens: list[str]
    input_ids: np.ndarray
    corrupt_ids: np.ndarray
    answer_span: tuple[int, int]
    key_positions: np.ndarray
    corrupt_token: int
    seconds: float
    provenance: Provenance

    def __post_init__(self) -> None:
        n_up, n_down = len(self.upstream), len(self.downstream)
        if self.scores.shape != (n_up, n_down) or self.valid.shape != (n_up, n_down):
            raise ValueError(f"scores/valid must be ({n_up}, {n_down}); got {self.scores.shape}, {self.valid.shape}")
        if self.position_scores is not None and self.position_scores.shape[1:] != (n_up, n_down):
            raise ValueError(f"position_scores must be (seq, {n_up}, {n_down}); got {self.position_scores.shape}")

    @property
    def n_edges(self) -> int:
        """Number of edges in the graph."""
        return int(self.valid.sum())

    def edge_list(self, mask: np.ndarray | None = None) -> list[tuple[str, str, float]]:
        """``(upstream, downstream, score)`` of the edges in ``mask`` (default: all), by ``|score|`` descending."""
        m = self.valid if mask is None else (mask & self.valid)
        us, vs = np.nonzero(m)
        order = np.argsort(-np.abs(self.scores[us, vs]), kind="stable")
        return [(self.upstream[us[i]], self.downstream[vs[i]], float(self.scores[us[i], vs[i]])) for i in order]

    def top_k(self, k: int) -> Circuit:
        """The circuit of the ``k`` edges with the largest ``|score|`` (ties broken by position)."""
        k = check_count("k", k, where="EdgeScores.top_k")
        return Circuit(self, top_k_mask(self.scores, self.valid, k))

    def threshold(self, tau: float) -> Circuit:
        """The circuit of the edges with ``|score| >= tau``."""
        return Circuit(self, self.valid & (np.abs(self.scores) >= tau))

    def key_position_scores(self) -> np.ndarray:
        """``(n_up, n_down)`` part of each edge's score carried at the key-token positions."""
        if self.position_scores is None:
            raise InputError(
                "these scores have no per-position split (exact patching)",
                source="key_position_scores",
                fix="score the edges with EAP or EAP-IG",
            )
        if self.key_positions.size == 0:
            return np.zeros_like(self.scores)
        return self.position_scores[self.key_positions].sum(0)

    def _repr_html_(self) -> str:
        """Jupyter rendering: metrics and the 15 strongest edges (escaped)."""
        from unpact._html import result_html, table_html

        rows = [{"from": u, "to": v, "score": s} for u, v, s in self.edge_list()[:15]]
        fields = {
            "method": self.method,
            "metric": self.metric,
            "clean": self.metric_clean,
            "corrupt": self.metric_corrupt,
            "edges": self.n_edges,
            "model": self.provenance.model,
        }
        return result_html(f"Edge scores of example {self.example.id}", fields, table_html(rows))

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        """JSON-ready summary: metrics, the ``top`` edges, provenance."""
        return {
            "method": self.method,
            "metric": self.metric,
            "corruption": self.corruption,
            "metric_clean": self.metric_clean,
            "metric_corrupt": self.metric_corrupt,
            "example": _example_to_dict(self.example),
            "corrupt_prompt": self.corrupt_prompt,
            "n_nodes": {"upstream": len(self.upstream), "downstream": len(self.downstream)},
            "n_edges": self.n_edges,
            "seconds": self.seconds,
            "key_tokens": [self.tokens[i] for i in self.key_positions],
            "top_edges": [{"from": u, "to": v, "score": s} for u, v, s in self.edge_list()[:top]],
            "provenance": self.provenance.to_dict(),
        }


@dataclass
class Circuit:
    """A set of edges of one :class:`EdgeScores` graph.

    Attributes:
        scores: The scores the circuit was selected from (carries the inputs to re-run it).
        mask: ``(n_up, n_down)`` bool, True for edges in the circuit.
    """

    scores: EdgeScores
    mask: np.ndarray

    def __len__(self) -> int:
        return int((self.mask & self.scores.valid).sum())

    @property
    def edges(self) -> list[tuple[str, str]]:
        """``(upstream, downstream)`` names of the circuit's edges, by ``|score|`` descending."""
        return [(u, v) for u, v, _ in self.scores.edge_list(self.mask)]


@dataclass(frozen=True)
class Faithfulness:
    """How much of the clean-vs-corrupt metric gap a circuit keeps.

    ``share = (metric_circuit - metric_corrupt) / (metric_clean - metric_corrupt)``: 1 means the
    circuit alone (everything outside it patched to corrupt) restores the clean metric, 0 means
    it does no better than the corrupt input.
    """

    n_edges: int
    metric_circuit: float
    metric_clean: float
    metric_corrupt: float

    @property
    def share(self) -> float:
        """Share of the metric gap kept (``nan`` if clean and corrupt metrics are equal)."""
        gap = self.metric_clean - self.metric_corrupt
        return (self.metric_circuit - self.metric_corrupt) / gap if abs(gap) > 1e-9 else math.nan


@dataclass
class CircuitDiff(SavedResult):
    """Base vs unlearned circuit of the same example and graph.

    Attributes:
        upstream, downstream: Node names (same for both models).
        k: Size of the top-k circuits compared.
        scores_a, scores_b: ``(n_up, n_down)`` edge scores of the base (a) and unlearned (b) model.
        key_scores_a, key_scores_b: ``(n_up, n_down)`` part of each edge's score carried at the
            key-token positions.
        top_a, top_b: ``(n_up, n_down)`` bool top-k circuits.
        metric_clean_a, metric_clean_b: Clean metric of each model.
        provenance_a, provenance_b: Provenance of the two scores.
    """

    upstream: list[str]
    downstream: list[str]
    k: int
    scores_a: np.ndarray
    scores_b: np.ndarray
    key_scores_a: np.ndarray
    key_scores_b: np.ndarray
    top_a: np.ndarray
    top_b: np.ndarray
    metric_clean_a: float
    metric_clean_b: float
    provenance_a: Provenance
    provenance_b: Provenance

    def _edges(self, mask: np.ndarray) -> list[tuple[str, str, float, float]]:
        us, vs = np.nonzero(mask)
        rows = [
            (self.upstream[u], self.downstream[v], float(self.scores_a[u, v]), float(self.scores_b[u, v]))
            for u, v in zip(us, vs)
        ]
        return sorted(rows, key=lambda r: -abs(r[3] - r[2]))

    @property
    def lost(self) -> list[tuple[str, str, float, float]]:
        """Edges in the base top-k but not in the unlearned top-k: ``(from, to, score_a, score_b)``."""
        return self._edges(self.top_a & ~self.top_b)

    @property
    def gained(self) -> list[tuple[str, str, float, float]]:
        """Edges in the unlearned top-k but not in the base top-k."""
        return self._edges(self.top_b & ~self.top_a)

    @property
    def reweighted(self) -> list[tuple[str, str, float, float]]:
        """Edges in both top-k circuits, by absolute score change descending."""
        return self._edges(self.top_a & self.top_b)

    @property
    def jaccard(self) -> float:
        """``|top_a & top_b| / |top_a | top_b|`` (1.0 when both are empty)."""
        union = int((self.top_a | self.top_b).sum())
        return float((self.top_a & self.top_b).sum()) / union if union else 1.0

    @property
    def key_total_a(self) -> float:
        """Sum of ``|score|`` carried at the key-token positions, base model."""
        return float(np.abs(self.key_scores_a).sum())

    @property
    def key_total_b(self) -> float:
        """Sum of ``|score|`` carried at the key-token positions, unlearned model."""
        return float(np.abs(self.key_scores_b).sum())

    @property
    def key_share_a(self) -> float:
        """Share of all ``|score|`` mass carried at the key-token positions (base)."""
        total = float(np.abs(self.scores_a).sum())
        return self.key_total_a / total if total else math.nan

    @property
    def key_share_b(self) -> float:
        """Share of all ``|score|`` mass carried at the key-token positions (unlearned)."""
        total = float(np.abs(self.scores_b).sum())
        return self.key_total_b / total if total else math.nan

    def key_edges_changed(self, n: int = 10) -> list[tuple[str, str, float, float]]:
        """The ``n`` edges leaving the key-token positions whose score changed most: ``(from, to, a, b)``."""
        d = np.abs(self.key_scores_b - self.key_scores_a)
        flat = np.argsort(-d.ravel(), kind="stable")[:n]
        us, vs = np.unravel_index(flat, d.shape)
        return [
            (self.upstream[u], self.downstream[v], float(self.key_scores_a[u, v]), float(self.key_scores_b[u, v]))
            for u, v in zip(us, vs)
        ]

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """JSON-ready summary."""

        def rows(edges: list[tuple[str, str, float, float]]) -> list[dict[str, Any]]:
            return [{"from": u, "to": v, "a": a, "b": b} for u, v, a, b in edges[:top]]

        return {
            "k": self.k,
            "jaccard": self.jaccard,
            "n_lost": len(self.lost),
            "n_gained": len(self.gained),
            "lost": rows(self.lost),
            "gained": rows(self.gained),
            "reweighted": rows(self.reweighted),
            "key_total_a": self.key_total_a,
            "key_total_b": self.key_total_b,
            "key_share_a": self.key_share_a,
            "key_share_b": self.key_share_b,
            "key_edges_changed": rows(self.key_edges_changed(top)),
            "metric_clean_a": self.metric_clean_a,
            "metric_clean_b": self.metric_clean_b,
            "provenance_a": self.provenance_a.to_dict(),
            "provenance_b": self.provenance_b.to_dict(),
        }


def circuit_diff(base: EdgeScores, unlearned: EdgeScores, *, k: int = 20) -> CircuitDiff:
    """Compare the circuits of the same example on a base and an unlearned model.

    Args:
        base: Edge scores on the base model.
        unlearned: Edge scores of the same example (same corruption) on the unlearned model.
        k: Size of the top-k circuits compared.

    Returns:
        The :class:`CircuitDiff` (edges lost / gained / re-weighted, Jaccard of the top-k circuits,
        change in the score carried at the key-token positions).

    Raises:
        InputError: If the graphs or the inputs differ.
    """
    if base.upstream != unlearned.upstream or base.downstream != unlearned.downstream:
        raise InputError("the two EdgeScores have different graphs; compare models of the same architecture and size")
    if not np.array_equal(base.input_ids, unlearned.input_ids) or not np.array_equal(
        base.corrupt_ids, unlearned.corrupt_ids
    ):
        raise InputError(
            "the two EdgeScores were computed on different clean/corrupt inputs; run both on the same example "
            "with the same corruption (e.g. pass the same corrupt prompt)"
        )
    if base.metric != unlearned.metric:
        raise InputError(f"different metrics ({base.metric} vs {unlearned.metric}); use the same metric for both")
    has_pos = base.position_scores is not None and unlearned.position_scores is not None
    zeros = np.zeros_like(base.scores)
    return CircuitDiff(
        upstream=list(base.upstream),
        downstream=list(base.downstream),
        k=k,
        scores_a=base.scores,
        scores_b=unlearned.scores,
        key_scores_a=base.key_position_scores() if has_pos else zeros,
        key_scores_b=unlearned.key_position_scores() if has_pos else zeros,
        top_a=base.top_k(k).mask,
        top_b=unlearned.top_k(k).mask,
        metric_clean_a=base.metric_clean,
        metric_clean_b=unlearned.metric_clean,
        provenance_a=base.provenance,
        provenance_b=unlearned.provenance,
    )
