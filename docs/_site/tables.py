"""Measured tables of the docs, generated from the committed audit and benchmark JSON.

A page holds a generated block between ``<!-- generated: NAME: begin -->`` and ``<!-- generated: NAME: end -->``;
:func:`fill` replaces its body with ``TABLES[NAME]()``. ``python docs/_site/make_site.py --write-tables`` rewrites the
pages in ``docs/``; the docs build (and ``tests/test_docs_site.py``) fails when a committed block differs from what
the JSON gives, so no measured table is edited by hand. Inputs: ``docs/results/demo/`` (the demo audit: its
``summary.json``, ``sweep.json``, ``timings.json``) and ``bench/results/table.md`` (written by ``bench/run.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "docs" / "results" / "demo"


def _json(name: str) -> Any:
    return json.loads((DEMO / name).read_text(encoding="utf-8"))


def _summary() -> Any:
    from unpact.audit.summary import AuditSummary

    return AuditSummary.from_dict(_json("summary.json"), source=DEMO / "summary.json")


def _unlearned(models: dict[str, Any]) -> list[str]:
    return [n for n in models if n not in ("base", "retain_only")]


def demo_table() -> str:
    """The audit's own table (``AuditSummary.table()``) of the demo run."""
    return "```\n" + _summary().table() + "\n```\n"


def _cell(level: dict[str, Any] | None) -> str:
    if not level:
        return "-"
    reason = str(level.get("reason", ""))
    primary = str(level.get("primary", ""))
    if primary and reason.startswith(primary + ": "):
        reason = reason[len(primary) + 2 :]
    return f"{reason}: **{level.get('outcome', '-')}**".replace("|", "/")


