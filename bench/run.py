"""The benchmark entry point: runs every bench and writes one table of figures, each against its reference.

Runs, one after the other (each in its own process, so one's memory does not hide another's):

* ``bench/speed.py``: cached vs uncached decoding, shared vs per-sample prompt passes, training threads and
  processes, the audit's per-stage times (from a finished audit's ``timings.json``);
* ``bench/attribution.py``: integrated gradients vs captum (speed, peak memory, FLOP rate vs matmul);
* ``bench/circuits.py``: EAP / EAP-IG vs exact patching (CPR, CMD, speed-up).

and writes ``bench/results/table.md`` and ``table.json``: one row per figure with its value, the
reference it is measured against in the same run, their ratio and the target (where the project set one).

Usage:
    .venv/bin/python bench/run.py [--preset default] [--audit runs/demo] [--skip attribution,circuits]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
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


def _attribution_rows(d: Any) -> list[dict[str, Any]]:
    rows = []
    for r in d if isinstance(d, list) else d.get("rows", []):
        model = r.get("model", "?")
        if "speedup" in r:
            rows.append(
                _row(
                    f"IG vs captum ({model}), speed",
                    r["speedup"],
                    "x",
                    "captum, same examples and steps",
                    r["speedup"],
                    ">= 10x",
                    r["speedup"] >= 10,
                )
            )
        for key, label, target, ok in (
            ("efficiency", "IG FLOP rate / fp32 matmul rate", ">= 0.5", lambda v: v >= 0.5),
            ("memory_ratio", "IG peak / inference peak", "<= 1.5", lambda v: v <= 1.5),
        ):
            if key in r and r[key] is not None:
                rows.append(
                    _row(f"{label} ({model})", r[key], "", "measured in the same process", r[key], target, ok(r[key]))
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
    head = f"Measured {meta['date']} with `{meta['command']}` ({meta['machine']}).\n\n"
    return head + "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default", choices=("micro", "default"))
    ap.add_argument("--audit", default="runs/demo", help="a finished audit directory (for the per-stage times)")
    ap.add_argument("--skip", default="", help="comma list of: speed, attribution, circuits")
    ap.add_argument("--out", default=str(RESULTS), help="results directory (default bench/results)")
    args = ap.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    if "speed" not in skip:
        _run("speed.py", ["--preset", args.preset, "--audit", args.audit, "--out", str(out / "speed.json")])
        rows += _speed_rows(json.loads((out / "speed.json").read_text()))
    if "attribution" not in skip:
        _run("attribution.py", ["--out", str(out / "attribution.json")])
        rows += _attribution_rows(json.loads((out / "attribution.json").read_text()))
    if "circuits" not in skip:
        _run("circuits.py", ["--preset", args.preset, "--out", str(out / f"circuits_{args.preset}.json")])
        rows += _circuit_rows(json.loads((out / f"circuits_{args.preset}.json").read_text()))
    import os
    import platform

    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    (out / "table.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / "table.md").write_text(write_table(rows, meta))
    print((out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
