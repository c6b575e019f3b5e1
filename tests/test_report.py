"""The HTML audit report: content, escaping, CLI, and a real headless-Chromium check."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _viz_fixtures import EVIL, make_audit_dir

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
]
# Collects JS errors (window.onerror, console.error) and reports the page state into the DOM after load.
_PROBE = """<script>window.__errors=[];window.onerror=function(m){window.__errors.push(String(m));};
var __ce=console.error;console.error=function(){window.__errors.push('console.error: '+Array.from(arguments).join(' '));
__ce.apply(console,arguments);};window.addEventListener('load',function(){setTimeout(function(){
var d=document.createElement('pre');d.id='__probe';d.textContent=JSON.stringify({errors:window.__errors,
pwned:window.__pwned||0,title:document.title,plots:document.querySelectorAll('.js-plotly-plot').length,
svgs:document.querySelectorAll('.js-plotly-plot .main-svg').length,imgs:document.querySelectorAll('img').length});
document.body.appendChild(d);},300);});</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from viz.report import write_report

    d = make_audit_dir(tmp_path_factory.mktemp("audit"))
    return write_report(d)


def test_report_is_self_contained_and_escaped(report):
    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "window.__pwned" in html  # the prompt is shown ...
    assert "<script>window.__pwned" not in html and "<img src=x" not in html  # ... but never as markup
    assert EVIL not in html
    import plotly.offline

    js = plotly.offline.get_plotlyjs()
    assert js in html  # plotly.js embedded inline from the installed package
    ours = html.replace(js, "")
    assert not re.search(r"<script[^>]+src=", ours)  # no script is fetched
    assert not re.search(r"""(src|href)=["']?https?:""", ours)  # nothing loaded from the network
    assert "Plotly" in html and len(html) > 3_000_000
    for needle in (
        "SUPPRESSION".lower(),
        "npo_gd",
        "Recovery per attack",
        "Attribution heatmaps",
        "Per-item records",
        "Unlearning dilemma",
        "LS retain",
        "perplexity under retain_only",
    ):
        assert needle in html.lower() or needle in html
    assert "could not be drawn" not in html


def test_report_errors_and_missing_parts(tmp_path):
    from unpact.audit import AuditDir, AuditSummary
    from viz.report import ReportError, write_report

    with pytest.raises(ReportError, match="summary.json"):
        write_report(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ReportError, match="not valid JSON"):
        write_report(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"schema": 1, "models": {}}))
    with pytest.raises(ReportError, match="another unpact version"):
        write_report(tmp_path)
    # a summary with no tracers and no records still gives a page; a stray file is ignored
    full = AuditDir(make_audit_dir(tmp_path / "full", with_tracers=False)).read_summary()
    AuditDir(tmp_path).write_summary(
        AuditSummary(
            models={"base": full.models["base"], "m": full.models["retain_only"]}, attacks=full.attacks, config_hash="x"
        )
    )
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    out = write_report(tmp_path, tmp_path / "x" / "r.html")
    assert out == tmp_path / "x" / "r.html" and "REMOVAL".lower() in out.read_text().lower()
    assert "could not be drawn" not in out.read_text()


def test_report_of_model_with_nothing_to_recover(tmp_path):
    """A model with n = 0 forgotten items for some attack (e.g. not_unlearned) is drawn, not a failed section."""
    import dataclasses

    from unpact.audit import AuditDir
    from unpact.scoring import Rate
    from viz.report import write_report

    d = AuditDir(make_audit_dir(tmp_path / "a", with_tracers=False))
    s = d.read_summary()
    m = s.models["npo_gd"]
    empty = Rate(0, 0, float("nan"), float("nan"), float("nan"))
    m.scores.recovery["quote"] = dataclasses.replace(m.scores.recovery["quote"], rate=empty, excess=None)
    m.verdict = dataclasses.replace(m.verdict, label="insufficient_data", reason="only 2 forget items are known")
    d.write_summary(s)
    html = write_report(d.root).read_text()
    assert "could not be drawn" not in html
    assert "No forgotten items to recover for: quote" in html and "insufficient_data" in html


def test_cli_report(tmp_path):
    d = make_audit_dir(tmp_path / "a", with_tracers=False)
    out = tmp_path / "page.html"
    r = subprocess.run(
        [sys.executable, "-m", "unpact.cli", "report", str(d), "--out", str(out)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and out.exists()
    r = subprocess.run(
        [sys.executable, "-m", "unpact.cli", "report", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert r.returncode == 2 and "not a directory" in r.stderr


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args], capture_output=True, text=True, timeout=180
    )


@pytest.mark.slow
def test_report_in_headless_chromium(report, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing on CI: `make test` installs it with apt-get install chromium")
        pytest.skip("chromium not installed (apt-get install chromium)")
    page = tmp_path / "probe.html"
    page.write_text(report.read_text(encoding="utf-8").replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    r = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', r.stdout, re.S)
    assert m, f"page did not finish loading: {r.stderr[-1500:]}"
    state = json.loads(m.group(1))
    assert state["errors"] == []  # no JavaScript errors
    assert state["pwned"] == 0 and state["title"] == "unpact audit report"  # the <script> prompt did not run
    assert state["imgs"] == 0  # the <img onerror> in a prompt was not turned into an element
    assert state["plots"] >= 5 and state["svgs"] >= state["plots"]  # plotly drew every figure offline
    shot = tmp_path / "report.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1400,3000", report.as_uri()], tmp_path)
    assert shot.exists() and shot.stat().st_size > 50_000, r.stderr[-1500:]
