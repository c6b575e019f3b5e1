"""The benchmark entry point: runs every bench and writes one table of figures, each against its reference.

Runs, one after the other (each in its own process, so one's memory does not hide another's):

* ``bench/speed.py``: cached vs uncached decoding, shared vs per-sample prompt passes, training threads and
  processes, the audit's per-stage times (from a finished audit's ``timings.json``);
* ``bench/attribution.py``: integrated gradients vs captum (speed, peak memory, FLOP rate vs matmul);
* ``bench/circuits.py``: EAP / EAP-IG vs exact patching (CPR, CMD, speed-up).

and writes ``bench/results/table.md`` and ``table.json``: one row per figure with its value, the
reference it is measured against in the same run, their ratio and the target (where the project set one);
the table also replaces the marked block of ``docs/speed.md`` (``--docs``).

Usage:
    .venv/bin/python bench/run.py [--preset default] [--audit runs/demo] [--skip attribution,circuits]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"


def _run(script: str, args: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / script), *args]
    print("$", " ".join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True)
    print(f"  ({time.time() - t:.0f}s)", flush=True)


def _row(
    figure: str, value: float, unit: str, reference: str, ratio: float | None, target: str = "", met: bool | None = None
) -> dict[str, Any]:
    return {
        "figure": figure,
        "value": value,
        "unit": unit,
        "reference": reference,
        "ratio": ratio,
        "target": target,
        "met": met,
    }


def _speed_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    dec = d["decode"]
    rows.append(
        _row(
            f"greedy decoding, {dec['items']} forget items, KV cache",
            dec["cached_s"],
            "s",
            f"recomputing every step ({dec['uncached_s']:.2f} s); same tokens: {dec['same_tokens']}",
            dec["speedup"],
            "same tokens",
            bool(dec["same_tokens"]),
        )
    )
    smp = d["sampling"]
    rows.append(
        _row(
            "sampling attack, 8 samples from one prompt cache",
            smp["shared_cache_s"],
            "s",
            f"one prompt pass per sample ({smp['prompt_per_sample_s']:.2f} s)",
            smp["speedup"],
        )
    )
    tr = d["training"]
    rows.append(
        _row(
            "toy-world training, 1 model on 2 threads",
            tr["two_threads_steps_per_s"],
            "steps/s",
            f"1 thread ({tr['one_thread_steps_per_s']:.2f} steps/s)",
            tr["threads_speedup"],
        )
    )
    rows.append(
        _row(
            "toy-world training, base + retain-only in 2 processes",
            tr["pair_in_two_processes_steps_per_s"],
            "steps/s",
            f"one model, 1 thread ({tr['one_thread_steps_per_s']:.2f} steps/s)",
            tr["processes_speedup"],
        )
    )
    aud = d.get("audit")
    if aud:
        for name, st in aud["stages"].items():
            rows.append(
                _row(
                    f"audit stage {name}",
                    st["seconds"],
                    "s",
                    f"the whole audit ({aud['total_seconds']:.0f} s)",
                    st["share"],
                )
            )
        rows.append(
            _row(
                "audit time estimated before the start",
                aud["estimated_total_seconds"] or 0.0,
                "s",
                f"time taken ({aud['total_seconds']:.0f} s)",
                aud["estimate_over_actual"],
            )
        )
    return rows


def _attribution_rows(d: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in d:
        model = r.get("model", "?")
        u = r.get("unpact") or {}
        if r.get("speedup") is not None:
            target = ">= 10x" if model == "gpt2-small" else ""
            rows.append(
                _row(
                    f"IG vs captum ({model}), wall-clock speed-up",
                    r["speedup"],
                    "x",
                    f"captum LLMGradientAttribution, same examples and steps ({r['captum']['seconds']:.2f} s)",
                    r["speedup"],
                    target,
                    r["speedup"] >= 10 if target else None,
                )
            )
        if r.get("unpact_peak_over_inference") is not None:
            rows.append(
                _row(
                    f"IG peak memory ({model})",
                    u.get("rss_peak_mb", float("nan")),
                    "MB",
                    "a no-grad forward over the same batch",
                    r["unpact_peak_over_inference"],
                    "<= 1.5",
                    r["unpact_peak_over_inference"] <= 1.5,
                )
            )
        if u.get("efficiency") is not None:
            rows.append(
                _row(
                    f"IG FLOP rate ({model})",
                    u["gflops_achieved"],
                    "GFLOP/s",
                    f"fp32 1024x1024 matmul in the same process ({u['gflops_matmul']:.0f} GFLOP/s)",
                    u["efficiency"],
                    ">= 0.5",
                    u["efficiency"] >= 0.5,
                )
            )
    return rows


def _circuit_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    s = d["summary"]
    rows = []
    for m in ("eap", "eap_ig"):
        rows.append(
            _row(
                f"circuits {m.replace('_', '-').upper()}: CPR (held-out items)",
                s[f"cpr_{m}"],
                "",
                f"exact patching ({s['cpr_exact']:.3f}); random ranking {s['cpr_random']:.3f}",
                s[f"cpr_{m}"] / s["cpr_exact"],
            )
        )
        rows.append(
            _row(
                f"circuits {m.replace('_', '-').upper()}: speed-up vs exact patching (batched)",
                s[f"speedup_{m}_vs_exact_batched"],
                "x",
                f"exact patching ({s['t_exact_batched_total']:.2f} s)",
                s[f"speedup_{m}_vs_exact_batched"],
            )
        )
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def write_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The markdown table of ``rows``."""
    lines = [
        "| figure | value | unit | reference (same run) | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cells = [
            r["figure"],
            _fmt(r["value"]),
            r["unit"],
            r["reference"],
            _fmt(r["ratio"]),
            r["target"],
            _fmt(r["met"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    head = f"Measured {meta['date']} with `{meta['command']}` ({meta['machine']})."
    if meta.get("reused"):
        head += f" Rows from {', '.join(meta['reused'])} are from that file's previous run (skipped this time)."
    head += "\n\n"
    return head + "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default", choices=("micro", "default"))
    ap.add_argument("--audit", default="runs/demo", help="a finished audit directory (for the per-stage times)")
    ap.add_argument(
        "--skip", default="", help="comma list of: speed, attribution, circuits (their last results are reused)"
    )
    ap.add_argument("--out", default=str(RESULTS), help="results directory (default bench/results)")
    ap.add_argument(
        "--docs", default=str(ROOT.parent / "docs" / "speed.md"), help="page whose marked table block is replaced"
    )
    args = ap.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    parts: list[tuple[str, str, list[str], str, Callable[[Any], list[dict[str, Any]]]]] = [
        ("speed", "speed.py", ["--preset", args.preset, "--audit", args.audit], "speed.json", _speed_rows),
        ("attribution", "attribution.py", [], "attribution.json", _attribution_rows),
        ("circuits", "circuits.py", ["--preset", args.preset], f"circuits_{args.preset}.json", _circuit_rows),
    ]
    reused = []
    for name, script, extra, file, to_rows in parts:
        if name not in skip:
            _run(script, [*extra, "--out", str(out / file)])
        elif (out / file).exists():
            reused.append(file)  # a skipped part keeps the rows of its last run
        else:
            continue
        rows += to_rows(json.loads((out / file).read_text()))
    import os
    import platform

    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "reused": reused,
    }
    (out / "table.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    table = write_table(rows, meta)
    (out / "table.md").write_text(table)
    if args.docs:
        _into_docs(Path(args.docs), table)
    print(table)
    return 0


MARK_BEGIN, MARK_END = "<!-- bench/run.py table: begin -->", "<!-- bench/run.py table: end -->"


def _into_docs(path: Path, table: str) -> None:
    """Replace the block between the bench markers in ``path`` with ``table`` (the docs quote the last run)."""
    text = path.read_text()
    if MARK_BEGIN not in text or MARK_END not in text:
        print(f"{path}: no bench markers ({MARK_BEGIN} ... {MARK_END}); docs not updated", file=sys.stderr)
        return
    head, rest = text.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_BEGIN}\n{table}{MARK_END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
