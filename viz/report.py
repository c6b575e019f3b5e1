"""The audit report: ONE self-contained HTML page from an audit directory.

``write_report(audit_dir)`` reads the audit directory through :class:`unpact.audit.AuditDir` (the only code
that knows its layout): the typed :class:`unpact.audit.AuditSummary` (verdicts, metrics, recovery per
attack), the per-item records and the saved tracer results (attributions, logit lens, circuit diffs), and
writes a page with the verdict, a summary table, the recovery chart, the dilemma plot, attribution
heatmaps, logit-lens grids/curves, circuit graphs and the records.

The page works offline: plotly's JavaScript is embedded inline from the installed ``plotly`` package
(no CDN, no network). Every string that comes from the audit (prompts, answers, tokens, model names, keys)
is escaped with :func:`html.escape`, so a prompt containing ``<script>`` is displayed, never executed.
A section that cannot be drawn (a malformed or unknown file) is replaced by a visible note and a log warning;
the rest of the page is still written.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from unpact._html import table_html
from unpact.audit.auditdir import BASE, AuditDir
from unpact.audit.summary import AuditSummary, ModelSummary
from unpact.errors import AuditDirError, UnpactError
from unpact.scoring import Rate
from unpact.verdict import Verdict
from viz.report_sections import diff_attacks_html, directions_html, probes_html, soft_prompt_html, weights_html
from viz.report_tradeoff import standard_metrics_html, tradeoff_html, variants_html

logger = logging.getLogger(__name__)

__all__ = ["write_report", "render_report", "ReportError"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1250px;color:#222;
     line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
h3{margin-bottom:4px}
.meta{color:#666;font-size:.9em}
.verdict{padding:14px 18px;border-radius:8px;margin:18px 0;font-size:1.1em;border:2px solid}
.verdict.suppression{background:#fff4e5;border-color:#ff9800} .verdict.removal{background:#e8f5e9;border-color:#43a047}
.verdict.other{background:#f3f3f3;border-color:#999}
.verdict b.v{font-size:1.3em;text-transform:uppercase}
table.unpact-table{font-size:.9em;margin:8px 0} table.unpact-table td, table.unpact-table th{border:1px solid #ddd}
table.unpact-table th{background:#f5f5f5;position:sticky;top:0}
.scroll{max-height:520px;overflow:auto;border:1px solid #eee}
.note{color:#a00;background:#fff0f0;padding:6px 10px;border-radius:4px}
.fig{margin:10px 0 24px 0}
ul.evidence li{margin:2px 0}
"""


class ReportError(AuditDirError):
    """The audit directory cannot be reported on (missing or unreadable ``summary.json``)."""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fig_html(fig: Any, div_id: str) -> str:
    return (
        '<div class="fig">'
        + fig.to_html(
            full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False, "responsive": True}
        )
        + "</div>"
    )


