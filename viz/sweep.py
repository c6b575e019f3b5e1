"""Unlearning-strength sweeps: the trade-off (forget vs validation retain accuracy) and recovery against strength.

Each function takes a :class:`unpact.sweep.SweepResult` (or its ``sweep.json`` dict) and returns a figure
(matplotlib for the plain names, plotly for ``*_plotly``); nothing is shown. :func:`save_sweep_plots`
writes the matplotlib versions as PNG files into the sweep's directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "tradeoff_plot",
    "tradeoff_plot_plotly",
    "recovery_vs_strength",
    "recovery_vs_strength_plotly",
    "pareto_front",
    "save_sweep_plots",
]

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _result(result: Any) -> Any:
    from unpact.sweep import SweepResult

    return SweepResult.from_dict(result) if isinstance(result, Mapping) else result


def _by_method(res: Any, seed: int | None) -> dict[str, list[Any]]:
    seed = res.seeds[0] if seed is None else seed
    out: dict[str, list[Any]] = {}
    for p in res.points:
        if p.seed == seed:
            out.setdefault(p.method, []).append(p)
    return {m: sorted(ps, key=lambda p: p.strength) for m, ps in out.items()}


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated ``(utility, forget accuracy)`` pairs (none has more utility and less forget accuracy).

    Args:
        points: ``(validation retain accuracy, forget accuracy)`` pairs.

    Returns:
        The front, by increasing utility.
    """
    front = [
        p for p in points if not any(q[0] >= p[0] and q[1] <= p[1] and (q[0] > p[0] or q[1] < p[1]) for q in points)
    ]
    return sorted(set(front))


def _chosen(res: Any, seed: int | None) -> set[str]:
    seed = res.seeds[0] if seed is None else seed
    return {c.point for c in res.choices if c.seed == seed and c.point}


