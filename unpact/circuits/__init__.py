"""Circuit edges by edge attribution patching (EAP, EAP-IG), checked against exact edge patching.

The graph (see :mod:`unpact.circuits._graph`) has upstream nodes ``embed``, every attention head
``a{L}.h{H}`` and every MLP ``m{L}``, and downstream nodes ``a{L}`` (a layer's attention input,
shared by the q/k/v of its heads), ``m{L}`` and ``logits``. An edge ``u -> v`` is ``u``'s write
to the residual stream as read by ``v``.

EAP (Nanda 2023; Syed et al. 2023) estimates the effect of patching one edge to its corrupt value
to first order::

    score(u -> v) = sum_pos (a_u(corrupt) - a_u(clean)) . dMetric/d(input_v)

from one clean forward+backward and one corrupt forward; ``dMetric/d(input_v)`` is the gradient
through node ``v`` only (not through the residual stream that skips it). EAP-IG (Hanna et al.
2024) averages that gradient over inputs on the line from the corrupt to the clean input.
:func:`exact_edge_patching` is the ground truth (one forward per edge).

Example:
    >>> from unpact.circuits import edge_attribution_patching, faithfulness, circuit_diff
    >>> base = edge_attribution_patching(subject, example, corrupt=donors, method="eap-ig")
    >>> circuit = base.top_k(20)
    >>> faithfulness(subject, circuit).share
    >>> diff = circuit_diff(base, edge_attribution_patching(unlearned, example, corrupt=base.corrupt_prompt))

Evaluating a ranking the way MIB does (Mueller et al. 2025; see :mod:`unpact.circuits.mib`): score
edges on a scoring set, average, and measure faithfulness at MIB's edge fractions on held-out
examples, each patched from its own counterfactual; CPR and CMD are areas under that curve::

    >>> scored = [edge_attribution_patching(subject, ex, corrupt=donors, method="eap-ig") for ex in scoring]
    >>> q = circuit_quality(subject, scored, held_out, corrupt=donors)
    >>> q.cpr, q.cmd
    >>> edge_type_errors(scored, [exact_edge_patching(subject, s) for s in scored])
"""

from __future__ import annotations

from unpact.circuits._graph import Graph
from unpact.circuits.eap import edge_attribution_patching, exact_edge_patching, faithfulness, faithfulness_curve
from unpact.circuits.edge_types import EdgeTypeError, edge_type_errors
from unpact.circuits.mib import MIB_FRACTIONS, CircuitQuality, circuit_quality, mib_areas
from unpact.circuits.results import Circuit, CircuitDiff, EdgeScores, Faithfulness, circuit_diff, mean_scores

__all__ = [
    "Graph",
    "edge_attribution_patching",
    "exact_edge_patching",
    "faithfulness",
    "faithfulness_curve",
    "EdgeScores",
    "Circuit",
    "Faithfulness",
    "CircuitDiff",
    "circuit_diff",
    "circuit_quality",
    "CircuitQuality",
    "MIB_FRACTIONS",
    "mib_areas",
    "mean_scores",
    "edge_type_errors",
    "EdgeTypeError",
]