class _Page:
    """Accumulates sections; a failing section becomes a visible note instead of breaking the page."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.n_fig = 0
        self.failures: list[str] = []

    def section(self, title: str, fn: Callable[[], str]) -> None:
        try:
            body = fn()
        except Exception as exc:
            logger.warning("report section %r failed: %s", title, exc)
            self.failures.append(title)
            body = f'<p class="note">This section could not be drawn: {_esc(type(exc).__name__)}: {_esc(exc)}</p>'
        if body:
            self.parts.append(f"<h2>{_esc(title)}</h2>{body}")

    def fig(self, fig: Any) -> str:
        self.n_fig += 1
        return _fig_html(fig, f"fig{self.n_fig}")


_VERDICT_CLASS = {"suppression": "suppression", "removal": "removal"}


def _verdict_html(name: str, verdict: Verdict | None) -> str:
    if verdict is None:
        return ""
    out = (
        f'<div class="verdict {_VERDICT_CLASS.get(verdict.label, "other")}">Model <code>{_esc(name)}</code>: '
        f'<b class="v">{_esc(verdict.label)}</b><div>{_esc(verdict.reason)}</div>'
    )
    facts = []
    if verdict.evidence_attack is not None:
        facts.append(f"evidence attack: {verdict.evidence_attack}")
    facts.append(f"destructive: {verdict.destructive}")
    if verdict.retain_drop is not None:
        facts.append(f"retain drop: {100 * verdict.retain_drop:.1f}%")
    if verdict.forgotten is not None:
        facts.append(f"forgotten: {100 * verdict.forgotten:.1f}%")
    for level, outcome in verdict.levels.items():
        facts.append(f"{level.replace('_', '-')}: {outcome.replace('_', ' ')}")
    return out + '<ul class="evidence">' + "".join(f"<li>{_esc(f)}</li>" for f in facts) + "</ul></div>"


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def _pct_ci(r: Rate | None) -> str:
    if r is None or r.n == 0:
        return "-"
    return f"{100 * r.rate:.0f}% [{100 * r.lo:.0f}-{100 * r.hi:.0f}] n={r.n}"


def _ppl_note(summary: AuditSummary) -> str:
    names = sorted({m.quality.ppl_model for m in summary.models.values() if m.quality and m.quality.ppl_model})
    return f", perplexity under {_esc(', '.join(names))}" if names else ""


def _summary_table(summary: AuditSummary) -> str:
    rows = []
    for name, m in summary.models.items():
        s = m.scores
        best = s.best_attack()
        rows.append(
            {
                "model": name,
                "forget acc": _pct_ci(s.forget_acc),
                "retain acc": _pct_ci(s.retain_acc),
                "forgotten": _pct_ci(s.forgotten),
                "best attack": best[0] if best else "-",
                "its recovery": _pct_ci(best[1].rate) if best else "-",
                "its control": _pct_ci(best[1].control) if best else "-",
                "any attack": _pct_ci(s.recovery_any.rate),
                "any control": _pct_ci(s.recovery_any.control),
                "destructive rate": m.destructive.rate if m.destructive else None,
                "KFR": m.quality.kfr if m.quality else None,
                "KRR": m.quality.krr if m.quality else None,
                "LS forget": m.quality.linguistic_score_forget if m.quality else None,
                "LS retain": m.quality.linguistic_score_retain if m.quality else None,
                "verdict": m.verdict.label if m.verdict else "-",
            }
        )
    return (
        "<p class='meta'>Accuracies on plain prompts (greedy), 95% Wilson intervals in brackets. Recovery: share of "
        "forgotten items an attack brings back; control: the same attack on the model that never saw the facts. "
        "KFR, KRR, LS: ReLearn's knowledge forgetting and retention rates and Linguistic Score of the forget and "
        f"retain answers (unpact.quality){_ppl_note(summary)}.</p>"
        + '<div class="scroll">'
        + table_html(rows)
        + "</div>"
    )


def _format_html(summary: AuditSummary) -> str:
    """How the models were prompted: template, separator, chat template, BOS, one rendered item, base accuracy."""
    fmt = summary.prompt_format
    if not fmt:
        return "<p class='meta'>Not recorded (an audit written by an older unpact).</p>"
    rows: list[dict[str, Any]] = [
        {"field": "template", "value": repr(fmt.get("template"))},
        {
            "field": "answer separator",
            "value": "automatic (a space unless whitespace)"
            if fmt.get("answer_sep") is None
            else repr(fmt.get("answer_sep")),
        },
        {"field": "chat template", "value": "yes" if fmt.get("chat") else "no"},
        {"field": "system prompt", "value": fmt.get("system_prompt") or "-"},
        {"field": "BOS token", "value": fmt.get("bos")},
    ]
    acc = fmt.get("base_accuracy")
    if acc:
        rows.append(
            {
                "field": "base model under this format",
                "value": f"{acc['forget']:.0%} of {acc['n_forget']} forget and {acc['retain']:.0%} of "
                f"{acc['n_retain']} retain items right (check: at least {acc['threshold']:.0%}; "
                f"{'passed' if acc['passed'] else 'FAILED, audited with --force'})",
            }
        )
        for label, fa, ra in acc.get("alternatives") or []:
            rows.append({"field": f"base model under {label}", "value": f"{fa:.0%} forget, {ra:.0%} retain"})
    example = fmt.get("example")
    shown = (
        "<p class='meta'>The first forget item exactly as the model reads it (prompt, separator, gold answer):</p>"
        f"<pre>{_esc(example)}</pre>"
        if example
        else ""
    )
    return table_html(rows, ["field", "value"]) + shown


def _fmt_p(p: float | None) -> str:
    return "-" if p is None or p != p else f"{p:.3g}"


def _evidence_html(name: str, m: ModelSummary) -> str:
    """One model's threat levels and every paired test (effect, clustered CI, p, Holm-corrected p, n)."""
    levels = [
        {
            "level": o.level,
            "outcome": o.outcome,
            "primary test": o.primary or "-",
            "strongest": o.strongest or "-",
            "why": o.reason,
        }
        for o in m.levels.values()
    ]
    tests = []
    for t in m.evidence:
        ex = t.excess
        tests.append(
            {
                "test": t.name + (" (primary)" if t.primary else ""),
                "level": t.level,
                "recovered": "-" if t.n == 0 else f"{100 * t.rate.value:.0f}%",
                "control": "-" if t.n == 0 else f"{100 * t.control.value:.0f}%",
                "excess [95% CI]": "-" if t.n == 0 else f"{ex.value:+.2f} [{ex.lo:+.2f}, {ex.hi:+.2f}]",
                "p": _fmt_p(t.p),
                "p (Holm)": _fmt_p(t.p_holm),
                "n / clusters / eff. n": f"{t.n} / {ex.n_clusters} / {ex.effective_n:.1f}" if t.n else "0",
                "note": t.note,
            }
        )
    return (
        f"<h3>{_esc(name)}</h3>"
        + table_html(levels, ["level", "outcome", "primary test", "strongest", "why"])
        + '<div class="scroll">'
        + table_html(tests)
        + "</div>"
    )


