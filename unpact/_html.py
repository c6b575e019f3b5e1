"""Tiny, dependency-free HTML snippets for results' ``_repr_html_`` (Jupyter rich display).

``unpact`` never imports the plotting package ``viz``; result classes that want to render
themselves in a notebook call these helpers instead. Every user-supplied string (tokens, prompts,
answers, column names) goes through :func:`html.escape`, so a prompt containing ``<script>`` is shown
as text and never executed.

Example:
    >>> from unpact._html import tokens_html
    >>> html = tokens_html(["Who", " is", " <b>"], [0.5, -0.1, 0.0], key=[0])
    >>> "&lt;b&gt;" in html
    True
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["escape", "score_color", "tokens_html", "table_html", "result_html"]

# Positive scores are red, negative blue (the same diverging convention as the viz package).
_POS_RGB = (214, 39, 40)
_NEG_RGB = (31, 119, 180)


def escape(value: Any) -> str:
    """``html.escape(str(value), quote=True)``: safe inside element text and quoted attributes."""
    return html.escape(str(value), quote=True)


def score_color(score: float, vmax: float) -> str:
    """Background colour for ``score`` on a diverging scale centred at zero.

    Args:
        score: The value to colour (any finite float; NaN is drawn transparent).
        vmax: The absolute value that maps to full colour (> 0; values beyond it are clipped).

    Returns:
        A CSS ``rgba(...)`` colour: red for positive, blue for negative, alpha proportional to ``|score| / vmax``.
    """
    if not math.isfinite(score) or vmax <= 0:
        return "rgba(0,0,0,0)"
    alpha = min(abs(score) / vmax, 1.0)
    r, g, b = _POS_RGB if score >= 0 else _NEG_RGB
    return f"rgba({r},{g},{b},{alpha:.3f})"


def _visible(token: str) -> str:
    """Token text for display: byte-level BPE space markers shown as spaces, newlines as a symbol."""
    return token.replace("\u0120", " ").replace("\u010a", "\u21b5").replace("\n", "\u21b5")


def tokens_html(
    tokens: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    *,
    key: Iterable[int] = (),
    title: str | None = None,
    vmax: float | None = None,
) -> str:
    """Tokens as coloured inline boxes (red = positive score, blue = negative), key tokens underlined.

    Args:
        tokens: Token (or word) strings, length ``n``.
        scores: One score per token, shape ``(n,)``.
        key: Indices of key tokens (drawn with a thick underline and bold).
        title: Optional caption shown above the tokens.
        vmax: Colour-scale maximum; default ``max(|scores|)``.

    Returns:
        An HTML fragment (a ``<div>``), all token text escaped; each box's tooltip gives the score.

    Raises:
        ValueError: If ``tokens`` and ``scores`` have different lengths.
    """
    arr = np.asarray(scores, dtype=float).reshape(-1)
    if len(tokens) != arr.shape[0]:
        raise ValueError(f"tokens_html: {len(tokens)} tokens but {arr.shape[0]} scores; pass one score per token")
    finite = arr[np.isfinite(arr)]
    scale = float(vmax) if vmax is not None else (float(np.abs(finite).max()) if finite.size else 0.0)
    keys = set(int(i) for i in key)
    parts = ['<div class="unpact-tokens" style="line-height:2.1;font-family:monospace;white-space:normal">']
    if title:
        parts.append(f'<div style="font-weight:bold;font-family:sans-serif">{escape(title)}</div>')
    for i, (tok, s) in enumerate(zip(tokens, arr)):
        style = (
            f"background:{score_color(float(s), scale)};padding:1px 2px;margin:0 1px;border-radius:3px;white-space:pre"
        )
        if i in keys:
            style += ";border-bottom:3px solid #111;font-weight:bold"
        parts.append(f'<span style="{style}" title="{escape(f"{s:+.4g}")}">{escape(_visible(str(tok)))}</span>')
    parts.append("</div>")
    return "".join(parts)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return escape(f"{value:.4g}") if math.isfinite(value) else escape(str(value))
    if isinstance(value, (list, tuple)):
        return escape(", ".join(str(v) for v in value))
    return escape(value)


def table_html(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *, caption: str | None = None
) -> str:
    """A plain HTML table from a list of dicts (floats shown to 4 significant digits), escaped.

    Args:
        rows: One mapping per row.
        columns: Column order; default: keys in first-seen order over all rows.
        caption: Optional table caption.

    Returns:
        An HTML ``<table>`` fragment.
    """
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            for k in row:
                seen.setdefault(str(k), None)
        columns = list(seen)
    out = ['<table class="unpact-table" style="border-collapse:collapse">']
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    out.append(
        "<thead><tr>" + "".join(f'<th style="text-align:left;padding:2px 8px">{escape(c)}</th>' for c in columns)
    )
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append(
            "<tr>" + "".join(f'<td style="padding:2px 8px">{_cell(row.get(c, ""))}</td>' for c in columns) + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def result_html(title: str, fields: Mapping[str, Any], body: str = "") -> str:
    """A small card for a result object: a title, ``name: value`` fields (escaped) and an HTML ``body``.

    Args:
        title: Heading (e.g. the class name).
        fields: Short facts to list (model, method, example id, ...); values are escaped.
        body: Already-safe HTML (e.g. from :func:`tokens_html`) appended below.

    Returns:
        An HTML fragment.
    """
    items = "".join(f"<li><b>{escape(k)}</b>: {_cell(v)}</li>" for k, v in fields.items())
    return (
        f'<div class="unpact-result" style="font-family:sans-serif"><div style="font-weight:bold">{escape(title)}</div>'
        f'<ul style="margin:2px 0 6px 0">{items}</ul>{body}</div>'
    )
