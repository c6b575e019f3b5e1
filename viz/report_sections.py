"""Report sections for the weight and representation levels (kept out of :mod:`viz.report` to keep it small)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unpact._html import table_html
from unpact.audit.auditdir import AuditDir
from unpact.audit.summary import AuditSummary

__all__ = ["probes_html", "directions_html", "soft_prompt_html", "diff_attacks_html", "weights_html"]


def probes_html(page: Any, summary: AuditSummary) -> str:
    """Probe rank accuracy per layer for every model (figure) and at each model's chosen layer (table).

    Args:
        page: The report page (its ``fig`` embeds a plotly figure).
        summary: The audit summary; each model's ``sections["probes"]`` (written by the evidence stage).

    Returns:
        HTML: the explanation, the figure and the table (every string escaped by ``table_html``).
    """
    from viz.representations import probe_layers_plotly

    rows = {n: m.sections["probes"] for n, m in summary.models.items() if "probes" in m.sections}
    chance = next(iter(rows.values()))["chance"] if rows else None
    table = []
    for key, where in (("probes", "last prompt token"), ("probes_subject", "subject's last token")):
        for n, m in summary.models.items():
            r = m.sections.get(key)
            if not r:
                continue
            table.append(
                {
                    "model": n,
                    "read at": where,
                    "layer (chosen on retain people)": r["layers"][r["layer"]],
                    "forget items": r["n_items"],
                    "rank accuracy [95% CI]": "{:.0%} [{:.0%}, {:.0%}]".format(
                        r["accuracy"][r["layer"]], r["lo"][r["layer"]], r["hi"][r["layer"]]
                    ),
                    "shuffled-label probe": f"{r['shuffled'][r['layer']]:.0%}",
                    "chance": f"{r['chance']:.0%}",
                }
            )
    return (
        "<p class='meta'>A probe per layer, fit on retain people, ranks the first token of each base-known forget "
        "item's answer among its attribute's; the share ranked first is shown with its 95% interval clustered by "
        "fact. The retain-only model is the floor (what can be guessed about people never seen); the dotted lines "
        "are the same probes fit on shuffled labels (the figure: at the last prompt token). The white-box <i>probe</i> "
        "test compares each model's forgotten items with the floor's; <i>probe (subject token)</i> does the same at "
        "the last token of the person's name (exploratory).</p>"
        + page.fig(probe_layers_plotly(rows, chance=chance))
        + table_html(table)
    )


def _area_text(r: Mapping[str, Any]) -> str:
    ci = r.get("area_between_ci")
    return f"{r['area_between']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def _step_text(r: Mapping[str, Any], who: str) -> str:
    """``"8 [4, never]"``: the first step reaching 50% and its interval (``None``: not within the steps)."""
    name = lambda s: "never" if s is None else str(s)
    text = name(r["first_step_reaching_half"][who])
    ci = (r.get("first_step_reaching_half_ci") or {}).get(who)
    return text + (f" [{name(ci[0])}, {name(ci[1])}]" if ci else "")


def directions_html(summary: AuditSummary) -> str:
    """The unlearning direction per unlearned model: how much of the change it carries, and what undoing it does.

    Args:
        summary: The audit summary; each model's ``sections["directions"]`` (written by the evidence stage).

    Returns:
        HTML: the explanation and one table (every string escaped by ``table_html``).
    """
    pct = lambda x: "n/a" if x is None else f"{x:.0%}"
    rows = []
    for n, m in summary.models.items():
        r = m.sections.get("directions")
        if not r:
            continue
        acc = r["accuracy_on_forgotten"]
        rows.append(
            {
                "model": n,
                "forgotten half-B items": r["n_forgotten"],
                "share of the change along the direction, per block": " / ".join(pct(x) for x in r["share_explained"]),
                "ablate: forget / retain / random direction": " / ".join(
                    pct(acc.get(f"ablate/{s}")) for s in ("forget", "retain", "random")
                ),
                "add back: forget / retain / random": " / ".join(
                    pct(acc.get(f"add/{s}")) for s in ("forget", "retain", "random")
                ),
            }
        )
    return (
        "<p class='meta'>Per block, the mean activation change (unlearned minus base) at the last prompt token on "
        "half A of the forget people gives a direction; with hooks it is projected out of every block's output "
        "(ablate) or the mean change is subtracted (add back), and the share of half B's forgotten items answered "
        "right is shown, next to the same done with the direction estimated on retain prompts and with a random "
        "one (the controls).</p>" + table_html(rows)
    )


def soft_prompt_html(summary: AuditSummary) -> str:
    """The soft-prompt attack per model: half-B accuracy without and with the learned prompt, and its control.

    Args:
        summary: The audit summary; each model's ``sections["soft_prompt"]`` (written by the evidence stage).

    Returns:
        HTML: the explanation and one table (every string escaped by ``table_html``).
    """
    pct = lambda x: "n/a" if x is None else f"{x:.0%}"
    rows = []
    for n, m in summary.models.items():
        r = m.sections.get("soft_prompt")
        if not r:
            continue
        acc, on = r["accuracy"], r["accuracy_on_forgotten"]
        rows.append(
            {
                "model": n,
                "half-B items (forgotten)": f"{r['n_items']} ({r['n_forgotten']})",
                "accuracy: as is / with the soft prompt": f"{pct(acc.get('none'))} / {pct(acc.get('soft'))}",
                "on its forgotten items": f"{pct(on.get('none'))} / {pct(on.get('soft'))}",
                "gold log-prob: as is / with it": " / ".join(f"{r['logprob'][k]:.2f}" for k in ("none", "soft")),
                "steps kept (of)": f"{r['best_step']} ({r['steps']})",
            }
        )
    return (
        "<p class='meta'>A few input embeddings, learned with the weights frozen to raise the gold answers of half "
        "A of the forget people (stopped at the best loss on held-out training people), are put before each "
        "question of half B. The retain-only model gets its own soft prompt, learned the same way: it never saw "
        "the facts, so what it gains is the answer format and priors. The white-box test <i>soft prompt</i> "
        "compares the two on each model's forgotten items.</p>" + table_html(rows)
    )


def diff_attacks_html(summary: AuditSummary) -> str:
    """The circuit- and lens-diff attacks per model: what was chosen on half A, half-B accuracy under each.

    Args:
        summary: The audit summary; each model's ``sections["diff_attacks"]`` (written by the evidence stage).

    Returns:
        HTML: the explanation and one table (every string escaped by ``table_html``).
    """
    pct = lambda x: "n/a" if x is None else f"{x:.0%}"
    rows = []
    for n, m in summary.models.items():
        r = m.sections.get("diff_attacks")
        if not r:
            continue
        on = r["accuracy_on_forgotten"]
        rows.append(
            {
                "model": n,
                "half-B items (forgotten)": f"{r['n_items']} ({r['n_forgotten']})",
                "heads amplified (share drop)": ", ".join(
                    f"{h} ({d:+.3f})" for h, d in zip(r["heads"], r["share_drop"])
                )
                or "none",
                "lens row": r["layer"],
                "on its forgotten items: as is / circuit / lens": " / ".join(
                    pct(on.get(k)) for k in ("none", "circuit", "lens")
                ),
            }
        )
    return (
        "<p class='meta'>Chosen on half A of the forget people, scored on half B, with hooks. <i>Circuit</i>: the "
        "attention heads whose share of the gold answer's edge attribution fell most from the base model are "
        "amplified (x2). <i>Lens</i>: at the logit-lens layer where the model falls furthest behind the base, the "
        "model's change in the forget-vs-retain contrast (its forget-minus-retain mean activation minus the base's) "
        "is subtracted. The retain-only model, treated as if unlearned, is the control of both.</p>" + table_html(rows)
    )


def weights_html(page: Any, d: AuditDir, summary: AuditSummary) -> str:
    """Relearning curves (each model vs the retain-only control) and quantization bars, from ``weights/``.

    Args:
        page: The report page (its ``fig`` embeds a plotly figure).
        d: The audit's output directory.
        summary: The audit summary (each model's ``sections["relearn"]``).

    Returns:
        HTML: the figures and the relearning summary tables (strings escaped by ``table_html``).
    """
    from unpact.audit.auditdir import BASE, RETAIN_ONLY
    from unpact.audit.stages.weights import QuantEval
    from unpact.weights.quantization import DEFAULT_SCHEMES
    from unpact.weights.relearning import RelearnCurve
    from viz.weights import quantization_bars_plotly, relearn_curves_plotly

    out = []
    for name in summary.models:
        if name in (BASE, RETAIN_ONLY):
            continue
        curves: dict[str, Any] = {}
        for train_set in ("forget_a", "retain", "unrelated", "forget_b"):
            mine, ctl = d.weights_path(name, "relearn", train_set), d.weights_path(RETAIN_ONLY, "relearn", train_set)
            if mine.exists() and ctl.exists():
                a, c = RelearnCurve.load(mine), RelearnCurve.load(ctl)
                if a.eval_ids:
                    curves[train_set] = (a.steps, a.accuracy().tolist(), c.accuracy().tolist())
        if curves:
            out.append(
                page.fig(relearn_curves_plotly(curves, model=name, control=RETAIN_ONLY, title=f"Relearning: {name}"))
            )
        relearn_rows = summary.models[name].sections.get("relearn") or {}
        if relearn_rows:
            out.append(
                table_html(
                    [
                        {
                            "fine-tuned on": ts,
                            "half-B items": r["n_items"],
                            "area between curves [95% CI]": _area_text(r),
                            "first step >= 50%: model [CI] / control [CI]": " / ".join(
                                _step_text(r, who) for who in ("model", "control")
                            ),
                        }
                        for ts, r in relearn_rows.items()
                    ]
                )
            )
    rows = []
    for name in summary.models:
        for scheme in DEFAULT_SCHEMES:
            path = d.weights_path(name, "quantize", scheme.name())
            if path.exists():
                q = QuantEval.load(path)
                if len(q.forget_correct):
                    rows.append({"model": name, "scheme": q.scheme, "forget_accuracy": float(q.forget_correct.mean())})
    if rows:
        out.append(page.fig(quantization_bars_plotly(rows)))
    return "".join(out) or "<p class='meta'>No weight-level results were saved.</p>"
