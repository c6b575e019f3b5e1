"""Representation-level evidence: probe rank accuracy per layer, per model, with the floor and chance.

Takes plain numbers (what the audit saved), returns a ``plotly.graph_objects.Figure`` and never shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["probe_layers_plotly"]


def probe_layers_plotly(
    rows: Mapping[str, Mapping[str, Any]],
    *,
    chance: float | None = None,
    title: str | None = None,
) -> Any:
    """Rank accuracy of the per-layer probes on the forget items, one line per model.

    Args:
        rows: Model -> ``{"layers": [names], "accuracy": [per layer], "lo": [...], "hi": [...],
            "shuffled": [per layer] or None, "layer": chosen index}``; ``lo``/``hi`` (a clustered 95%
            interval) may be absent.
        chance: Mean chance rank accuracy (a dotted line).
        title: Figure title.

    Returns:
        The figure (x: layer, y: share of forget items whose gold first token ranks first); the chosen
        layer of each model is marked with a diamond, shuffled-label probes are dotted.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
    for k, (name, r) in enumerate(rows.items()):
        color = palette[k % len(palette)]
        x, y = list(r["layers"]), list(r["accuracy"])
        err = None
        if r.get("lo") is not None and r.get("hi") is not None:
            err = {
                "type": "data",
                "symmetric": False,
                "array": [h - v for h, v in zip(r["hi"], y)],
                "arrayminus": [v - lo for v, lo in zip(y, r["lo"])],
                "thickness": 1,
            }
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, line={"color": color}, error_y=err))
        if r.get("layer") is not None:
            j = int(r["layer"])
            fig.add_trace(
                go.Scatter(
                    x=[x[j]],
                    y=[y[j]],
                    mode="markers",
                    marker={"symbol": "diamond", "size": 12, "color": color},
                    name=f"{name}: chosen layer",
                    showlegend=False,
                )
            )
        if r.get("shuffled") is not None:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=list(r["shuffled"]),
                    mode="lines",
                    name=f"{name}: shuffled labels",
                    line={"color": color, "dash": "dot", "width": 1},
                )
            )
    if chance is not None:
        fig.add_hline(y=chance, line={"dash": "dot", "color": "#999999"}, annotation_text="chance")
    fig.update_layout(
        title=title or "Probe rank accuracy on the forget items per layer",
        xaxis_title="layer (residual stream after the block)",
        yaxis_title="gold first token ranked first",
        yaxis={"range": [0, 1.02]},
        template="plotly_white",
        height=380,
    )
    return fig
