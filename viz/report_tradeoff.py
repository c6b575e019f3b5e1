"""Report sections for the trade-off (the strength sweep behind a matched audit) and the field's standard metrics."""

from __future__ import annotations

from typing import Any

from unpact._html import table_html
from unpact.audit.auditdir import AuditDir
from unpact.audit.summary import AuditSummary

__all__ = ["tradeoff_html", "standard_metrics_html", "metrics_agreement", "variants_html"]

#: Verdicts that say the knowledge is still in the model (recoverable or never removed).
_STILL_THERE = ("suppression", "not_unlearned", "removal_with_residue")


def tradeoff_html(page: Any, d: AuditDir, summary: AuditSummary) -> str:
    """The sweep's trade-off and recovery plots, and the point each method was audited at, with the reason.

    Args:
        page: The report page (its ``fig`` embeds a plotly figure).
        d: The audit directory (its ``sweep/sweep.json``).
        summary: The audit summary.
    """
    from unpact.sweep import SweepResult
    from viz.sweep import recovery_vs_strength_plotly, tradeoff_plot_plotly

    res = SweepResult.load(d.sweep_dir)
    points = {p.name: p for p in res.points}
    rows = []
    for c in res.choices:
        p = points.get(c.point) if c.point else None
        m = summary.models.get(c.method)
        rows.append(
            {
                "method": c.method,
                "seed": c.seed,
                "audited point": c.point or "none: not audited",
                "validation retain": "-" if p is None else f"{p.validation.rate:.1%}",
                "forget acc. (sweep)": "-" if p is None else f"{p.forget_acc.rate:.1%}",
                "verdict (full audit)": m.verdict.label if (m is not None and m.verdict is not None) else "-",
                "why this point": c.reason,
            }
        )
    return (
        "<p class='meta'>Each method was unlearned along its strength (one run per method, checkpoints at every "
        f"point; {len(res.points)} points, {res.seconds.get('total', 0):.0f} s) and every point audited cheaply "
        "(plain accuracy and the prompt attacks against the retain-only control). The audited point is the "
        f"strongest whose retain accuracy on validation facts, disjoint from the audited retain items, stays at or "
        f"above {res.band:g} x the base's ({res.base_validation.rate:.1%}), so matched points keep most of the model's "
        "utility (the verdict's destruction rule, an absolute drop on the audited retain items, is checked "
        "separately). Methods with no point in the band are not audited.</p>"
        + page.fig(tradeoff_plot_plotly(res))
        + page.fig(recovery_vs_strength_plotly(res))
        + table_html(rows)
    )


def metrics_agreement(section: dict[str, Any], verdict: str | None, alpha: float = 0.05) -> str:
    """How the standard metrics and unpact's verdict relate for one model, in a few words.

    The standard metrics "see" the forget set when TOFU's forget quality rejects the retain-only model's
    distribution (p < ``alpha``); unpact "sees" it when its verdict says the knowledge is still there
    (suppression, residue, not unlearned).
    """
    fq = (section.get("forget_quality") or {}).get("pvalue")
    if fq is None or verdict is None:
        return "-"
    metrics_see = fq < alpha
    we_see = verdict in _STILL_THERE
    if metrics_see and we_see:
        return "agree: both find the forget set still in the model"
    if not metrics_see and not we_see:
        return "agree: neither finds it"
    if we_see:
        return "differ: the attacks recover it, the forget quality does not tell it from the retrained model"
    return "differ: the forget quality tells it from the retrained model, the audit finds nothing recoverable"


def standard_metrics_html(summary: AuditSummary) -> str:
    """One row per model: model utility, truth ratio, forget quality (with n), MIA AUC and PrivLeak, the verdict."""
    rows = []
    for name, m in summary.models.items():
        s = m.sections.get("standard_metrics")
        if not s:
            continue
        fq = s.get("forget_quality")
        auc, ref = s.get("mia_auc", {}), s.get("mia_auc_reference", {})
        leak = s.get("privleak", {})

        def f(x: Any, fmt: str = "{:.3f}") -> str:
            return "-" if x is None else fmt.format(x)

        verdict = m.verdict.label if m.verdict is not None else None
        rows.append(
            {
                "model": name,
                "model utility": f(s.get("model_utility")),
                "forget truth ratio (min(R,1/R))": f(s.get("forget_truth_ratio")),
                "forget quality p (KS, n)": "-"
                if not fq
                else f"{fq['pvalue']:.2g} (D={fq['statistic']:.2f}, n={fq['n'][0]}/{fq['n'][1]})",
                "MIA AUC Min-K% (ref.)": f"{f(auc.get('min_k'))} ({f(ref.get('min_k'))})"
                if ref
                else f(auc.get("min_k")),
                "MIA AUC LOSS / zlib / Min-K%++": " / ".join(
                    f(auc.get(k)) for k in ("loss", "zlib", "min_k_plus_plus")
                ),
                "PrivLeak Min-K% (%)": f(leak.get("min_k"), "{:+.1f}"),
                "unpact verdict": verdict or "-",
                "relation": metrics_agreement(s, verdict),
            }
        )
    return (
        "<p class='meta'>The field's standard numbers (TOFU, open-unlearning, MUSE; see docs/standard_metrics.md): "
        "model utility (harmonic mean of retain answer probability, ROUGE-L and truth-ratio score), the forget "
        "truth ratio, forget quality (KS test of the forget truth ratios against the retain-only model: its p-value "
        "shrinks as n grows, and items of one person are not independent), membership-inference AUC of forget items "
        "against holdout people no model saw (the retain-only model's in brackets), and MUSE's PrivLeak (0: like the "
        "retrained model; -100: every forget item detected). The last column says where they agree with the "
        "audit's verdict.</p>" + table_html(rows)
    )


def variants_html(summary: AuditSummary) -> str:
    """Plain accuracy on the audited forget items and on each other wording of the same facts, per model."""

    def pct(d: dict[str, Any] | None) -> str:
        if not d or d.get("rate") is None:
            return "-"
        return f"{d['rate']:.1%} [{d['lo']:.0%}, {d['hi']:.0%}]"

    rows = []
    for name, m in summary.models.items():
        sec = m.sections.get("variants")
        if not sec:
            continue
        row: dict[str, Any] = {"model": name, "audited forget items": pct(m.scores.forget_acc.to_dict())}
        for split, r in sec.items():
            row[f"{split} (n={r['n']})"] = pct(r["accuracy"])
        rows.append(row)
    return (
        "<p class='meta'>Plain greedy accuracy (95% interval clustered by fact) on the audited forget items and on "
        "other wordings of the same facts: held-out phrasings (does the unlearning generalise?) and, on the toy "
        "world, the biography sentences the facts were also trained in (related-fact leakage). The retain-only "
        "row is the floor.</p>" + table_html(rows)
    )
