"""Circuit graphs: layered nodes (embeddings, attention heads, MLPs, logits), edges weighted by attribution score.

With two results (base and unlearned ``EdgeScores``, or one ``CircuitDiff``) the top-``k`` edges of each are
compared and drawn in three distinct styles: kept (in both; grey), lost (only in base; red, dashed) and
gained (only in unlearned; green). Line width is proportional to ``|score|``.

Node names are placed by layer: a name containing "emb"/"input" goes in the first column, "logit"/"output"
in the last, otherwise the first integer in the name is the layer, attention nodes at ``2 * layer + 1`` and
MLP nodes (names containing "mlp" or starting with "m") at ``2 * layer + 2``.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from viz._common import VizInputError

logger = logging.getLogger(__name__)

__all__ = ["circuit_graph", "circuit_graph_plotly", "edge_map", "node_layout"]

Edge = tuple[str, str]
_STYLES = {
    "edge": {"color": "#555555", "dash": "solid", "label": "edge"},
    "kept": {"color": "#7f7f7f", "dash": "solid", "label": "kept (both)"},
    "lost": {"color": "#d62728", "dash": "dash", "label": "lost (base only)"},
    "gained": {"color": "#2ca02c", "dash": "solid", "label": "gained (unlearned only)"},
}


def _split_edge(edge: Any) -> Edge:
    if isinstance(edge, (tuple, list)) and len(edge) == 2:
        return str(edge[0]), str(edge[1])
    if isinstance(edge, str):
        for sep in ("->", "\u2192", " > "):
            if sep in edge:
                a, b = edge.split(sep, 1)
                return a.strip(), b.strip()
    src, dst = (
        getattr(edge, "src", None) or getattr(edge, "source", None),
        getattr(edge, "dst", None) or getattr(edge, "target", None),
    )
    if src is not None and dst is not None:
        return str(src), str(dst)
    raise VizInputError(f"cannot read an edge from {edge!r}: expected (src, dst), 'src->dst' or an object with src/dst")


def _from_items(items: Iterable[Any]) -> dict[Edge, float]:
    out: dict[Edge, float] = {}
    for item in items:
        if isinstance(item, (tuple, list)) and len(item) == 4:  # CircuitDiff rows: (from, to, score_a, score_b)
            out[(str(item[0]), str(item[1]))] = float(item[3]) if abs(item[3]) >= abs(item[2]) else float(item[2])
        elif isinstance(item, (tuple, list)) and len(item) == 3:
            out[(str(item[0]), str(item[1]))] = float(item[2])
        elif isinstance(item, (tuple, list)) and len(item) == 2 and not isinstance(item[1], str):
            out[_split_edge(item[0])] = float(item[1])
        else:
            score = getattr(item, "score", None)
            if score is None:
                raise VizInputError(f"cannot read an edge score from {item!r}")
            out[_split_edge(item)] = float(score)
    return out


def edge_map(obj: Any, k: int | None = None) -> dict[Edge, float]:
    """``{(src, dst): score}`` for the top-``k`` edges by ``|score|`` of an ``EdgeScores``-like object.

    Accepts a mapping ``{(src, dst) | "src->dst": score}``, a list of ``(src, dst, score)``, an object with
    ``edges`` + ``scores`` (parallel sequences), or one with ``top_k(k)`` returning any of these.
    """
    if isinstance(obj, Mapping):
        out = {_split_edge(e): float(s) for e, s in obj.items()}
    elif callable(getattr(obj, "edge_list", None)):  # unpact.circuits.EdgeScores
        out = _from_items(obj.edge_list())
    elif getattr(obj, "mask", None) is not None and callable(getattr(getattr(obj, "scores", None), "edge_list", None)):
        out = _from_items(obj.scores.edge_list(obj.mask))  # unpact.circuits.Circuit
    elif getattr(obj, "edges", None) is not None and getattr(obj, "scores", None) is not None:
        edges = list(obj.edges)
        scores = np.asarray(obj.scores, dtype=float).reshape(-1)
        if len(edges) != scores.shape[0]:
            raise VizInputError(f"{len(edges)} edges but {scores.shape[0]} scores")
        out = {_split_edge(e): float(s) for e, s in zip(edges, scores)}
    elif callable(getattr(obj, "top_k", None)):
        res = obj.top_k(k if k is not None else 10**9)
        out = edge_map(res) if not isinstance(res, (list, tuple)) else _from_items(res)
    elif isinstance(obj, (list, tuple)):
        out = _from_items(obj)
    else:
        raise VizInputError(
            f"cannot read edges from {type(obj).__name__}: pass EdgeScores, a dict {{(src, dst): score}} or "
            "a list of (src, dst, score)"
        )
    ranked = sorted(out.items(), key=lambda kv: -abs(kv[1]))
    return dict(ranked[:k] if k is not None else ranked)


def _column(name: str) -> float:
    low = name.lower()
    if "emb" in low or low.startswith("input") or low in ("tok", "tokens"):
        return 0.0
    if "logit" in low or low in ("output", "out", "unembed", "final"):
        return float("inf")
    m = re.search(r"\d+", low)
    layer = int(m.group()) if m else 0
    is_mlp = "mlp" in low or re.match(r"m\d", low) is not None
    return 2.0 * layer + (2.0 if is_mlp else 1.0)


def node_layout(nodes: Iterable[str]) -> dict[str, tuple[float, float]]:
    """``{node: (x, y)}``: x = the node's column (layer order), y spreads the nodes of one column."""
    nodes = sorted(set(nodes))
    cols = {n: _column(n) for n in nodes}
    finite = [c for c in cols.values() if np.isfinite(c)]
    last = (max(finite) if finite else 0.0) + 1.0
    cols = {n: (last if not np.isfinite(c) else c) for n, c in cols.items()}
    pos: dict[str, tuple[float, float]] = {}
    for c in sorted(set(cols.values())):
        members = sorted(
            (n for n in nodes if cols[n] == c),
            key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)],
        )
        for i, n in enumerate(members):
            pos[n] = (c, i - (len(members) - 1) / 2.0)
    return pos


