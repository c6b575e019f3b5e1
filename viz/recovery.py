"""Recovery and trade-off figures: recovery rate per attack (with confidence intervals and the control level)
and the unlearning dilemma across methods (forgetting or recovery vs retain accuracy / destructive rate).

A recovery rate is the share of forgotten items that an attack brings back; it means something only next
to the control: the same attack on a model that never learned the facts (the retrain-without-forget-set
model), which gives the chance level. Both are drawn with their Wilson intervals.

Inputs are plain rows (dicts) so the figures work on a live audit result, on ``summary.json`` and on
hand-made tables alike; :func:`recovery_rows` reads the rows out of an audit summary.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from viz._common import VizInputError

logger = logging.getLogger(__name__)

__all__ = ["recovery_rows", "recovery_chart", "recovery_chart_plotly", "dilemma_plot", "dilemma_plot_plotly"]

_RATE_KEYS = ("rate", "recovery", "recovery_rate", "value")
_CONTROL_KEYS = ("control", "control_rate", "chance", "control_recovery")


def _num(d: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    for k in keys:
        v = d.get(k)
        if isinstance(v, Mapping):
            inner = _num(v, _RATE_KEYS)
            if inner is not None:
                return inner
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _interval(d: Mapping[str, Any], prefix: str = "") -> tuple[float, float] | None:
    for key in (f"{prefix}ci", f"{prefix}interval", f"{prefix}wilson"):
        v = d.get(key)
        if isinstance(v, (list, tuple)) and len(v) == 2:
            return float(v[0]), float(v[1])
    lo, hi = d.get(f"{prefix}lo"), d.get(f"{prefix}hi")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        return float(lo), float(hi)
    return None


def _row(name: str, d: Mapping[str, Any]) -> dict[str, Any]:
    rate = _num(d, _RATE_KEYS)
    if rate is None:
        raise VizInputError(f"attack {name!r}: no recovery rate (one of {_RATE_KEYS}) in {sorted(d)}")
    nested = d.get("rate")
    inner: Mapping[str, Any] = (
        nested if isinstance(nested, Mapping) else d
    )  # unpact.scoring Rate dicts: {k, n, rate, lo, hi}
    row: dict[str, Any] = {
        "attack": str(d.get("attack", d.get("name", name))),
        "rate": rate,
        "ci": _interval(inner) or _interval(d),
        "n": inner.get("n", d.get("n")),
    }
    control = d.get("control")
    if isinstance(control, Mapping):
        row["control"] = _num(control, _RATE_KEYS)
        row["control_ci"] = _interval(control)
    else:
        row["control"] = _num(d, _CONTROL_KEYS)
        row["control_ci"] = _interval(d, "control_")
    return row


def recovery_rows(source: Any) -> list[dict[str, Any]]:
    """Normalised rows ``{"attack", "rate", "ci": (lo, hi) | None, "n", "control", "control_ci"}``.

    Args:
        source: An audit summary (mapping with ``"attacks"`` or ``"recovery"``: a mapping attack -> stats or a
            list of stats dicts), or such a list/mapping directly. Stats use ``rate``/``recovery``, ``ci`` or
            ``lo``/``hi``, and ``control`` (a number or a mapping with its own ``rate``/``ci``) or
            ``control_rate``/``control_ci``.

    Returns:
        One dict per attack, in the input order.
    """
    if isinstance(source, Mapping):
        for key in ("attacks", "recovery"):  # an audit summary, or unpact.scoring.recovery_summary output
            if isinstance(source.get(key), (Mapping, list, tuple)):
                return recovery_rows(source[key])
        items = [(str(k), v) for k, v in source.items() if isinstance(v, Mapping)]
    elif isinstance(source, (list, tuple)):
        items = [(str(v.get("attack", v.get("name", i))), v) for i, v in enumerate(source) if isinstance(v, Mapping)]
    else:
        raise VizInputError(f"cannot read recovery rates from {type(source).__name__}; pass the audit summary or rows")
    rows = [_row(name, d) for name, d in items]
    if not rows:
        raise VizInputError("no attack results found (expected 'attacks' in the audit summary)")
    return rows


def _esc(s: str) -> str:
    return html.escape(str(s), quote=False)


def _err(rows: list[dict[str, Any]], rate: str, ci: str) -> tuple[list[float], list[float]] | None:
    if not any(r.get(ci) for r in rows):
        return None
    lo = [max(0.0, r[rate] - r[ci][0]) if r.get(ci) and r.get(rate) is not None else 0.0 for r in rows]
    hi = [max(0.0, r[ci][1] - r[rate]) if r.get(ci) and r.get(rate) is not None else 0.0 for r in rows]
    return lo, hi


def recovery_chart_plotly(source: Any, *, title: str | None = None) -> Any:
    """Plotly bar chart: recovery rate per attack (95% CI error bars) next to the control model's rate.

    Args:
        source: Audit summary or rows (see :func:`recovery_rows`).
        title: Figure title.

    Returns:
        ``plotly.graph_objects.Figure``; rates on a 0-1 axis.
    """
    import plotly.graph_objects as go

    rows = recovery_rows(source)
    names = [_esc(r["attack"]) for r in rows]
    fig = go.Figure()
    err = _err(rows, "rate", "ci")
    fig.add_trace(
        go.Bar(
            x=names,
            y=[r["rate"] for r in rows],
            name="unlearned model",
            marker_color="#d62728",
            error_y={"type": "data", "symmetric": False, "array": err[1], "arrayminus": err[0]} if err else None,
            customdata=[r.get("n") if r.get("n") is not None else "" for r in rows],
            hovertemplate="%{x}<br>recovery %{y:.3f}<br>n %{customdata}<extra></extra>",
        )
    )
    if any(r.get("control") is not None for r in rows):
        cerr = _err(rows, "control", "control_ci")
        fig.add_trace(
            go.Bar(
                x=names,
                y=[r.get("control") for r in rows],
                name="control (never saw the facts)",
                marker_color="#7f7f7f",
                error_y={"type": "data", "symmetric": False, "array": cerr[1], "arrayminus": cerr[0]} if cerr else None,
                hovertemplate="%{x}<br>control %{y:.3f}<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        title={"text": _esc(title or "Recovery of forgotten answers per attack (95% CI)")},
        yaxis={"title": {"text": "recovery rate"}, "range": [0, 1.05]},
        xaxis_title="attack",
        height=420,
        legend={"orientation": "h", "y": 1.08},
    )
    return fig


def recovery_chart(source: Any, *, title: str | None = None) -> Any:
    """Matplotlib version of :func:`recovery_chart_plotly`.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    rows = recovery_rows(source)
    x = np.arange(len(rows))
    has_control = any(r.get("control") is not None for r in rows)
    w = 0.38 if has_control else 0.6
    fig = Figure(figsize=(max(5.5, 1.1 * len(rows) + 2), 4.0), layout="constrained")
    ax = fig.subplots()
    err = _err(rows, "rate", "ci")
    ax.bar(
        x - (w / 2 if has_control else 0),
        [r["rate"] for r in rows],
        w,
        color="#d62728",
        label="unlearned model",
        yerr=np.array(err) if err else None,
        capsize=3,
    )
    if has_control:
        cerr = _err(rows, "control", "control_ci")
        ax.bar(
            x + w / 2,
            [r.get("control") or 0.0 for r in rows],
            w,
            color="#7f7f7f",
            label="control (never saw the facts)",
            yerr=np.array(cerr) if cerr else None,
            capsize=3,
        )
    ax.set_xticks(x)
    ax.set_xticklabels([r["attack"].replace("$", r"\$") for r in rows], rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recovery rate")
    ax.set_xlabel("attack")
    ax.legend(frameon=False)
    ax.set_title(title or "Recovery of forgotten answers per attack (95% CI)", fontsize=10)
    return fig


def _dilemma_points(rows: Sequence[Mapping[str, Any]], x: str, y: str) -> list[dict[str, Any]]:
    pts = []
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise VizInputError(f"dilemma rows must be dicts, row {i} is {type(r).__name__}")
        xv, yv = r.get(x), r.get(y)
        if not isinstance(xv, (int, float)) or not isinstance(yv, (int, float)):
            raise VizInputError(f"row {i} ({r.get('method', '?')!r}) lacks numeric {x!r} and {y!r}; keys: {sorted(r)}")
        pts.append(
            {
                "method": str(r.get("method", r.get("name", i))),
                "x": float(xv),
                "y": float(yv),
                "x_ci": _interval(r, f"{x}_"),
                "y_ci": _interval(r, f"{y}_"),
            }
        )
    if not pts:
        raise VizInputError("no rows for the dilemma plot: pass one dict per unlearning method")
    return pts


def _label(key: str) -> str:
    return key.replace("_", " ")


def dilemma_plot_plotly(
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str = "retain_accuracy",
    y: str = "forget_accuracy",
    title: str | None = None,
) -> Any:
    """Plotly scatter of the unlearning dilemma: one point per method, ``y`` against ``x``.

    Args:
        rows: One dict per method: ``method`` plus the two numeric keys (optional ``<key>_ci`` = (lo, hi)).
        x: Key on the x axis (e.g. "retain_accuracy" or "destructive_rate").
        y: Key on the y axis (e.g. "forget_accuracy" or "recovery").
        title: Figure title.

    Returns:
        ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    pts = _dilemma_points(rows, x, y)
    ex = _err([{"v": p["x"], "ci": p["x_ci"]} for p in pts], "v", "ci")
    ey = _err([{"v": p["y"], "ci": p["y_ci"]} for p in pts], "v", "ci")
    fig = go.Figure(
        go.Scatter(
            x=[p["x"] for p in pts],
            y=[p["y"] for p in pts],
            mode="markers+text",
            text=[_esc(p["method"]) for p in pts],
            textposition="top center",
            marker={"size": 12, "color": "#9467bd"},
            error_x={"type": "data", "symmetric": False, "array": ex[1], "arrayminus": ex[0]} if ex else None,
            error_y={"type": "data", "symmetric": False, "array": ey[1], "arrayminus": ey[0]} if ey else None,
            hovertemplate="%{text}<br>" + _label(x) + " %{x:.3f}<br>" + _label(y) + " %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": _esc(title or f"Unlearning dilemma: {_label(y)} vs {_label(x)}")},
        xaxis={"title": {"text": _label(x)}, "range": [-0.05, 1.05]},
        yaxis={"title": {"text": _label(y)}, "range": [-0.05, 1.1]},
        height=440,
    )
    return fig


def dilemma_plot(
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str = "retain_accuracy",
    y: str = "forget_accuracy",
    title: str | None = None,
) -> Any:
    """Matplotlib version of :func:`dilemma_plot_plotly`; same arguments.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    pts = _dilemma_points(rows, x, y)
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ex = _err([{"v": p["x"], "ci": p["x_ci"]} for p in pts], "v", "ci")
    ey = _err([{"v": p["y"], "ci": p["y_ci"]} for p in pts], "v", "ci")
    ax.errorbar(
        [p["x"] for p in pts],
        [p["y"] for p in pts],
        xerr=np.array(ex) if ex else None,
        yerr=np.array(ey) if ey else None,
        fmt="o",
        color="#9467bd",
        capsize=3,
    )
    for p in pts:
        ax.annotate(p["method"], (p["x"], p["y"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.grid(alpha=0.3)
    ax.set_title(title or f"Unlearning dilemma: {_label(y)} vs {_label(x)}", fontsize=10)
    return fig
