"""Representation-level evidence: probe rank accuracy per layer, per model, with the floor and chance.

Takes plain numbers (what the audit saved) and never shows a figure: :func:`probe_layers_plotly` returns a
``plotly.graph_objects.Figure``, :func:`probe_layers` a ``matplotlib.figure.Figure``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["probe_layers", "probe_layers_plotly"]


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


def probe_layers(
    rows: Mapping[str, Mapping[str, Any]],
    *,
    chance: float | None = None,
    title: str | None = None,
) -> Any:
    """Matplotlib version of :func:`probe_layers_plotly`; same arguments.

    Returns:
        ``matplotlib.figure.Figure`` (error bars: the clustered 95% interval where given; diamond: the chosen
        layer; dotted: shuffled-label probes).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for k, (name, r) in enumerate(rows.items()):
        color = f"C{k % 10}"
        xs, y = list(range(len(r["layers"]))), list(r["accuracy"])
        yerr = None
        if r.get("lo") is not None and r.get("hi") is not None:
            yerr = [[v - lo for v, lo in zip(y, r["lo"])], [h - v for h, v in zip(r["hi"], y)]]
        ax.errorbar(xs, y, yerr=yerr, fmt="o-", color=color, ms=4, capsize=2, lw=1.2, label=name)
        if r.get("layer") is not None:
            j = int(r["layer"])
            ax.plot([xs[j]], [y[j]], "D", color=color, ms=9, mec="black", mew=0.5)
        if r.get("shuffled") is not None:
            ax.plot(xs, list(r["shuffled"]), ":", color=color, lw=1)
    if chance is not None:
        ax.axhline(chance, color="0.6", ls=":", lw=1)
        ax.text(0, chance, " chance", fontsize=7, va="bottom", color="0.4")
    first = next(iter(rows.values()), None)
    if first is not None:
        ax.set_xticks(range(len(first["layers"])), [str(n) for n in first["layers"]])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer (residual stream after the block)")
    ax.set_ylabel("gold first token ranked first")
    ax.set_title(title or "Probe rank accuracy on the forget items per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