def _categorised(first: Any, second: Any | None, k: int) -> list[tuple[Edge, float, str]]:
    """[(edge, score, category)] with category edge | kept | lost | gained.

    A ``CircuitDiff`` (``lost``/``gained`` and ``reweighted`` or ``kept`` rows of ``(from, to, score_a, score_b)``)
    is drawn as it is (its own ``k``); two ``EdgeScores`` are compared by their top-``k`` edges.
    """
    lost = getattr(first, "lost", None)
    if second is None and lost is not None and getattr(first, "gained", None) is not None:
        out: list[tuple[Any, ...]] = []
        for cat, attr in (("kept", "kept"), ("kept", "reweighted"), ("lost", "lost"), ("gained", "gained")):
            items = getattr(first, attr, None)
            if items is not None and not (cat == "kept" and any(c == "kept" for _, _, c in out)):
                out += [(e, s, cat) for e, s in edge_map(list(items)).items()]
        return out
    a = edge_map(first, k)
    if second is None:
        return [(e, s, "edge") for e, s in a.items()]
    b = edge_map(second, k)
    out = [(e, b[e] if e in b else s, "kept" if e in b else "lost") for e, s in a.items()]
    out += [(e, s, "gained") for e, s in b.items() if e not in a]
    return out


def _widths(edges: list[tuple[Edge, float, str]]) -> list[float]:
    m = max((abs(s) for _, s, _ in edges), default=1.0) or 1.0
    return [0.8 + 5.0 * abs(s) / m for _, s, _ in edges]


def _esc(s: str) -> str:
    return html.escape(str(s), quote=False)


