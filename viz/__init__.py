"""Figures from unpact results, and the self-contained HTML audit report.

``viz`` takes result objects (:class:`unpact.attribution.Attribution`, :class:`unpact.lens.LensTrajectory`,
:class:`unpact.circuits.EdgeScores` / ``CircuitDiff``, an audit's ``summary.json``) and returns figures:
``matplotlib.figure.Figure`` for functions without suffix, ``plotly.graph_objects.Figure`` for ``*_plotly``.
Nothing is ever shown; displaying a figure is the notebook's business. ``unpact`` never imports ``viz``.

Modules: :mod:`viz.attribution` (token heatmaps, answer x prompt matrix), :mod:`viz.lens` (logit-lens grid and
curves), :mod:`viz.circuits` (circuit graph), :mod:`viz.recovery` (recovery per attack, dilemma plot),
:mod:`viz.report` (``write_report``). Names are imported lazily, so ``import viz`` loads no plotting library.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "token_heatmap",
    "token_heatmap_plotly",
    "attribution_matrix",
    "attribution_matrix_plotly",
    "lens_grid",
    "lens_grid_plotly",
    "lens_curves",
    "lens_curves_plotly",
    "circuit_graph",
    "circuit_graph_plotly",
    "recovery_chart",
    "recovery_chart_plotly",
    "dilemma_plot",
    "dilemma_plot_plotly",
    "write_report",
]

_MODULES = {
    "token_heatmap": "viz.attribution",
    "token_heatmap_plotly": "viz.attribution",
    "attribution_matrix": "viz.attribution",
    "attribution_matrix_plotly": "viz.attribution",
    "lens_grid": "viz.lens",
    "lens_grid_plotly": "viz.lens",
    "lens_curves": "viz.lens",
    "lens_curves_plotly": "viz.lens",
    "circuit_graph": "viz.circuits",
    "circuit_graph_plotly": "viz.circuits",
    "recovery_chart": "viz.recovery",
    "recovery_chart_plotly": "viz.recovery",
    "dilemma_plot": "viz.recovery",
    "dilemma_plot_plotly": "viz.recovery",
    "write_report": "viz.report",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'viz' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
