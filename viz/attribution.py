"""Prompt-attribution figures: token/word heatmaps (base / unlearned / difference) and the answer x prompt matrix.

Scores are drawn on diverging colour maps centred at zero (red = the token raises the answer's
log-probability, blue = lowers it); the difference panel (unlearned - base) has its own diverging map.
Key tokens (by default the example's ``keywords``) get a black frame. Long prompts wrap onto several lines
of ``wrap`` cells, so the figure stays readable.

Example:
    >>> from viz.attribution import token_heatmap_plotly
    >>> fig = token_heatmap_plotly(attr_base, attr_unlearned)   # doctest: +SKIP
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from viz._common import (
    MPL_DIFF,
    MPL_DIVERGING,
    PLOTLY_DIFF,
    PLOTLY_DIVERGING,
    VizInputError,
    attribution_units,
    first_attr,
    key_indices,
    symmetric_limit,
    to_shares,
    visible,
    wrap_grid,
)

logger = logging.getLogger(__name__)

__all__ = ["token_heatmap", "token_heatmap_plotly", "attribution_matrix", "attribution_matrix_plotly"]

Level = Literal["word", "token"]
Values = Literal["raw", "share"]


def _panels(
    base: Any, unlearned: Any | None, level: str, values: str, labels: Sequence[str] | None
) -> tuple[list[str], list[tuple[str, np.ndarray]], bool]:
    """(labels, [(panel title, scores (n,))], has_diff)."""
    if values not in ("raw", "share"):
        raise VizInputError(f"values must be 'raw' or 'share', got {values!r}")
    if unlearned is None and getattr(base, "word_before", None) is not None:
        return _diff_panels(base, level, values, labels)
    b_labels, b = attribution_units(base, level)
    if values == "share":
        b = to_shares(b)
    names = list(labels) if labels is not None else ["base", "unlearned"]
    panels = [(names[0], b)]
    if unlearned is None:
        return b_labels, panels, False
    u_labels, u = attribution_units(unlearned, level)
    if len(u_labels) != len(b_labels):
        raise VizInputError(
            f"base has {len(b_labels)} {level}s but unlearned has {len(u_labels)}: compare attributions of the "
            "same prompt made with the same tokenizer"
        )
    if values == "share":
        u = to_shares(u)
    panels += [(names[1], u), (f"{names[1]} \u2212 {names[0]}", u - b)]
    return b_labels, panels, True


def _diff_panels(
    diff: Any, level: str, values: str, labels: Sequence[str] | None
) -> tuple[list[str], list[tuple[str, np.ndarray]], bool]:
    """Panels from an ``AttributionDiff`` (``word_before``/``word_after`` or ``token_before``/``token_after``)."""
    prefix = "word" if level == "word" else "token"
    words = [visible(t) for t in first_attr(diff, (f"{prefix}s",), what=f"a {level}-level heatmap")]
    b = np.asarray(first_attr(diff, (f"{prefix}_before",), what="a diff heatmap"), dtype=float).reshape(-1)
    u = np.asarray(first_attr(diff, (f"{prefix}_after",), what="a diff heatmap"), dtype=float).reshape(-1)
    if values == "share":
        b, u = to_shares(b), to_shares(u)
    if not len(words) == b.shape[0] == u.shape[0]:
        raise VizInputError(f"diff has {len(words)} {level}s but {b.shape[0]}/{u.shape[0]} scores")
    names = list(labels) if labels is not None else ["base", "unlearned"]
    return words, [(names[0], b), (names[1], u), (f"{names[1]} \u2212 {names[0]}", u - b)], True


def _default_title(base: Any, values: str) -> str:
    example = getattr(base, "example", None)
    prompt = getattr(example, "prompt", None)
    answer = getattr(example, "answer", None)
    what = "attribution share" if values == "share" else "attribution"
    if prompt is None:
        return f"Prompt {what}"
    return f"Prompt {what} for answer {answer!r}"


def token_heatmap(
    base: Any,
    unlearned: Any | None = None,
    *,
    level: Level = "word",
    key: Iterable[int | str] | None = None,
    values: Values = "raw",
    wrap: int = 14,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """Matplotlib heatmap of prompt attributions: base, unlearned and their difference, key tokens framed.

    Args:
        base: An ``Attribution`` (needs ``words``/``word_scores`` or ``tokens``/``token_scores``).
        unlearned: The same prompt's ``Attribution`` on the unlearned model, or None for a single panel.
        level: Draw "word"s (default) or "token"s.
        key: Key tokens to frame: indices at ``level`` or words; default ``base.example.keywords``.
        values: "raw" scores, or "share" (each model's scores divided by their absolute sum).
        wrap: Cells per line; longer prompts wrap.
        labels: Names of the two models (default ``("base", "unlearned")``).
        title: Figure title (default names the answer).

    Returns:
        ``matplotlib.figure.Figure`` with one row block per panel and a colour bar per panel.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    words, panels, has_diff = _panels(base, unlearned, level, values, labels)
    keys = key_indices(base, level, key)
    grids = [(name, *wrap_grid(words, s, wrap)) for name, s in panels]
    n_lines = grids[0][1].shape[0]
    width = grids[0][1].shape[1]
    lim = symmetric_limit(*[s for _, s in panels[:2]])
    dlim = symmetric_limit(panels[2][1]) if has_diff else 1.0
    fig = Figure(
        figsize=(max(7.0, 0.95 * width + 2.0), 0.9 + len(grids) * (0.55 * n_lines + 0.55)), layout="constrained"
    )
    axes = fig.subplots(len(grids), 1, squeeze=False)[:, 0]
    for i, (ax, (name, grid, text)) in enumerate(zip(axes, grids)):
        is_diff = has_diff and i == 2
        im = ax.imshow(
            np.ma.masked_invalid(grid),
            cmap=MPL_DIFF if is_diff else MPL_DIVERGING,
            vmin=-(dlim if is_diff else lim),
            vmax=dlim if is_diff else lim,
            aspect="auto",
        )
        for r in range(grid.shape[0]):
            for c in range(grid.shape[1]):
                label = text[r][c]
                if not label:
                    continue
                shown = label if len(label) <= 12 else label[:11] + "\u2026"
                dark = abs(grid[r, c]) > 0.6 * (dlim if is_diff else lim)
                ax.text(
                    c,
                    r,
                    shown,
                    ha="center",
                    va="center",
                    fontsize=8,
                    family="monospace",
                    color="white" if dark else "black",
                    parse_math=False,
                )
                if r * width + c in keys:
                    ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.2))
        ax.set_xticks([])
        ax.set_yticks(range(grid.shape[0]))
        ax.set_yticklabels([f"{r * width}" for r in range(grid.shape[0])], fontsize=7)
        ax.set_ylabel(f"{level} #", fontsize=8)
        ax.set_title(name, fontsize=10, loc="left")
        cb = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
        cb.set_label("difference" if is_diff else ("share" if values == "share" else "score"), fontsize=8)
    fig.suptitle(
        _mpl_safe(title or _default_title(base, values) + ("  (framed: key tokens)" if keys else "")), fontsize=11
    )
    return fig


