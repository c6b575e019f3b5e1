"""The audit report: ONE self-contained HTML page from an audit directory.

``write_report(audit_dir)`` reads ``summary.json`` (verdict, metrics, recovery per attack, optional rows per
unlearning method), the per-item records (``records.jsonl`` / ``records.json`` / ``records/*.json``) and any saved
result bundles (``*.npz`` whose meta ``kind`` is ``Attribution``, ``AttributionDiff``, ``LensTrajectory``,
``EdgeScores`` or ``CircuitDiff``) and writes a page with the verdict, a summary table, the recovery chart,
the dilemma plot, attribution heatmaps, logit-lens grids/curves, circuit graphs and the records.

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

logger = logging.getLogger(__name__)

__all__ = ["write_report", "render_report", "ReportError"]

# kind -> (modules to look in, in order; class name)
_KIND_LOADERS: dict[str, tuple[tuple[str, ...], str]] = {
    "Attribution": (("unpact.attribution",), "Attribution"),
    "AttributionDiff": (("unpact.attribution",), "AttributionDiff"),
    "LensTrajectory": (("unpact.lens",), "LensTrajectory"),
    "EdgeScores": (("unpact.circuits", "unpact.circuits.results"), "EdgeScores"),
    "CircuitDiff": (("unpact.circuits", "unpact.circuits.results"), "CircuitDiff"),
}


def _result_class(kind: str) -> Any:
    import importlib

    modules, name = _KIND_LOADERS[kind]
    for module in modules:
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
        if cls is not None:
            return cls
    raise ImportError(f"cannot find {name} in {', '.join(modules)}")

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


class ReportError(ValueError):
    """The audit directory cannot be reported on (missing or unreadable ``summary.json``)."""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _load_summary(audit_dir: Path) -> dict[str, Any]:
    path = audit_dir / "summary.json"
    if not audit_dir.is_dir():
        raise ReportError(f"{str(audit_dir)!r} is not a directory; pass the output directory of 'unpact audit'")
    if not path.exists():
        raise ReportError(f"no summary.json in {str(audit_dir)!r}; run 'unpact audit --out {audit_dir}' first")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not valid JSON ({exc}); re-run the audit to rewrite it") from exc
    if not isinstance(summary, dict):
        raise ReportError(f"{path} must hold a JSON object, got {type(summary).__name__}")
    return summary


def load_records(audit_dir: Path) -> list[dict[str, Any]]:
    """Per-item records of an audit (``records.jsonl``, ``records.json`` or ``records/*.json``); [] if none."""
    audit_dir = Path(audit_dir)
    jl = audit_dir / "records.jsonl"
    if jl.exists():
        return [json.loads(line) for line in jl.read_text(encoding="utf-8").splitlines() if line.strip()]
    js = audit_dir / "records.json"
    if js.exists():
        data = json.loads(js.read_text(encoding="utf-8"))
        return list(data.get("records", [])) if isinstance(data, dict) else list(data)
    folder = audit_dir / "records"
    if folder.is_dir():
        out: list[dict[str, Any]] = []
        for p in sorted(folder.glob("*.json*")):
            text = p.read_text(encoding="utf-8")
            if p.suffix == ".jsonl":
                out += [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                data = json.loads(text)
                out += data if isinstance(data, list) else [data]
        return out
    return []


def _scan_results(audit_dir: Path, kinds: Sequence[str]) -> dict[str, list[tuple[Path, Any]]]:
    """Saved result bundles of the given kinds under ``audit_dir``: ``{kind: [(path, object)]}``."""
    from unpact._io import load_bundle

    found: dict[str, list[tuple[Path, Any]]] = {}
    for path in sorted(audit_dir.rglob("*.npz")):
        if "tracers" in path.parts and path.parent.name in ("forget", "retain", "lens"):
            continue  # per-item attributions / lens files: read by _tracer_pairs
        try:
            meta, _ = load_bundle(path)
        except Exception as exc:  # noqa: BLE001 - an unreadable file must not stop the report
            logger.warning("skipping %s: not a result bundle (%s)", path, exc)
            continue
        kind = meta.get("kind")
        if kind not in kinds or kind not in _KIND_LOADERS:
            continue
        try:
            obj = _result_class(kind).load(path)
        except Exception as exc:  # noqa: BLE001
            logger.warning("skipping %s: cannot load %s (%s)", path, kind, exc)
            continue
        found.setdefault(kind, []).append((path, obj))
    return found


def _fig_html(fig: Any, div_id: str) -> str:
    return '<div class="fig">' + fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False, "responsive": True}
    ) + "</div>"


class _Page:
    """Accumulates sections; a failing section becomes a visible note instead of breaking the page."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.n_fig = 0
        self.failures: list[str] = []

    def section(self, title: str, fn: Callable[[], str]) -> None:
        try:
            body = fn()
        except Exception as exc:  # noqa: BLE001 - report the failure on the page, keep going
            logger.warning("report section %r failed: %s", title, exc)
            self.failures.append(title)
            body = f'<p class="note">This section could not be drawn: {_esc(type(exc).__name__)}: {_esc(exc)}</p>'
        if body:
            self.parts.append(f"<h2>{_esc(title)}</h2>{body}")

    def fig(self, fig: Any) -> str:
        self.n_fig += 1
        return _fig_html(fig, f"fig{self.n_fig}")


_VERDICT_CLASS = {"suppression": "suppression", "removal": "removal"}


def _verdict_html(name: str, verdict: Any) -> str:
    if not isinstance(verdict, Mapping):
        return ""
    label = verdict.get("label", "?")
    out = (f'<div class="verdict {_VERDICT_CLASS.get(str(label), "other")}">Model <code>{_esc(name)}</code>: '
           f'<b class="v">{_esc(label)}</b>')
    if verdict.get("reason"):
        out += f"<div>{_esc(verdict['reason'])}</div>"
    def fmt(v: Any) -> str:
        return f"{100 * v:.1f}%" if isinstance(v, float) else str(v)

    facts = [f"{k.replace('_', ' ')}: {fmt(verdict[k])}" for k in ("evidence_attack", "destructive", "retain_drop", "forgotten")
             if verdict.get(k) is not None]
    if facts:
        out += '<ul class="evidence">' + "".join(f"<li>{_esc(f)}</li>" for f in facts) + "</ul>"
    return out + "</div>"


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def _rate(d: Any) -> float | None:
    """The number in a rate entry: a float, or a ``{k, n, rate, lo, hi}`` dict."""
    if isinstance(d, Mapping):
        d = d.get("rate")
        if isinstance(d, Mapping):
            d = d.get("rate")
    return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def _pct_ci(d: Any) -> str:
    if not isinstance(d, Mapping) or d.get("rate") is None:
        return "-"
    if isinstance(d.get("rate"), Mapping):
        d = d["rate"]
    text = f"{100 * d['rate']:.0f}%"
    if d.get("lo") is not None and d.get("hi") is not None:
        text += f" [{100 * d['lo']:.0f}-{100 * d['hi']:.0f}]"
    if d.get("n") is not None:
        text += f" n={d['n']}"
    return text


def _models(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Model name -> per-model summary (an audit summary's ``models``, or the whole summary as one model)."""
    models = summary.get("models")
    if isinstance(models, Mapping) and models:
        return {str(k): v for k, v in models.items() if isinstance(v, Mapping)}
    return {str(summary.get("model", "model")): summary}


def _best_attack(m: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    best = None
    for a, e in (m.get("recovery") or {}).items():
        if isinstance(e, Mapping) and e.get("excess") is not None and (best is None or e["excess"] > best[1]["excess"]):
            best = (str(a), e)
    return best


def _summary_table(models: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, m in models.items():
        best = _best_attack(m)
        anyr = m.get("recovery_any") or {}
        quality = m.get("quality") or {}
        verdict = m.get("verdict") or {}
        rows.append({
            "model": name,
            "forget acc": _pct_ci(m.get("forget_acc")),
            "retain acc": _pct_ci(m.get("retain_acc")),
            "forgotten": _pct_ci(m.get("forgotten")),
            "best attack": best[0] if best else "-",
            "its recovery": _pct_ci(best[1].get("rate")) if best else "-",
            "its control": _pct_ci(best[1].get("control")) if best else "-",
            "any attack": _pct_ci(anyr.get("rate")),
            "any control": _pct_ci(anyr.get("control")),
            "destructive rate": _rate((m.get("destructive") or {}).get("rate")) if m.get("destructive") else None,
            "KFR": quality.get("kfr"),
            "KRR": quality.get("krr"),
            "verdict": verdict.get("label", "-") if isinstance(verdict, Mapping) else "-",
        })
    return ("<p class='meta'>Accuracies on plain prompts (greedy), 95% Wilson intervals in brackets. Recovery: share of "
            "forgotten items an attack brings back; control: the same attack on the model that never saw the facts.</p>"
            + '<div class="scroll">' + table_html(rows) + "</div>")


def _config_table(summary: Mapping[str, Any]) -> str:
    cfg = summary.get("config")
    facts = [{"field": k, "value": v if _scalar(v) or isinstance(v, (list, tuple)) else json.dumps(v)[:200]}
             for k, v in (cfg.items() if isinstance(cfg, Mapping) else [])]
    facts += [{"field": k, "value": summary[k]} for k in ("attacks", "config_hash") if k in summary]
    return table_html(facts, ["field", "value"]) if facts else ""


def _dilemma_rows(models: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = summary.get("methods") or summary.get("dilemma")
    if isinstance(rows, Mapping):
        rows = [{"method": k, **v} for k, v in rows.items() if isinstance(v, Mapping)]
    if isinstance(rows, list) and rows:
        return [dict(r) for r in rows]
    out = []
    for name, m in models.items():
        row: dict[str, Any] = {"method": name}
        for key, src in (("retain_accuracy", m.get("retain_acc")), ("forget_accuracy", m.get("forget_acc")),
                         ("recovery", (m.get("recovery_any") or {}).get("rate")),
                         ("destructive_rate", (m.get("destructive") or {}).get("rate"))):
            v = _rate(src) if not isinstance(src, (int, float)) else float(src)
            if v is not None:
                row[key] = v
                if isinstance(src, Mapping) and src.get("lo") is not None and src.get("hi") is not None:
                    row[f"{key}_ci"] = (src["lo"], src["hi"])
        out.append(row)
    return out


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


def _load(kind: str, path: Path) -> Any:
    return _result_class(kind).load(path)


def _tracer_pairs(audit_dir: Path, models: Sequence[str], sub: str, kind: str, limit: int) -> list[tuple[str, str, Any, Any]]:
    """[(model, item file stem, base result, model result)] from ``tracers/<model>/<sub>/<item>.npz``."""
    tracers = audit_dir / "tracers"
    base_dir = tracers / "base" / sub
    if not base_dir.is_dir():
        return []
    out = []
    for name in models:
        if name == "base":
            continue
        folder = tracers / name / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.npz"))[:limit]:
            base_path = base_dir / path.name
            if base_path.exists():
                out.append((name, path.stem, _load(kind, base_path), _load(kind, path)))
    return out


def render_report(audit_dir: str | os.PathLike[str], *, max_examples: int = 4, max_records: int = 300,
                  title: str | None = None) -> str:
    """The report page as one HTML string (see :func:`write_report`)."""
    import plotly.offline

    from viz.attribution import token_heatmap_plotly
    from viz.circuits import circuit_graph_plotly
    from viz.lens import lens_curves_plotly, lens_grid_plotly
    from viz.recovery import dilemma_plot_plotly, recovery_chart_plotly

    audit_dir = Path(audit_dir)
    summary = _load_summary(audit_dir)
    models = _models(summary)
    records = load_records(audit_dir)
    page = _Page()
    verdicts = "".join(_verdict_html(name, m.get("verdict")) for name, m in models.items())

    page.section("Summary", lambda: _summary_table(models))

    def recovery() -> str:
        out = []
        for name, m in models.items():
            if name in ("base", "retain_only") or not m.get("recovery"):
                continue
            src = dict(m["recovery"])
            if m.get("recovery_any"):
                src["any attack"] = m["recovery_any"]
            out.append(f"<h3>{_esc(name)}</h3>" + page.fig(recovery_chart_plotly(src, title=f"Recovery per attack: {name}")))
        return "".join(out)
    if any(m.get("recovery") for m in models.values()):
        page.section("Recovery per attack", recovery)

    rows = _dilemma_rows(models, summary)
    if len(rows) > 1:
        def dilemma() -> str:
            out = []
            for x, y in (("retain_accuracy", "forget_accuracy"), ("destructive_rate", "recovery")):
                pts = [r for r in rows if x in r and y in r]
                if len(pts) > 1 or (pts and len(rows) == 1):
                    out.append(page.fig(dilemma_plot_plotly(pts, x=x, y=y)))
            return "".join(out)
        page.section("Unlearning dilemma across models", dilemma)

    names = list(models)

    def attributions() -> str:
        out = ["<p class='meta'>Prompt attribution of the gold answer on the base model and on the unlearned model "
               "(red: the word raises the answer's log-probability; framed: key words).</p>"]
        for name, stem, base, unl in _tracer_pairs(audit_dir, names, "forget", "Attribution", max_examples):
            ex = getattr(base, "example", None)
            out.append(f"<h3>{_esc(name)} &middot; {_esc(stem)}</h3><p>Prompt: <code>{_esc(getattr(ex, 'prompt', ''))}</code>"
                       f" &rarr; answer <code>{_esc(getattr(ex, 'answer', ''))}</code></p>")
            out.append(page.fig(token_heatmap_plotly(base, unl, labels=("base", name))))
        return "".join(out) if len(out) > 1 else ""
    page.section("Attribution heatmaps (forget items)", attributions)

    def lens_section() -> str:
        out = []
        for name, stem, base, unl in _tracer_pairs(audit_dir, names, "lens", "LensTrajectory", max_examples):
            out.append(f"<h3>{_esc(name)} &middot; {_esc(stem)}</h3>")
            out.append(page.fig(lens_curves_plotly(base, unl, labels=("base", name))))
            out.append(page.fig(lens_grid_plotly(unl, value="rank", title=f"Logit lens ({name}): rank of the gold token")))
        return "".join(out)
    page.section("Logit lens (forget items)", lens_section)

    def circuits() -> str:
        found = _scan_results(audit_dir, ("CircuitDiff", "EdgeScores"))
        out = []
        for path, obj in found.get("CircuitDiff", [])[:max_examples]:
            out.append(f"<h3>{_esc(path.relative_to(audit_dir))}</h3>" + page.fig(circuit_graph_plotly(obj)))
        if not out:
            for path, obj in found.get("EdgeScores", [])[:max_examples]:
                out.append(f"<h3>{_esc(path.relative_to(audit_dir))}</h3>" + page.fig(circuit_graph_plotly(obj)))
        return "".join(out)
    page.section("Circuits", circuits)
    if records:
        page.section("Per-item records", lambda: _records_html(records, max_records))
    page.section("Audit configuration", lambda: _config_table(summary))

    heading = title or "unpact audit report"
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    failures = (f'<p class="note">{len(page.failures)} section(s) could not be drawn: {_esc(", ".join(page.failures))}</p>'
                if page.failures else "")
    return "".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_esc(heading)}</title><style>{_CSS}</style>",
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head><body>',
        f"<h1>{_esc(heading)}</h1>",
        f"<div class='meta'>Audit directory: <code>{_esc(audit_dir)}</code> &middot; written {_esc(created)}</div>",
        verdicts or '<div class="verdict other">No verdict in summary.json.</div>',
        failures,
        *page.parts,
        "</body></html>",
    ])


def write_report(audit_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                 max_examples: int = 4, max_records: int = 300, title: str | None = None) -> Path:
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

    audit_dir = Path(audit_dir)
    text = render_report(audit_dir, max_examples=max_examples, max_records=max_records, title=title)
    path = Path(out) if out is not None else audit_dir / "report.html"
    atomic_write_text(path, text)
    logger.info("wrote report %s (%.1f MB)", path, len(text) / 1e6)
    return path