def levels_table() -> str:
    """Per model: each threat level's primary test (rate vs control, excess, interval, p) and the verdict."""
    models = _json("summary.json")["models"]
    rows = [
        "| model | black box | white box | weights | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in ["retain_only", *_unlearned(models)]:
        m = models.get(name)
        if not m or not m.get("levels"):
            continue
        lv = m["levels"]
        verdict = m.get("verdict") or {}
        label = str(verdict.get("label", "-")).replace("_", " ")
        if verdict.get("label") == "not_unlearned":
            label += f" ({100 * float(verdict.get('forgotten', 0)):.0f}% forgotten)"
        rows.append(
            f"| {name} | {_cell(lv.get('black_box'))} | {_cell(lv.get('white_box'))} | {_cell(lv.get('weights'))} "
            f"| {label} |"
        )
    return "\n".join(rows) + "\n"


def standard_metrics_table() -> str:
    """TOFU / MUSE metrics of every model of the demo (stage ``standard_metrics``)."""
    models = _json("summary.json")["models"]
    rows = [
        "| model | model utility | forget truth ratio | forget quality (KS p, D) | MIA AUC Min-K% (LOSS / zlib / "
        "Min-K%++) | PrivLeak Min-K% |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in ["base", "retain_only", *_unlearned(models)]:
        sm = (models.get(name, {}).get("sections") or {}).get("standard_metrics")
        if not sm:
            continue
        fq = sm.get("forget_quality") or {}
        fq_cell = f"{fq['pvalue']:.1e}, D = {fq['statistic']:.2f}" if fq.get("pvalue") is not None else "-"
        auc = sm["mia_auc"]
        leak = (sm.get("privleak") or {}).get("min_k")
        rows.append(
            f"| {name} | {sm['model_utility']:.3f} | {sm['forget_truth_ratio']:.3f} | {fq_cell} | "
            f"{auc['min_k']:.2f} ({auc['loss']:.2f} / {auc['zlib']:.2f} / {auc['min_k_plus_plus']:.2f}) | "
            f"{'-' if leak is None else f'{leak:.1f}'} |"
        )
    return "\n".join(rows) + "\n"


def _rate(d: dict[str, Any]) -> str:
    return f"{100 * d['rate']:.1f}% [{100 * d['lo']:.0f}, {100 * d['hi']:.0f}]"


def variants_table() -> str:
    """Held-out phrasings and biography sentences of the forget facts (stage ``variants``), 95% intervals."""
    models = _json("summary.json")["models"]
    rows = [
        "| model | held-out phrasings (forget facts) | biography sentences (forget facts) |",
        "| --- | --- | --- |",
    ]
    for name in ["base", "retain_only", *_unlearned(models)]:
        v = (models.get(name, {}).get("sections") or {}).get("variants")
        if v:
            rows.append(
                f"| {name} | {_rate(v['forget_heldout']['accuracy'])} | {_rate(v['forget_bios']['accuracy'])} |"
            )
    return "\n".join(rows) + "\n"


def sweep_table() -> str:
    """The demo sweep's table (``SweepResult.table()``, as ``unpact sweep`` prints it)."""
    from unpact.sweep import SweepResult

    return "```\n" + SweepResult.from_dict(_json("sweep.json")).table() + "\n```\n"


def palu_grid_table() -> str:
    """PALU's k x n grid (``bench/hparam_grid.py``): forget / retain accuracy per point."""
    d = json.loads((ROOT / "bench" / "results" / "hparam_grid_palu_default.json").read_text(encoding="utf-8"))
    cells = {(r["point"]["top_k"], r["point"]["prefix_tokens"]): r for r in d["rows"] if isinstance(r["point"], dict)}
    ks, ns = d["grid"]["top_k"], d["grid"]["prefix_tokens"]
    rows = [
        "| top_k (k) | " + " | ".join(f"n = {n}" if n != -1 else "n = -1 (all)" for n in ns) + " |",
        "| --- |" + " --- |" * len(ns),
    ]
    for k in ks:
        rows.append(
            f"| {k} | "
            + " | ".join(f"{cells[(k, n)]['forget']:.3f} / {cells[(k, n)]['retain']:.3f}" for n in ns)
            + " |"
        )
    return "\n".join(rows) + "\n"


_SPLIT_STAGES = (
    "accuracy",
    "attacks",
    "attribution",
    "lens",
    "relearn",
    "quantize",
    "probes",
    "directions",
    "soft_prompt",
    "diff_attacks",
)


def scale_table() -> str:
    """Seconds per stage of the micro audit in one process and in two torchrun ranks (``docs/results/scale``)."""
    scale = ROOT / "docs" / "results" / "scale"
    one, two = (
        json.loads((scale / f"{n}_timings.json").read_text(encoding="utf-8")) for n in ("one_process", "two_ranks")
    )
    rows = ["| stage | where | 1 process (s) | 2 ranks (s) |", "| --- | --- | --- | --- |"]
    rest = [0.0, 0.0]
    for stage in sorted(one["seconds"], key=lambda s: -one["seconds"][s]):
        a, b = one["seconds"][stage], two["seconds"].get(stage, 0.0)
        if stage in _SPLIT_STAGES or max(a, b) >= 3:
            rows.append(f"| {stage} | {'split' if stage in _SPLIT_STAGES else 'rank 0'} | {a:.1f} | {b:.1f} |")
        else:
            rest = [rest[0] + a, rest[1] + b]
    rows.append(f"| the rest | rank 0 | {rest[0]:.1f} | {rest[1]:.1f} |")
    rows.append(f"| **total** | | {one['total_seconds']:.0f} | {two['total_seconds']:.0f} |")
    return "\n".join(rows) + "\n"


def unit_costs_table() -> str:
    """Measured seconds per unit (``timings.json`` ``seconds_per``) of the micro and the default world's audits."""
    rows = [
        "| world | audit | decode, per item | attribution (IG, 16 steps), per item | forward, per item |",
        "| --- | --- | --- | --- | --- |",
    ]
    for world, path in (
        ("micro", ROOT / "docs" / "results" / "scale" / "one_process_timings.json"),
        ("default", DEMO / "timings.json"),
    ):
        t = json.loads(path.read_text(encoding="utf-8"))
        per, work = t["seconds_per"], t["work"]
        n = {k: sum(w.get(k, 0) for w in work.values()) for k in ("decode", "attribute", "forward")}
        rows.append(
            f"| {world} | {n['decode']:,} decodings, {n['attribute']:,} attributions, {n['forward']:,} forwards | "
            f"{1e3 * per['decode']:.2f} ms | {1e3 * per['attribute']:.1f} ms | {1e3 * per['forward']:.3f} ms |"
        )
    return "\n".join(rows) + "\n"


TABLES: dict[str, Callable[[], str]] = {
    "scale_table": scale_table,
    "unit_costs_table": unit_costs_table,
    "sweep_table": sweep_table,
    "palu_grid_table": palu_grid_table,
    "demo_table": demo_table,
    "levels_table": levels_table,
    "standard_metrics_table": standard_metrics_table,
    "variants_table": variants_table,
}

_BLOCK = re.compile(r"(<!-- generated: (\w+): begin -->\n)(.*?)(<!-- generated: \2: end -->)", re.S)
_BENCH = re.compile(r"(<!-- bench/run.py table: begin -->\n)(.*?)(<!-- bench/run.py table: end -->)", re.S)


def fill(text: str, source: str = "page") -> str:
    """``text`` with every generated block's body replaced by its table.

    Raises:
        KeyError: A block names a table that :data:`TABLES` does not have (names ``source`` and the choices).
    """

    def one(m: re.Match[str]) -> str:
        name = m.group(2)
        if name not in TABLES:
            raise KeyError(f"{source}: generated block {name!r} unknown; known: {', '.join(TABLES)}")
        return m.group(1) + TABLES[name]() + m.group(4)

    text = _BLOCK.sub(one, text)
    bench = (ROOT / "bench" / "results" / "table.md").read_text(encoding="utf-8")
    return _BENCH.sub(lambda m: m.group(1) + bench + m.group(3), text)


def stale_pages(docs: Path) -> list[str]:
    """Pages under ``docs`` whose generated blocks differ from what the JSON gives."""
    return [p.name for p in sorted(docs.glob("*.md")) if fill(t := p.read_text(encoding="utf-8"), p.name) != t]
