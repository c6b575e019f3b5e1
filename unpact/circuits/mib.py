"""Circuit quality the way MIB measures it: faithfulness curves over edge fractions, CPR and CMD.

MIB (Mueller et al. 2025, "MIB: A Mechanistic Interpretability Benchmark", arXiv 2504.13151),
circuit-localization track, as implemented here:

* **Ranking.** Edges are ranked by ``|score|`` of a ranking averaged over a *scoring* set of
  examples (:func:`~unpact.circuits.results.mean_scores`); the circuit at fraction ``p`` is the
  top ``floor(p * n_edges)`` edges (MIB: ``int(pct * n_edges)``; ties broken by position).
* **Faithfulness** on a disjoint *evaluation* set: every edge outside the circuit carries its
  upstream node's activation on the example's own counterfactual (corrupt) input, every edge
  inside carries the activation of the patched run itself (the same :class:`~unpact.circuits._graph.Patcher`
  pass as :func:`~unpact.circuits.faithfulness`). With ``m`` the metric averaged over the
  evaluation examples::

      f(C) = (m(C) - m(empty)) / (m(N) - m(empty))

  ``m(N)``: the unpatched model on the clean inputs; ``m(empty)``: every edge patched (the empty
  circuit, which reproduces the corrupt run). The ratio is taken of the *means* over examples, as
  MIB's ``evaluate_area_under_curve`` does, not the mean of per-example ratios.
* **CPR** (higher is better) and **CMD** (lower is better, 0 ideal) are trapezoidal areas over the
  fractions ``x_1 < ... < x_n`` on a *linear* axis (what MIB's released code computes; its
  ``log_scale`` flag does not enter the trapezoid)::

      CPR = sum_i (x_{i+1} - x_i) * (f_i + f_{i+1}) / 2
      CMD = sum_i (x_{i+1} - x_i) * (|1 - f_i| + |1 - f_{i+1}|) / 2

  With MIB's fractions the axis spans ``[0.001, 1]``, so ``f = 1`` everywhere gives CPR 0.999.
* **No pruning.** MIB drops edges disconnected from the input or the logits before evaluating;
  that changes the edge count, not the metric (a node whose inputs are all patched computes its
  corrupt output anyway, one whose outputs are all patched affects nothing), and the x axis is the
  fraction before pruning in both.

Example:
    >>> from unpact.circuits import edge_attribution_patching, circuit_quality
    >>> scored = [edge_attribution_patching(s, ex, corrupt=donors, method="eap-ig") for ex in scoring]
    >>> q = circuit_quality(s, scored, held_out, corrupt=donors)
    >>> q.cpr, q.cmd, q.faithfulness
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unpact.circuits._graph import Graph
from unpact.circuits._inputs import Metric, prepare
from unpact.circuits.eap import _corrupt_outputs, _outputs, _run_plans
from unpact.circuits.results import EdgeScores, Faithfulness, mean_scores, top_k_mask
from unpact.data import Example
from unpact.errors import InputError, check_positive
from unpact.models import Subject, frozen

logger = logging.getLogger(__name__)

__all__ = ["MIB_FRACTIONS", "CircuitQuality", "circuit_quality", "mib_areas", "fraction_counts"]

MIB_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""The edge fractions of MIB's circuit-localization track."""


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) < 2:
        raise InputError(
            f"need at least two edge fractions to compute an area, got {list(fr)}",
            source="fractions",
            fix="pass e.g. unpact.circuits.MIB_FRACTIONS",
        )
    if any(not (0.0 <= f <= 1.0) for f in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
        raise InputError(
            f"edge fractions must be strictly increasing and within [0, 1], got {list(fr)}",
            source="fractions",
            fix="pass e.g. unpact.circuits.MIB_FRACTIONS",
        )
    return fr


def fraction_counts(fractions: Sequence[float], n_edges: int) -> list[int]:
    """Edges kept at each fraction: ``floor(fraction * n_edges)`` (MIB's ``int(pct * n_edges)``)."""
    return [min(n_edges, int(np.floor(f * n_edges + 1e-9))) for f in _check_fractions(fractions)]


def mib_areas(fractions: Sequence[float], faithfulness: Sequence[float]) -> tuple[float, float]:
    """CPR and CMD: trapezoidal areas of ``f`` and of ``|1 - f|`` over the fractions (linear axis).

    Args:
        fractions: ``(n,)`` strictly increasing edge fractions in ``[0, 1]``.
        faithfulness: ``(n,)`` faithfulness at each fraction.

    Returns:
        ``(CPR, CMD)`` as defined in the module docstring.
    """
    x = np.asarray(_check_fractions(fractions), dtype=np.float64)
    f = np.asarray(faithfulness, dtype=np.float64)
    if f.shape != x.shape:
        raise InputError(f"{len(f)} faithfulness values for {len(x)} fractions; give one per fraction")
    dx = np.diff(x)
    cpr = float(np.sum(dx * (f[:-1] + f[1:]) / 2))
    gap = np.abs(1.0 - f)
    cmd = float(np.sum(dx * (gap[:-1] + gap[1:]) / 2))
    return cpr, cmd


@dataclass(frozen=True)
class CircuitQuality:
    """MIB faithfulness curve, CPR and CMD of one edge ranking on held-out examples.

    Attributes:
        method: What produced the ranking (``"eap"``, ``"eap-ig"``, ``"exact"``, or given).
        fractions: ``(n_f,)`` edge fractions.
        n_kept: ``(n_f,)`` edges in the circuit at each fraction.
        n_edges: Edges in the graph.
        curve: ``n_f`` :class:`Faithfulness`, metrics averaged over the evaluation examples
            (``curve[j].share`` is MIB's ``f`` at ``fractions[j]``).
        cpr: Area under ``f`` (higher is better).
        cmd: Area under ``|1 - f|`` (lower is better, 0 ideal).
        metric_circuit: ``(n_eval, n_f)`` metric of each evaluation example with its circuit.
        metric_clean: ``(n_eval,)`` metric of the unpatched model, ``m(N)`` per example.
        metric_empty: ``(n_eval,)`` metric with every edge patched, ``m(empty)`` per example.
        eval_ids: Ids of the evaluation examples.
        scored_on: Ids of the examples the ranking was averaged over (empty if unknown).
        metric: ``"logprob"`` or ``"logit_diff"``.
        seconds: Wall-clock time of the evaluation (not of the scoring).
    """

    method: str
    fractions: tuple[float, ...]
    n_kept: tuple[int, ...]
    n_edges: int
    curve: tuple[Faithfulness, ...]
    cpr: float
    cmd: float
    metric_circuit: np.ndarray
    metric_clean: np.ndarray
    metric_empty: np.ndarray
    eval_ids: tuple[str, ...]
    scored_on: tuple[str, ...]
    metric: str
    seconds: float

    @property
    def faithfulness(self) -> np.ndarray:
        """``(n_f,)`` MIB faithfulness ``f`` at each fraction."""
        return np.asarray([c.share for c in self.curve], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (curve, areas, per-example metrics)."""
        return {
            "method": self.method,
            "metric": self.metric,
            "cpr": self.cpr,
            "cmd": self.cmd,
            "fractions": list(self.fractions),
            "n_kept": list(self.n_kept),
            "n_edges": self.n_edges,
            "faithfulness": self.faithfulness.tolist(),
            "metric_clean_mean": float(self.metric_clean.mean()),
            "metric_empty_mean": float(self.metric_empty.mean()),
            "metric_circuit": self.metric_circuit.tolist(),
            "metric_clean": self.metric_clean.tolist(),
            "metric_empty": self.metric_empty.tolist(),
            "eval_ids": list(self.eval_ids),
            "scored_on": list(self.scored_on),
            "seconds": self.seconds,
        }


def _ranking(
    graph: Graph, ranking: EdgeScores | Sequence[EdgeScores] | np.ndarray, method: str | None
) -> tuple[np.ndarray, tuple[str, ...], str, str | None]:
    """``(scores (n_up, n_down), ids scored on, method, metric or None)`` of the ranking argument."""
    if isinstance(ranking, np.ndarray):
        if ranking.shape != graph.valid.shape:
            raise InputError(
                f"a ranking array must be (n_up, n_down) = {graph.valid.shape} for this model, got {ranking.shape}",
                source="ranking",
                fix="pass EdgeScores, a list of them, or an array shaped like EdgeScores.scores",
            )
        return ranking.astype(np.float64), (), method or "given", None
    scored = [ranking] if isinstance(ranking, EdgeScores) else list(ranking)
    if not scored:
        raise InputError("the ranking is an empty list of EdgeScores", source="ranking", fix="score some examples")
    if any(not isinstance(s, EdgeScores) for s in scored):
        raise InputError(
            "the ranking must be EdgeScores, a list of EdgeScores or an (n_up, n_down) array", source="ranking"
        )
    if list(graph.upstream) != scored[0].upstream or list(graph.downstream) != scored[0].downstream:
        raise InputError(
            "the edge scores belong to a model with another graph (layers/heads)",
            source="ranking",
            fix="evaluate them on a model of the same architecture and size",
        )
    methods = sorted({s.method for s in scored})
    return mean_scores(scored), tuple(s.example.id for s in scored), method or "+".join(methods), scored[0].metric


def _corrupt_per_example(
    examples: Sequence[Example], corrupt: Sequence[Example] | Sequence[str] | str | None
) -> list[list[Example] | str]:
    """What :func:`prepare` gets for each evaluation example (donors or its own corrupt prompt)."""
    fix = (
        "MIB patches removed edges from each example's counterfactual: pass donor examples (corrupt=[...Examples], "
        "their subject swapped into each prompt) or one corrupt prompt per evaluation example (corrupt=[...str])"
    )
    if corrupt is None or isinstance(corrupt, str):
        raise InputError(f"no counterfactual inputs (corrupt={corrupt!r})", source="corrupt", fix=fix)
    items: list[object] = list(corrupt)
    donors = [c for c in items if isinstance(c, Example)]
    prompts = [c for c in items if isinstance(c, str)]
    if items and len(donors) == len(items):
        missing = [ex.id for ex in examples if not ex.subject or ex.subject not in ex.prompt]
        if missing:
            raise InputError(
                f"evaluation examples {missing[:5]} have no counterfactual: their Example.subject is missing or "
                "not in the prompt, so no donor's subject can be swapped in",
                source="examples",
                fix="set Example.subject to a string of the prompt, or pass one corrupt prompt per example",
            )
        return [list(donors) for _ in examples]
    if items and len(prompts) == len(items):
        if len(prompts) != len(examples):
            raise InputError(
                f"{len(prompts)} corrupt prompts for {len(examples)} evaluation examples",
                source="corrupt",
                fix="give exactly one corrupt prompt per evaluation example, in the same order",
            )
        return list(prompts)
    raise InputError(
        "corrupt must be a non-empty list of donor Examples or of corrupt prompts", source="corrupt", fix=fix
    )


def circuit_quality(
    subject: Subject,
    ranking: EdgeScores | Sequence[EdgeScores] | np.ndarray,
    examples: Sequence[Example],
    *,
    corrupt: Sequence[Example] | Sequence[str],
    fractions: Sequence[float] = MIB_FRACTIONS,
    metric: Metric | None = None,
    method: str | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> CircuitQuality:
    """MIB faithfulness curve, CPR and CMD of an edge ranking on held-out examples (see the module docstring).

    Args:
        subject: The model the circuits are run on.
        ranking: :class:`EdgeScores` of the scoring examples (their scores are averaged), one
            :class:`EdgeScores`, or an ``(n_up, n_down)`` array (e.g. a random baseline).
            Edges are ranked by ``|score|``.
        examples: The evaluation examples; none may be one the ranking was scored on.
        corrupt: Each evaluation example's counterfactual: donor :class:`Example` s (the
            example's subject is replaced by a donor's of the same token length, as in
            :func:`~unpact.circuits.edge_attribution_patching` with the same ``seed``) or one
            corrupt prompt per evaluation example (same token length as its clean prompt).
        fractions: Strictly increasing edge fractions in ``[0, 1]`` (default: MIB's).
        metric: ``"logprob"`` or ``"logit_diff"``; default: the scores' metric, else ``"logprob"``.
        method: Name stored in the result (default: the scores' method, or ``"given"``).
        batch_size: Patched forward passes per batch.
        seed: Order in which donors are tried.

    Returns:
        :class:`CircuitQuality` with the curve, CPR, CMD and per-example metrics.

    Raises:
        InputError: No evaluation examples, evaluation examples that were scored on, examples
            without a counterfactual (no donors or prompts, or no subject to swap), bad
            fractions, a ranking of another graph, or clean and corrupt metrics that are equal
            on average (faithfulness undefined).
        UnsupportedFeatureError: For architectures edge patching does not support.
    """
    check_positive("batch_size", batch_size, where="circuit_quality")
    fr = _check_fractions(fractions)
    examples = list(examples)
    if not examples:
        raise InputError(
            "the evaluation set is empty",
            source="examples",
            fix="pass held-out examples (not those the edges were scored on) to evaluate the circuits on",
        )
    t0 = time.perf_counter()
    graph = Graph.of(subject)
    scores, scored_on, name, scores_metric = _ranking(graph, ranking, method)
    used = sorted(set(scored_on) & {ex.id for ex in examples})
    if used:
        raise InputError(
            f"evaluation examples {used[:5]} were used to score the edges; MIB evaluates circuits on held-out examples",
            source="examples",
            fix="split the examples into a scoring set and a disjoint evaluation set",
        )
    chosen: Metric = metric or scores_metric or "logprob"  # type: ignore[assignment]
    per_example = _corrupt_per_example(examples, corrupt)
    n_edges = int(graph.valid.sum())
    counts = fraction_counts(fr, n_edges)
    uniq = sorted(set(counts) | {0})  # 0: the empty circuit, m(empty)
    masks = np.stack([top_k_mask(scores, graph.valid, k) for k in uniq])
    plans = graph.valid[None] & ~masks  # edges outside the circuit are patched
    m_circ = np.empty((len(examples), len(fr)))
    m_clean = np.empty(len(examples))
    m_empty = np.empty(len(examples))
    with frozen(subject.model), torch.no_grad():
        for i, (ex, corr_in) in enumerate(zip(examples, per_example)):
            prep = prepare(subject, ex, corrupt=corr_in, metric=chosen, corrupt_answer=None, seed=seed)
            clean, m_clean[i] = _outputs(subject, graph, prep.input_ids, prep, chosen)
            corr, _ = _corrupt_outputs(subject, graph, prep, clean, chosen, batch_size)
            kept = _run_plans(subject, graph, prep, corr, plans, chosen, batch_size)
            m_empty[i] = kept[uniq.index(0)]
            m_circ[i] = [kept[uniq.index(k)] for k in counts]
    mean_clean, mean_empty = float(m_clean.mean()), float(m_empty.mean())
    if abs(mean_clean - mean_empty) <= 1e-9:
        raise InputError(
            f"the clean and corrupt metrics are equal on average ({mean_clean:.4g}), so faithfulness is undefined",
            source="corrupt",
            fix="use counterfactuals that change the answer (e.g. donors with other subjects)",
        )
    curve = tuple(Faithfulness(k, float(m_circ[:, j].mean()), mean_clean, mean_empty) for j, k in enumerate(counts))
    cpr, cmd = mib_areas(fr, [c.share for c in curve])
    result = CircuitQuality(
        method=name,
        fractions=fr,
        n_kept=tuple(counts),
        n_edges=n_edges,
        curve=curve,
        cpr=cpr,
        cmd=cmd,
        metric_circuit=m_circ,
        metric_clean=m_clean,
        metric_empty=m_empty,
        eval_ids=tuple(ex.id for ex in examples),
        scored_on=scored_on,
        metric=chosen,
        seconds=time.perf_counter() - t0,
    )
    logger.info("%s: CPR %.3f, CMD %.3f on %d held-out examples", name, cpr, cmd, len(examples))
    return result