def _config_table(summary: AuditSummary) -> str:
    facts = [
        {"field": k, "value": v if _scalar(v) or isinstance(v, (list, tuple)) else json.dumps(v)[:200]}
        for k, v in summary.config.items()
    ]
    facts += [{"field": "attacks", "value": summary.attacks}, {"field": "config_hash", "value": summary.config_hash}]
    return table_html(facts, ["field", "value"])


def _dilemma_rows(summary: AuditSummary) -> list[dict[str, Any]]:
    out = []
    for name, m in summary.models.items():
        row: dict[str, Any] = {"method": name}
        for key, r in (
            ("retain_accuracy", m.scores.retain_acc),
            ("forget_accuracy", m.scores.forget_acc),
            ("recovery", m.scores.recovery_any.rate),
        ):
            if r.n:
                row[key], row[f"{key}_ci"] = r.rate, (r.lo, r.hi)
        if m.destructive is not None and m.destructive.rate == m.destructive.rate:
            row["destructive_rate"] = m.destructive.rate
        out.append(row)
    return out


def _recovery_entries(m: ModelSummary) -> tuple[dict[str, Any], list[str]]:
    """Attack -> chart entry for the attacks with forgotten items to recover; the names of the others."""
    src = {**m.scores.recovery, "any attack": m.scores.recovery_any}
    shown = {a: {"rate": e.rate.to_dict(), "control": e.control.to_dict()} for a, e in src.items() if e.rate.n}
    return shown, [a for a, e in src.items() if not e.rate.n]


def _records_html(records: Sequence[Mapping[str, Any]], limit: int) -> str:
    first = ("model", "item", "attack", "split", "prompt", "gold", "generated", "lenient", "exact", "rouge_l")
    order = sorted(range(len(records)), key=lambda i: (str(records[i].get("split", "")) != "forget", i))
    rows = []
    for i in order[:limit]:
        rec = records[i]
        row: dict[str, Any] = {}
        for k, v in rec.items():
            if _scalar(v):
                row[k] = v
            elif isinstance(v, (list, tuple)) and all(_scalar(x) for x in v):
                row[k] = " | ".join(str(x) for x in v)
            else:
                text = json.dumps(v, ensure_ascii=False)
                row[k] = text if len(text) <= 200 else text[:199] + "\u2026"
        rows.append(row)
    cols = [c for c in first if any(c in r for r in rows)] + sorted({k for r in rows for k in r} - set(first))
    more = f"<p class='meta'>Showing {min(limit, len(records))} of {len(records)} records (forget split first).</p>"
    return more + '<div class="scroll">' + table_html(rows, cols) + "</div>"


