"""Figures of the docs site, drawn when the site is built: nothing in ``docs/img`` is drawn by hand.

Two sources: the committed demo audit (``docs/results/demo``: recovery per attack, the dilemma plot, the sweep's
trade-off, relearning curves, probes per layer) and the micro toy world, measured on the spot (attribution heatmaps,
the logit-lens grid and the circuit graph, base vs NPO+GD). Each figure is a ``viz`` function's matplotlib output.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tables import DEMO


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def demo_figures(out: Path) -> list[Path]:
    """Figures from the demo audit's ``summary.json`` and ``sweep.json`` into ``out``."""
    from unpact.audit.summary import AuditSummary
    from viz import dilemma_plot, probe_layers, recovery_chart, recovery_vs_strength, relearn_curves, tradeoff_plot
    from viz.report import _dilemma_rows, _recovery_entries

    raw = json.loads((DEMO / "summary.json").read_text(encoding="utf-8"))
    summary = AuditSummary.from_dict(raw, source=DEMO / "summary.json")
    sweep = json.loads((DEMO / "sweep.json").read_text(encoding="utf-8"))
    made = []
    for name, m in summary.models.items():
        if m.role != "unlearned":
            continue
        shown, _ = _recovery_entries(m)
        if shown:
            fig = recovery_chart(shown, title=f"Recovery per attack: {name}")
            made.append(_save(fig, out / f"recovery_{name}.png"))
        rel = m.sections.get("relearn") or {}
        curves = {
            ts: (r["steps"], r["model_accuracy"], r.get("control_accuracy"))
            for ts, r in rel.items()
            if isinstance(r, dict) and "steps" in r
        }
        if curves:
            fig = relearn_curves(curves, model=name, control="retain_only", title=f"Relearning: {name}")
            made.append(_save(fig, out / f"relearn_{name}.png"))
    rows = _dilemma_rows(summary)
    made.append(_save(dilemma_plot(rows), out / "dilemma.png"))
    probes = {n: m.sections["probes"] for n, m in summary.models.items() if "probes" in m.sections}
    if probes:
        chance = next(iter(probes.values())).get("chance")
        made.append(_save(probe_layers(probes, chance=chance), out / "probes.png"))
    made.append(_save(tradeoff_plot(sweep), out / "tradeoff.png"))
    made.append(_save(recovery_vs_strength(sweep), out / "recovery_vs_strength.png"))
    return made


def micro_figures(out: Path, cache_dir: str | None, log: Callable[[str], None] = print) -> list[Path]:
    """Tracer figures measured on the micro toy world: base vs NPO+GD on its first forget item."""
    from unpact import integrated_gradients, logit_lens
    from unpact.circuits import edge_attribution_patching
    from unpact.toyworld import build_toyworld
    from unpact.unlearn import unlearn
    from viz import circuit_graph, lens_grid, token_heatmap

    world = build_toyworld("micro", cache_dir=cache_dir, progress=False)
    base = world.load_base()
    log("  unlearning the micro world with npo_gd (a few seconds)")
    after = unlearn(base, world.forget, world.retain, method="npo_gd", progress=False)
    item = world.forget[:1]
    before_ig, after_ig = integrated_gradients(base, item), integrated_gradients(after, item)
    fig = token_heatmap(before_ig[0], after_ig[0], title="IG attribution: base, npo_gd, difference")
    made = [_save(fig, out / "attribution.png")]
    for tag, model in (("base", base), ("npo_gd", after)):
        made.append(_save(lens_grid(logit_lens(model, item)[0], title=f"Logit lens: {tag}"), out / f"lens_{tag}.png"))
    edges = [edge_attribution_patching(m, item[0]) for m in (base, after)]
    made.append(_save(circuit_graph(*edges, title="EAP edges: base vs npo_gd"), out / "circuit.png"))
    return made
