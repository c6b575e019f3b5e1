"""Weight-level evidence: relearning curves (model vs control) and quantization bars.

Both take plain numbers (what the audit saved) and never show a figure: ``*_plotly`` return a
``plotly.graph_objects.Figure``, :func:`relearn_curves` a ``matplotlib.figure.Figure``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["relearn_curves", "relearn_curves_plotly", "quantization_bars_plotly"]

_COLORS = {
    "forget_a": "#d62728",
    "retain": "#1f77b4",
    "unrelated": "#7f7f7f",
    "forget_b": "#2ca02c",
    "in_context": "#9467bd",
}


def relearn_curves_plotly(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float] | None]],
    *,
    model: str = "model",
    control: str = "control",
    title: str | None = None,
) -> Any:
    """Accuracy on half B against fine-tuning steps, per train set: the model solid, the control dashed.

    Args:
        curves: Train set -> ``(steps, model accuracy per step, control accuracy per step or None)``.
        model: The audited model's name (legend).
        control: The control's name (legend).
        title: Figure title.

    Returns:
        The figure (x: steps, on a symlog-like axis where step 0 sits left of 1).
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for train_set, (steps, acc, ctl) in curves.items():
        color = _COLORS.get(train_set, "#333333")
        x = [s + 0.5 if s == 0 else s for s in steps]  # step 0 on a log axis
        fig.add_trace(
            go.Scatter(x=x, y=list(acc), mode="lines+markers", name=f"{model}: {train_set}", line={"color": color})
        )
        if ctl is not None:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=list(ctl),
                    mode="lines+markers",
                    name=f"{control}: {train_set}",
                    line={"color": color, "dash": "dash"},
                    marker={"symbol": "circle-open"},
                )
            )
    fig.update_layout(
        title=title or "Relearning: accuracy on half B after fine-tuning on ...",
        xaxis={"title": "fine-tuning steps (0 plotted at 0.5)", "type": "log"},
        yaxis={"title": "half-B accuracy", "range": [0, 1.02], "tickformat": ".0%"},
        template="plotly_white",
        height=380,
    )
    return fig


def quantization_bars_plotly(rows: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Any:
    """Forget accuracy of each model before and after each quantization scheme.

    Args:
        rows: Dicts with ``model``, ``scheme`` (``"none"`` for the unquantized model) and ``forget_accuracy``.
        title: Figure title.

    Returns:
        Grouped bars: one group per model, one bar per scheme.
    """
    import plotly.graph_objects as go

    schemes = list(dict.fromkeys(str(r["scheme"]) for r in rows))
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    fig = go.Figure()
    for s in schemes:
        ys = []
        for m in models:
            hit = [r for r in rows if r["model"] == m and r["scheme"] == s]
            ys.append(hit[0]["forget_accuracy"] if hit else None)
        fig.add_trace(go.Bar(x=models, y=ys, name=s))
    fig.update_layout(
        barmode="group",
        title=title or "Quantization: forget accuracy on the measured items",
        yaxis={"title": "forget accuracy", "range": [0, 1.02], "tickformat": ".0%"},
        template="plotly_white",
        height=360,
    )
    return fig


def relearn_curves(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float] | None]],
    *,
    model: str = "model",
    control: str = "control",
    title: str | None = None,
) -> Any:
    """Matplotlib version of :func:`relearn_curves_plotly`; same arguments.

    Returns:
        ``matplotlib.figure.Figure`` (x: steps on a log axis, step 0 plotted at 0.5; y: half-B accuracy).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for train_set, (steps, acc, ctl) in curves.items():
        color = _COLORS.get(train_set, "#333333")
        x = [s + 0.5 if s == 0 else s for s in steps]
        ax.plot(x, list(acc), "o-", color=color, ms=4, label=f"{model}: {train_set}")
        if ctl is not None:
            ax.plot(x, list(ctl), "o--", color=color, ms=4, mfc="none", label=f"{control}: {train_set}")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fine-tuning steps (0 plotted at 0.5)")
    ax.set_ylabel("half-B accuracy")
    ax.set_title(title or "Relearning: accuracy on half B after fine-tuning on ...")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