def _tracer_pairs(
    d: AuditDir, models: Sequence[str], kind: str, cls: Any, limit: int
) -> list[tuple[str, str, Any, Any]]:
    """[(model, item file stem, base result, model result)] of the saved tracer results of one kind."""
    out = []
    for name in models:
        if name == BASE:
            continue
        for path in d.tracer_files(name, kind)[:limit]:
            base_path = d.tracer_dir(BASE, kind) / path.name
            if base_path.exists():
                out.append((name, path.stem, cls.load(base_path), cls.load(path)))
    return out


def render_report(
    audit_dir: str | os.PathLike[str], *, max_examples: int = 4, max_records: int = 300, title: str | None = None
) -> str:
    """The report page as one HTML string (see :func:`write_report`)."""
    import plotly.offline

    from unpact.attribution import Attribution
    from unpact.circuits.results import CircuitDiff
    from unpact.lens import LensTrajectory
    from viz.attribution import token_heatmap_plotly
    from viz.circuits import circuit_graph_plotly
    from viz.lens import lens_curves_plotly, lens_grid_plotly
    from viz.recovery import dilemma_plot_plotly, recovery_chart_plotly

    try:
        d = AuditDir.open(audit_dir)
        summary = d.read_summary()
    except UnpactError as exc:  # missing, unreadable or another version's summary
        raise ReportError(str(exc)) from exc
    records = d.read_records()
    page = _Page()
    verdicts = "".join(_verdict_html(name, m.verdict) for name, m in summary.models.items())
    page.section("Summary", lambda: _summary_table(summary))
    page.section("Prompt format", lambda: _format_html(summary))

    def recovery() -> str:
        out = []
        for name, m in summary.models.items():
            if m.role != "unlearned":
                continue
            shown, empty = _recovery_entries(m)
            out.append(f"<h3>{_esc(name)}</h3>")
            if shown:
                out.append(page.fig(recovery_chart_plotly(shown, title=f"Recovery per attack: {name}")))
            if empty:
                out.append(f"<p class='meta'>No forgotten items to recover for: {_esc(', '.join(empty))}.</p>")
        return "".join(out)

    if any(m.scores.recovery for m in summary.models.values()):
        page.section("Recovery per attack", recovery)

    rows = _dilemma_rows(summary)
    if len(rows) > 1:

        def dilemma() -> str:
            out = []
            for x, y in (("retain_accuracy", "forget_accuracy"), ("destructive_rate", "recovery")):
                pts = [r for r in rows if x in r and y in r]
                if len(pts) > 1:
                    out.append(page.fig(dilemma_plot_plotly(pts, x=x, y=y)))
            return "".join(out)

        page.section("Unlearning dilemma across models", dilemma)

    names = list(summary.models)

    def attributions() -> str:
        out = [
            "<p class='meta'>Prompt attribution of the gold answer on the base model and on the unlearned model "
            "(red: the word raises the answer's log-probability; framed: key words).</p>"
        ]
        for name, stem, base, unl in _tracer_pairs(d, names, "forget", Attribution, max_examples):
            ex = base.example
            out.append(
                f"<h3>{_esc(name)} &middot; {_esc(stem)}</h3><p>Prompt: <code>{_esc(ex.prompt)}</code>"
                f" &rarr; answer <code>{_esc(ex.answer)}</code></p>"
            )
            out.append(page.fig(token_heatmap_plotly(base, unl, labels=("base", name))))
        return "".join(out) if len(out) > 1 else ""

    page.section("Attribution heatmaps (forget items)", attributions)

    def lens_section() -> str:
        out = []
        for name, stem, base, unl in _tracer_pairs(d, names, "lens", LensTrajectory, max_examples):
            out.append(f"<h3>{_esc(name)} &middot; {_esc(stem)}</h3>")
            out.append(page.fig(lens_curves_plotly(base, unl, labels=("base", name))))
            out.append(
                page.fig(lens_grid_plotly(unl, value="rank", title=f"Logit lens ({name}): rank of the gold token"))
            )
        return "".join(out)

    page.section("Logit lens (forget items)", lens_section)

    def circuits() -> str:
        out = []
        for name in names:
            if name == BASE:
                continue
            for path in d.tracer_files(name, "circuits")[:max_examples]:
                out.append(
                    f"<h3>{_esc(name)} &middot; {_esc(path.stem)}</h3>"
                    + page.fig(circuit_graph_plotly(CircuitDiff.load(path)))
                )
        return "".join(out)

    page.section("Circuits", circuits)

    judged = {n: m for n, m in summary.models.items() if m.levels}
    if judged:
        page.section(
            "Evidence by threat level",
            lambda: (
                "<p class='meta'>Each test compares the model with its control on the model's forgotten items; "
                "intervals and p-values are clustered by fact (its phrasings), p one-sided (cluster sign-flip); one "
                "primary test per level, Holm-corrected across levels; the other tests are exploratory.</p>"
                + "".join(_evidence_html(n, m) for n, m in judged.items())
            ),
        )
        page.section("Relearning and quantization", lambda: weights_html(page, d, summary))
        if any("probes" in m.sections for m in summary.models.values()):
            page.section("Representations: per-layer probes", lambda: probes_html(page, summary))
        if any("directions" in m.sections for m in summary.models.values()):
            page.section("Representations: the unlearning direction", lambda: directions_html(summary))
        if any("soft_prompt" in m.sections for m in summary.models.values()):
            page.section("Embedding space: the soft-prompt attack", lambda: soft_prompt_html(summary))
        if any("diff_attacks" in m.sections for m in summary.models.values()):
            page.section("Attacks from the circuit and lens diffs", lambda: diff_attacks_html(summary))
    if AuditDir(d.sweep_dir).sweep_path.exists():
        page.section(
            "Trade-off: the strength sweep and the utility-matched points", lambda: tradeoff_html(page, d, summary)
        )
    if any("variants" in m.sections for m in summary.models.values()):
        page.section("Other wordings of the forget facts", lambda: variants_html(summary))
    if any("standard_metrics" in m.sections for m in summary.models.values()):
        page.section("The field's standard metrics (TOFU, MUSE)", lambda: standard_metrics_html(summary))
    if records:
        page.section("Per-item records", lambda: _records_html(records, max_records))
    page.section("Audit configuration", lambda: _config_table(summary))

    heading = title or "unpact audit report"
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    failures = (
        f'<p class="note">{len(page.failures)} section(s) could not be drawn: {_esc(", ".join(page.failures))}</p>'
        if page.failures
        else ""
    )
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{_esc(heading)}</title><style>{_CSS}</style>",
            f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head><body>',
            f"<h1>{_esc(heading)}</h1>",
            f"<div class='meta'>Audit directory: <code>{_esc(d.root)}</code> &middot; written {_esc(created)}</div>",
            verdicts or '<div class="verdict other">No verdict in summary.json.</div>',
            failures,
            *page.parts,
            "</body></html>",
        ]
    )


def write_report(
    audit_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    max_examples: int = 4,
    max_records: int = 300,
    title: str | None = None,
) -> Path:
    """Write the self-contained HTML report of an audit directory.

    Args:
        audit_dir: Output directory of ``unpact audit`` (must contain ``summary.json``).
        out: Output file; default ``audit_dir / "report.html"``.
        max_examples: At most this many examples get attribution / lens / circuit figures.
        max_records: At most this many per-item records are listed.
        title: Page title.

    Returns:
        The path of the written HTML file.

    Raises:
        ReportError: If ``audit_dir`` has no readable ``summary.json``.
    """
    from unpact._io import atomic_write_text

    text = render_report(audit_dir, max_examples=max_examples, max_records=max_records, title=title)
    path = Path(out) if out is not None else AuditDir(audit_dir).report_path
    atomic_write_text(path, text)
    logger.info("wrote report %s (%.1f MB)", path, len(text) / 1e6)
    return path