def tradeoff_plot(result: Any, *, seed: int | None = None, title: str | None = None) -> Any:
    """Forget accuracy against validation retain accuracy, one line per method in strength order (matplotlib).

    The chosen (utility-matched) points are stars, the band's threshold a dotted vertical line, the
    Pareto front over every method's points a grey step line (down and right is better: less forget
    accuracy, more utility).

    Args:
        result: A :class:`unpact.sweep.SweepResult` or its dict.
        seed: Which seed's points (default the first).
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    res = _result(result)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    chosen = _chosen(res, seed)
    all_pts = []
    for i, (method, pts) in enumerate(_by_method(res, seed).items()):
        c = _PALETTE[i % len(_PALETTE)]
        xs = [100 * p.validation.rate for p in pts]
        ys = [100 * p.forget_acc.rate for p in pts]
        all_pts += list(zip(xs, ys))
        ax.plot(xs, ys, "o-", color=c, label=method, ms=4, lw=1.2)
        for p, x, y in zip(pts, xs, ys):
            ax.annotate(f"{p.strength:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7, color=c)
            if p.name in chosen:
                ax.plot([x], [y], "*", color=c, ms=14, mec="black", mew=0.6, zorder=5)
    front = pareto_front(all_pts)
    if len(front) > 1:
        ax.step([x for x, _ in front], [y for _, y in front], where="post", color="0.6", lw=2, alpha=0.5, zorder=0)
    thr = 100 * res.band * res.base_validation.rate
    ax.axvline(thr, color="0.3", ls=":", lw=1)
    ax.axvline(100 * res.base_validation.rate, color="0.3", ls="-", lw=0.8)
    ax.text(thr, ax.get_ylim()[1], f" band {res.band:g} x base", fontsize=7, va="top", ha="right", rotation=90)
    ax.set_xlabel("validation retain accuracy (%)  (utility; base: solid line)")
    ax.set_ylabel("forget accuracy (%)")
    ax.set_title(title or "Unlearning trade-off (numbers: strength; stars: utility-matched)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def tradeoff_plot_plotly(result: Any, *, seed: int | None = None, title: str | None = None) -> Any:
    """Plotly version of :func:`tradeoff_plot` (hover: point, strength, accuracies, verdict)."""
    import plotly.graph_objects as go

    res = _result(result)
    chosen = _chosen(res, seed)
    fig = go.Figure()
    for i, (method, pts) in enumerate(_by_method(res, seed).items()):
        c = _PALETTE[i % len(_PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=[100 * p.validation.rate for p in pts],
                y=[100 * p.forget_acc.rate for p in pts],
                mode="lines+markers+text",
                text=[f"{p.strength:g}" for p in pts],
                textposition="top right",
                name=method,
                line={"color": c},
                marker={
                    "size": [16 if p.name in chosen else 7 for p in pts],
                    "symbol": ["star" if p.name in chosen else "circle" for p in pts],
                },
                customdata=[[p.name, p.verdict or "-"] for p in pts],
                hovertemplate="%{customdata[0]}<br>validation retain %{x:.1f}%<br>forget %{y:.1f}%"
                "<br>verdict %{customdata[1]}<extra></extra>",
            )
        )
    thr = 100 * res.band * res.base_validation.rate
    fig.add_vline(x=thr, line_dash="dot", annotation_text=f"band {res.band:g} x base")
    fig.update_layout(
        title=title or "Unlearning trade-off (stars: utility-matched points)",
        xaxis_title="validation retain accuracy (%)",
        yaxis_title="forget accuracy (%)",
        template="plotly_white",
    )
    return fig


def recovery_vs_strength(result: Any, *, seed: int | None = None, title: str | None = None) -> Any:
    """Recovery by any attack (95% CI) against strength, one panel per method, the retain-only control dashed.

    Args:
        result: A :class:`unpact.sweep.SweepResult` or its dict.
        seed: Which seed's points (default the first).
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    res = _result(result)
    groups = _by_method(res, seed)
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(3.2 * max(1, len(groups)), 3.4), squeeze=False)
    chosen = _chosen(res, seed)
    for i, (ax, (method, pts)) in enumerate(zip(axes[0], groups.items())):
        c = _PALETTE[i % len(_PALETTE)]
        have = [p for p in pts if p.recovery.value is not None]
        xs = [p.strength for p in have]
        y = [100 * p.recovery.rate for p in have]
        lo = [100 * (p.recovery.rate - p.recovery.lo) for p in have]
        hi = [100 * (p.recovery.hi - p.recovery.rate) for p in have]
        ax.errorbar(xs, y, yerr=[lo, hi], fmt="o-", color=c, ms=4, capsize=2, label="model")
        ctl = [p for p in have if p.control.value is not None]
        if ctl:
            cx = [p.strength for p in ctl]
            ax.plot(cx, [100 * p.control.rate for p in ctl], "--", color="0.4", label="retain-only control")
            ax.fill_between(cx, [100 * p.control.lo for p in ctl], [100 * p.control.hi for p in ctl], color="0.8")
        for p in have:
            if p.name in chosen:
                ax.plot([p.strength], [100 * p.recovery.rate], "*", color=c, ms=14, mec="black", mew=0.6)
        kind = pts[0].kind if pts else "steps"
        ax.set_xlabel("alpha" if kind == "alpha" else "unlearning steps")
        ax.set_title(method, fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("forgotten items recovered (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or "Recovery by any attack against unlearning strength (star: matched point)", fontsize=10)
    fig.tight_layout()
    return fig


def recovery_vs_strength_plotly(result: Any, *, seed: int | None = None, title: str | None = None) -> Any:
    """Plotly version of :func:`recovery_vs_strength` (all methods on one axis of relative strength rank)."""
    import plotly.graph_objects as go

    res = _result(result)
    fig = go.Figure()
    for i, (method, pts) in enumerate(_by_method(res, seed).items()):
        have = [p for p in pts if p.recovery.value is not None]
        c = _PALETTE[i % len(_PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=[p.strength for p in have],
                y=[100 * p.recovery.rate for p in have],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [100 * (p.recovery.hi - p.recovery.rate) for p in have],
                    "arrayminus": [100 * (p.recovery.rate - p.recovery.lo) for p in have],
                },
                mode="lines+markers",
                name=method,
                line={"color": c},
            )
        )
        ctl = [p for p in have if p.control.value is not None]
        fig.add_trace(
            go.Scatter(
                x=[p.strength for p in ctl],
                y=[100 * p.control.rate for p in ctl],
                mode="lines",
                name=f"{method}: retain-only control",
                line={"color": c, "dash": "dash", "width": 1},
            )
        )
    fig.update_layout(
        title=title or "Recovery by any attack against unlearning strength (95% CI)",
        xaxis_title="strength (steps; task_vector: alpha)",
        yaxis_title="forgotten items recovered (%)",
        template="plotly_white",
        yaxis_range=[0, 100],
    )
    return fig


def save_sweep_plots(result: Any, out: str | Path) -> list[Path]:
    """Write the trade-off and recovery plots (PNG) into the sweep directory ``out``.

    Returns:
        The files written (``tradeoff.png``, ``recovery_vs_strength.png``; :class:`unpact.audit.AuditDir`).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from unpact.audit.auditdir import AuditDir

    d = AuditDir(out)
    paths = []
    for name, fn in (("tradeoff", tradeoff_plot), ("recovery_vs_strength", recovery_vs_strength)):
        fig = fn(result)
        path = d.plot_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
