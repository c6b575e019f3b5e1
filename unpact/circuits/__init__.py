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
"""

from __future__ import annotations

from unpact.circuits._graph import Graph
from unpact.circuits.eap import edge_attribution_patching, exact_edge_patching, faithfulness, faithfulness_curve
from unpact.circuits.results import Circuit, CircuitDiff, EdgeScores, Faithfulness, circuit_diff

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
]