def circuit_graph_plotly(first: Any, second: Any | None = None, *, k: int = 30, title: str | None = None) -> Any:
    """Plotly circuit graph of the top-``k`` edges; with two results, kept / lost / gained edges are distinct.

    Args:
        first: ``EdgeScores`` of the base model (or a ``CircuitDiff`` with ``kept``/``lost``/``gained``).
        second: ``EdgeScores`` of the unlearned model, optional.
        k: Edges taken from each result (by ``|score|``).
        title: Figure title.

    Returns:
        ``plotly.graph_objects.Figure``; hover on an edge's midpoint shows its score.
    """
    import plotly.graph_objects as go

    edges = _categorised(first, second, k)
    if not edges:
        raise VizInputError("no edges to draw: the result holds no scored edges")
    pos = node_layout([n for (e, _, _) in edges for n in e])
    fig = go.Figure()
    shown: set[str] = set()
    mids: dict[str, tuple[list[float], list[float], list[str]]] = {}
    for (edge, score, cat), width in zip(edges, _widths(edges)):
        (x0, y0), (x1, y1) = pos[edge[0]], pos[edge[1]]
        st = _STYLES[cat]
        fig.add_trace(
            go.Scatter(
                x=[x0, x1],
                y=[y0, y1],
                mode="lines",
                line={"color": st["color"], "width": width, "dash": st["dash"]},
                opacity=0.85,
                name=st["label"],
                legendgroup=cat,
                showlegend=cat not in shown,
                hoverinfo="skip",
            )
        )
        shown.add(cat)
        mx, my, mt = mids.setdefault(cat, ([], [], []))
        mx.append((x0 + x1) / 2)
        my.append((y0 + y1) / 2)
        mt.append(f"{_esc(edge[0])} \u2192 {_esc(edge[1])}<br>score {score:.4g}<br>{cat}")
    for cat, (mx, my, mt) in mids.items():
        fig.add_trace(
            go.Scatter(
                x=mx,
                y=my,
                mode="markers",
                marker={"size": 6, "color": _STYLES[cat]["color"], "opacity": 0.4},
                hovertext=mt,
                hoverinfo="text",
                showlegend=False,
                legendgroup=cat,
            )
        )
    names = list(pos)
    fig.add_trace(
        go.Scatter(
            x=[pos[n][0] for n in names],
            y=[pos[n][1] for n in names],
            mode="markers+text",
            text=[_esc(n) for n in names],
            textposition="top center",
            hovertext=[_esc(n) for n in names],
            hoverinfo="text",
            marker={"size": 13, "color": "#1f77b4", "line": {"color": "white", "width": 1}},
            name="node",
            showlegend=False,
        )
    )
    fig.update_xaxes(
        title_text="depth (embeddings \u2192 attention / MLP per layer \u2192 logits)",
        showticklabels=False,
        showgrid=False,
        zeroline=False,
    )
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    n_rows = max((sum(1 for p in pos.values() if p[0] == c) for c in {p[0] for p in pos.values()}), default=1)
    fig.update_layout(
        title={"text": _esc(title or f"Circuit: top {k} edges by |score|")},
        plot_bgcolor="white",
        height=max(360, 120 + 45 * n_rows),
        legend={"orientation": "h", "y": -0.08},
    )
    return fig


def circuit_graph(first: Any, second: Any | None = None, *, k: int = 30, title: str | None = None) -> Any:
    """Matplotlib version of :func:`circuit_graph_plotly`; same arguments.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    edges = _categorised(first, second, k)
    if not edges:
        raise VizInputError("no edges to draw: the result holds no scored edges")
    pos = node_layout([n for (e, _, _) in edges for n in e])
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    fig = Figure(
        figsize=(max(6.0, 1.1 * (max(xs) - min(xs) + 2)), max(3.5, 0.6 * (max(ys) - min(ys) + 2))), layout="constrained"
    )
    ax = fig.subplots()
    mpl_dash = {"solid": "-", "dash": "--"}
    for (edge, _score, cat), width in zip(edges, _widths(edges)):
        (x0, y0), (x1, y1) = pos[edge[0]], pos[edge[1]]
        st = _STYLES[cat]
        ax.plot([x0, x1], [y0, y1], mpl_dash[st["dash"]], color=st["color"], linewidth=width, alpha=0.8, zorder=1)
    ax.scatter(xs, ys, s=120, color="#1f77b4", zorder=2, edgecolors="white")
    for n, (x, y) in pos.items():
        ax.text(x, y + 0.18, n, ha="center", va="bottom", fontsize=8, parse_math=False)
    cats = sorted({c for _, _, c in edges}, key=list(_STYLES).index)
    handles: list[Any] = [
        Line2D(
            [0],
            [0],
            color=_STYLES[c]["color"],
            linestyle=mpl_dash[_STYLES[c]["dash"]],  # type: ignore[arg-type]
            label=_STYLES[c]["label"],
        )
        for c in cats
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.05), ncol=len(cats), frameon=False)
    ax.set_axis_off()
    ax.set_title(title or f"Circuit: top {k} edges by |score|", fontsize=10)
    return fig
