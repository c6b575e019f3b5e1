"""Figures from unpact results, and the self-contained HTML audit report.

``viz`` takes result objects (:class:`unpact.attribution.Attribution`, :class:`unpact.lens.LensTrajectory`,
:class:`unpact.circuits.EdgeScores` / ``CircuitDiff``, an audit's ``summary.json``) and returns figures:
``matplotlib.figure.Figure`` for functions without suffix, ``plotly.graph_objects.Figure`` for ``*_plotly``.
Nothing is ever shown; displaying a figure is the notebook's business. ``unpact`` never imports ``viz``.

Modules: :mod:`viz.attribution` (token heatmaps, answer x prompt matrix), :mod:`viz.lens` (logit-lens grid and
curves), :mod:`viz.circuits` (circuit graph), :mod:`viz.recovery` (recovery per attack, dilemma plot),
:mod:`viz.weights` (relearning curves, quantization bars), :mod:`viz.representations` (probes per layer),
:mod:`viz.sweep` (trade-off and recovery against strength), :mod:`viz.report` (``write_report``). Names are
imported lazily, so ``import viz`` loads no plotting library.
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
    "relearn_curves",
    "relearn_curves_plotly",
    "quantization_bars_plotly",
    "probe_layers",
    "probe_layers_plotly",
    "tradeoff_plot",
    "tradeoff_plot_plotly",
    "recovery_vs_strength",
    "recovery_vs_strength_plotly",
    "save_sweep_plots",
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
    "relearn_curves": "viz.weights",
    "relearn_curves_plotly": "viz.weights",
    "quantization_bars_plotly": "viz.weights",
    "probe_layers": "viz.representations",
    "probe_layers_plotly": "viz.representations",
    "tradeoff_plot": "viz.sweep",
    "tradeoff_plot_plotly": "viz.sweep",
    "recovery_vs_strength": "viz.sweep",
    "recovery_vs_strength_plotly": "viz.sweep",
    "save_sweep_plots": "viz.sweep",
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
