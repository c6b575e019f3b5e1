"""Logit-lens figures: the layers x positions grid of the gold token's rank or probability, and per-layer curves.

A ``LensTrajectory`` holds, for each layer (rows; row 0 = embeddings, last row = final layer) and prompt
position (columns), the probability and rank of the gold next token when the residual stream is decoded
through the final norm and unembedding. The grid shows where in depth the answer appears; the curves
compare base and unlearned at one position (default: the last prompt position, which predicts the first
answer token). Ranks are drawn on a log scale (rank 0 = top-1).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from viz._common import VizInputError, first_attr, visible

logger = logging.getLogger(__name__)

__all__ = ["lens_grid", "lens_grid_plotly", "lens_curves", "lens_curves_plotly"]

Value = Literal["rank", "prob"]

_PROB_NAMES = ("probs", "prob", "gold_probs", "gold_prob", "probabilities")
_RANK_NAMES = ("ranks", "rank", "gold_ranks", "gold_rank")


def _values(traj: Any, value: str) -> np.ndarray:
    """Array of shape ``(n_layers + 1, n_positions)`` with the gold token's probability or rank."""
    if value == "prob":
        arr = first_attr(traj, _PROB_NAMES, what="a logit-lens probability plot")
    elif value == "rank":
        arr = first_attr(traj, _RANK_NAMES, what="a logit-lens rank plot")
    else:
        raise VizInputError(f"value must be 'rank' or 'prob', got {value!r}")
    arr = np.asarray(arr, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise VizInputError(f"lens {value}s must be (layers, positions), got shape {arr.shape}")
    return arr


def _positions(traj: Any, n: int) -> list[str]:
    toks = getattr(traj, "tokens", None) or getattr(traj, "input_tokens", None)
    if toks is not None and len(toks) >= n:
        return [f"{i}:{visible(t)}" for i, t in enumerate(list(toks)[:n])]
    return [str(i) for i in range(n)]


def _gold(traj: Any, n: int) -> list[str] | None:
    gold = getattr(traj, "gold_tokens", None) or getattr(traj, "targets", None) or getattr(traj, "target_tokens", None)
    if gold is not None and len(gold) == n and all(isinstance(g, str) for g in gold):
        return [visible(g) for g in gold]
    toks = getattr(traj, "tokens", None)
    if toks is not None and len(toks) == n + 1:  # position p predicts token p + 1 (unpact.lens.LensTrajectory)
        return [visible(t) for t in list(toks)[1:]]
    return None


def _default_position(traj: Any, n: int) -> int:
    span = getattr(traj, "answer_span", None)
    if isinstance(span, (tuple, list)) and len(span) == 2 and 0 < int(span[0]) <= n:
        return int(span[0]) - 1  # the position that predicts the first answer token
    for name in ("prompt_len", "n_prompt", "answer_start"):
        v = getattr(traj, name, None)
        if isinstance(v, (int, np.integer)) and 0 < int(v) <= n:
            return int(v) - 1
    return n - 1


def _shown(arr: np.ndarray, value: str) -> tuple[np.ndarray, str]:
    if value == "rank":
        return np.log10(arr + 1.0), "log10(rank + 1)"
    return arr, "p(gold)"


def _esc(s: str) -> str:
    return html.escape(str(s), quote=False)


def lens_grid(traj: Any, *, value: Value = "rank", title: str | None = None) -> Any:
    """Matplotlib layers x positions grid of the gold token's rank (log colour scale) or probability.

    Args:
        traj: A ``LensTrajectory`` (needs ``probs``/``ranks`` of shape ``(n_layers + 1, n_positions)``).
        value: "rank" (default; 0 = top-1, bright = low rank) or "prob".
        title: Figure title.

    Returns:
        ``matplotlib.figure.Figure``; rows are layers (embeddings at the bottom), columns prompt positions.
    """
    from matplotlib.figure import Figure

    arr = _values(traj, value)
    shown, label = _shown(arr, value)
    cols = _positions(traj, arr.shape[1])
    fig = Figure(
        figsize=(max(6.0, 0.45 * arr.shape[1] + 2.5), max(3.0, 0.35 * arr.shape[0] + 1.8)), layout="constrained"
    )
    ax = fig.subplots()
    im = ax.imshow(
        shown,
        origin="lower",
        aspect="auto",
        cmap="viridis_r" if value == "rank" else "viridis",
        vmin=0,
        vmax=None if value == "rank" else 1.0,
    )
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([c.replace("$", r"\$") for c in cols], rotation=90, fontsize=8, family="monospace")
    ax.set_yticks(range(arr.shape[0]))
    ax.set_yticklabels(["emb"] + [str(i) for i in range(arr.shape[0] - 1)], fontsize=8)
    ax.set_xlabel("position (input token)")
    ax.set_ylabel("layer")
    ax.set_title(
        (title or f"Logit lens: {'rank' if value == 'rank' else 'probability'} of the gold next token").replace(
            "$", r"\$"
        ),
        fontsize=10,
    )
    fig.colorbar(im, ax=ax, label=label)
    return fig


def lens_grid_plotly(traj: Any, *, value: Value = "rank", title: str | None = None) -> Any:
    """Plotly version of :func:`lens_grid`; hover shows rank, probability and the gold token.

    Returns:
        ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    arr = _values(traj, value)
    shown, label = _shown(arr, value)
    cols = [_esc(c) for c in _positions(traj, arr.shape[1])]
    rows = ["emb"] + [f"L{i}" for i in range(arr.shape[0] - 1)]
    gold = _gold(traj, arr.shape[1])
    custom = np.broadcast_to(np.array([_esc(g) for g in gold], dtype=object), arr.shape) if gold else None
    hover = f"layer %{{y}}<br>position %{{x}}<br>{value} %{{customdata[0]:.4g}}"
    custom_arr = np.stack([arr, custom], axis=-1) if custom is not None else arr[..., None]
    if custom is not None:
        hover += "<br>gold %{customdata[1]}"
    fig = go.Figure(
        go.Heatmap(
            z=shown,
            x=cols,
            y=rows,
            customdata=custom_arr,
            hovertemplate=hover + "<extra></extra>",
            colorscale="Viridis",
            reversescale=value == "rank",
            zmin=0,
            zmax=None if value == "rank" else 1.0,
            colorbar={"title": {"text": label}},
        )
    )
    fig.update_layout(
        title={
            "text": _esc(title or f"Logit lens: {'rank' if value == 'rank' else 'probability'} of the gold next token")
        },
        xaxis_title="position (input token)",
        yaxis_title="layer",
        height=260 + 24 * arr.shape[0],
    )
    return fig


def _curves(trajs: Sequence[Any], value: str, position: int | None) -> list[np.ndarray]:
    out = []
    for t in trajs:
        arr = _values(t, value)
        pos = _default_position(t, arr.shape[1]) if position is None else position
        if not -arr.shape[1] <= pos < arr.shape[1]:
            raise VizInputError(f"position {pos} out of range for a trajectory with {arr.shape[1]} positions")
        out.append(arr[:, pos])
    return out


def lens_curves(
    base: Any,
    unlearned: Any | None = None,
    *,
    value: Value = "prob",
    position: int | None = None,
    labels: Sequence[str] = ("base", "unlearned"),
    title: str | None = None,
) -> Any:
    """Matplotlib per-layer curve of the gold token's probability (or rank) at one position, base vs unlearned.

    Args:
        base: A ``LensTrajectory``.
        unlearned: The same prompt's trajectory on the unlearned model (optional).
        value: "prob" (default) or "rank" (log y axis).
        position: Position index; default the last prompt position (predicts the first answer token).
        labels: Legend names.
        title: Figure title.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    trajs = [t for t in (base, unlearned) if t is not None]
    curves = _curves(trajs, value, position)
    fig = Figure(figsize=(6.5, 3.8), layout="constrained")
    ax = fig.subplots()
    for curve, name, style in zip(curves, labels, ("-o", "--s")):
        y = curve + 1.0 if value == "rank" else curve
        ax.plot(range(len(curve)), y, style, label=name.replace("$", r"\$"))
    if value == "rank":
        ax.set_yscale("log")
        ax.set_ylabel("rank of gold token + 1 (1 = top-1)")
        ax.invert_yaxis()
    else:
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("p(gold token)")
    n = len(curves[0])
    ax.set_xticks(range(n))
    ax.set_xticklabels(["emb"] + [str(i) for i in range(n - 1)])
    ax.set_xlabel("layer")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title((title or "Logit lens across layers").replace("$", r"\$"), fontsize=10)
    return fig


def lens_curves_plotly(
    base: Any,
    unlearned: Any | None = None,
    *,
    value: Value = "prob",
    position: int | None = None,
    labels: Sequence[str] = ("base", "unlearned"),
    title: str | None = None,
) -> Any:
    """Plotly version of :func:`lens_curves`; same arguments.

    Returns:
        ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    trajs = [t for t in (base, unlearned) if t is not None]
    curves = _curves(trajs, value, position)
    n = len(curves[0])
    xs = ["emb"] + [f"L{i}" for i in range(n - 1)]
    fig = go.Figure()
    for curve, name, dash in zip(curves, labels, ("solid", "dash")):
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=curve + 1.0 if value == "rank" else curve,
                name=_esc(name),
                mode="lines+markers",
                line={"dash": dash},
            )
        )
    if value == "rank":
        fig.update_yaxes(type="log", autorange="reversed", title_text="rank of gold token + 1 (1 = top-1)")
    else:
        fig.update_yaxes(range=[-0.02, 1.02], title_text="p(gold token)")
    fig.update_layout(title={"text": _esc(title or "Logit lens across layers")}, xaxis_title="layer", height=380)
    return fig