def _mpl_safe(s: str) -> str:
    """Text for matplotlib tick labels: ``$`` escaped so a token never triggers math rendering."""
    return str(s).replace("$", r"\$")


def _esc(s: str) -> str:
    """Escape for plotly text (plotly renders a small HTML subset; entities are decoded, tags are not run)."""
    return html.escape(str(s), quote=False)


def token_heatmap_plotly(
    base: Any,
    unlearned: Any | None = None,
    *,
    level: Level = "word",
    key: Iterable[int | str] | None = None,
    values: Values = "raw",
    wrap: int = 14,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """Plotly version of :func:`token_heatmap` (hover shows the exact score); same arguments.

    Returns:
        ``plotly.graph_objects.Figure`` with one heatmap row block per panel, colour bars centred at zero.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    words, panels, has_diff = _panels(base, unlearned, level, values, labels)
    keys = key_indices(base, level, key)
    n = len(panels)
    fig = make_subplots(
        rows=n, cols=1, subplot_titles=[_esc(name) for name, _ in panels], vertical_spacing=0.12 / max(n - 1, 1)
    )
    lim = symmetric_limit(*[s for _, s in panels[:2]])
    dlim = symmetric_limit(panels[2][1]) if has_diff else 1.0
    n_lines = 1
    for i, (name, scores) in enumerate(panels):
        grid, text = wrap_grid(words, scores, wrap)
        n_lines, width = grid.shape
        is_diff = has_diff and i == 2
        z_lim = dlim if is_diff else lim
        esc_text = [[_esc(t) for t in line] for line in text]
        # colour bar next to its own panel (domain of subplot i)
        top = 1 - i / n
        fig.add_trace(
            go.Heatmap(
                z=grid,
                text=esc_text,
                texttemplate="%{text}",
                textfont={"size": 11},
                hovertemplate="%{text}<br>score %{z:.4g}<extra>" + _esc(name) + "</extra>",
                colorscale=PLOTLY_DIFF if is_diff else PLOTLY_DIVERGING,
                zmin=-z_lim,
                zmax=z_lim,
                zmid=0,
                xgap=2,
                ygap=2,
                colorbar={
                    "len": 0.8 / n,
                    "y": top - 0.5 / n,
                    "yanchor": "middle",
                    "title": {"text": "diff" if is_diff else ("share" if values == "share" else "score")},
                },
            ),
            row=i + 1,
            col=1,
        )
        for k in keys:
            r, c = divmod(k, width)
            if r < n_lines:
                fig.add_shape(
                    type="rect",
                    x0=c - 0.5,
                    x1=c + 0.5,
                    y0=r - 0.5,
                    y1=r + 0.5,
                    line={"color": "black", "width": 3},
                    row=i + 1,
                    col=1,
                )
        fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, row=i + 1, col=1)
        fig.update_yaxes(
            autorange="reversed",
            showgrid=False,
            zeroline=False,
            title_text=f"{level} line",
            tickvals=list(range(n_lines)),
            ticktext=[str(r * width) for r in range(n_lines)],
            row=i + 1,
            col=1,
        )
    heading = title or _default_title(base, values) + ("  (framed: key tokens)" if keys else "")
    fig.update_layout(
        title={"text": _esc(heading)},
        height=140 + n * (60 + 38 * n_lines),
        margin={"l": 60, "r": 40, "t": 80, "b": 20},
        plot_bgcolor="white",
    )
    return fig


def _matrix(attr: Any) -> tuple[np.ndarray, list[str], list[str]]:
    m = np.asarray(
        first_attr(attr, ("matrix",), what="the answer x prompt matrix (compute with per_answer_token=True)"),
        dtype=float,
    )
    if m.ndim != 2:
        raise VizInputError(f"matrix must be 2-D (answer tokens x prompt tokens), got shape {m.shape}")
    prompt = [visible(t) for t in (getattr(attr, "tokens", None) or [f"p{j}" for j in range(m.shape[1])])]
    answer = getattr(attr, "answer_tokens", None)
    answer = (
        [visible(t) for t in answer]
        if answer is not None and len(answer) == m.shape[0]
        else [f"a{i}" for i in range(m.shape[0])]
    )
    if len(prompt) != m.shape[1]:
        prompt = [f"p{j}" for j in range(m.shape[1])]
    return m, answer, prompt


def attribution_matrix(attr: Any, *, title: str | None = None) -> Any:
    """Matplotlib heatmap of the answer-token x prompt-token attribution matrix.

    Args:
        attr: An ``Attribution`` computed with ``per_answer_token=True`` (``matrix`` of shape ``(n_answer, n_prompt)``).
        title: Figure title.

    Returns:
        ``matplotlib.figure.Figure``: rows = answer tokens, columns = prompt tokens, diverging colours centred at 0.
    """
    from matplotlib.figure import Figure

    m, answer, prompt = _matrix(attr)
    lim = symmetric_limit(m)
    fig = Figure(figsize=(max(6.0, 0.38 * len(prompt) + 2.5), max(2.5, 0.4 * len(answer) + 2.0)), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(m, cmap=MPL_DIVERGING, vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(prompt)))
    ax.set_xticklabels([_mpl_safe(t) for t in prompt], rotation=90, fontsize=8, family="monospace")
    ax.set_yticks(range(len(answer)))
    ax.set_yticklabels([_mpl_safe(t) for t in answer], fontsize=8, family="monospace")
    ax.set_xlabel("prompt token")
    ax.set_ylabel("answer token")
    ax.set_title(_mpl_safe(title or "Attribution of each answer token to each prompt token"), fontsize=10)
    fig.colorbar(im, ax=ax, label="score")
    return fig


def attribution_matrix_plotly(attr: Any, *, title: str | None = None) -> Any:
    """Plotly version of :func:`attribution_matrix`.

    Returns:
        ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    m, answer, prompt = _matrix(attr)
    lim = symmetric_limit(m)
    xs = [f"{j}:{_esc(t)}" for j, t in enumerate(prompt)]
    ys = [f"{i}:{_esc(t)}" for i, t in enumerate(answer)]
    fig = go.Figure(
        go.Heatmap(
            z=m,
            x=xs,
            y=ys,
            colorscale=PLOTLY_DIVERGING,
            zmin=-lim,
            zmax=lim,
            zmid=0,
            colorbar={"title": {"text": "score"}},
            hovertemplate="answer %{y}<br>prompt %{x}<br>score %{z:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": _esc(title or "Attribution of each answer token to each prompt token")},
        xaxis_title="prompt token",
        yaxis_title="answer token",
        height=260 + 22 * len(answer),
    )
    fig.update_yaxes(autorange="reversed")
    return fig
