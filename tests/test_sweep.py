"""Unlearning-strength sweeps: checkpoints, schedules, the validation split, the matched point, a whole sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unpact.errors import InputError, UnknownNameError
from unpact.scoring import Rate
from unpact.sweep import (
    DEFAULT_ALPHA_POINTS,
    DEFAULT_STEP_POINTS,
    SweepPoint,
    SweepResult,
    choose_matched,
    parse_schedules,
    split_validation,
    sweep,
)
from unpact.unlearn import unlearn


def _state(subject) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in subject.model.state_dict().items()}


def test_checkpoint_is_the_shorter_run(micro_world, toy_base):
    seen: dict[int, dict[str, torch.Tensor]] = {}
    kw = dict(method="ga_gd", seed=3, progress=False, batch_size=8)
    unlearn(
        toy_base,
        micro_world.forget,
        micro_world.retain,
        steps=5,
        checkpoints=[2, 4],
        on_checkpoint=lambda k, s: seen.__setitem__(k, _state(s)),
        **kw,
    )
    assert sorted(seen) == [2, 4]
    for k in (2, 4):
        short = _state(unlearn(toy_base, micro_world.forget, micro_world.retain, steps=k, **kw))
        assert all(torch.equal(short[n], seen[k][n]) for n in short), f"checkpoint {k} differs from a {k}-step run"
    assert not torch.equal(seen[2]["lm_head.weight"], seen[4]["lm_head.weight"])


@pytest.mark.parametrize("points", [[0], [5], [2, 7], ["2"], [True]])
def test_checkpoints_out_of_range(micro_world, toy_base, points):
    with pytest.raises(InputError, match="checkpoints"):
        unlearn(
            toy_base,
            micro_world.forget,
            micro_world.retain,
            method="ga_gd",
            steps=5,
            checkpoints=points,
            on_checkpoint=lambda k, s: None,
            progress=False,
        )


def test_checkpoints_refused_for_task_vector(micro_world, toy_base):
    with pytest.raises(InputError, match="alpha"):
        unlearn(toy_base, micro_world.forget, method="task_vector", steps=4, checkpoints=[2], progress=False)


def test_parse_schedules():
    a, b = parse_schedules(["ga_gd", "task_vector"])
    assert (a.kind, a.points) == ("steps", tuple(float(p) for p in DEFAULT_STEP_POINTS))
    assert (b.kind, b.points) == ("alpha", DEFAULT_ALPHA_POINTS)
    a, b = parse_schedules(["ga_gd", "task_vector"], "7,3")  # a bare list: every step-trained method
    assert a.points == (3.0, 7.0) and b.points == DEFAULT_ALPHA_POINTS
    a, b = parse_schedules(["ga_gd", "task_vector"], "ga_gd=4, 2; task_vector=0.5")
    assert a.points == (2.0, 4.0) and b.points == (0.5,)
    assert a.label(4.0) == "ga_gd@4" and b.label(0.5) == "task_vector@a0.5"
    for bad in ("rmu=5", "ga_gd=2.5", "ga_gd=0", "ga_gd=3,3", "task_vector=-1", "ga_gd=x", "ga_gd="):
        with pytest.raises(InputError):
            parse_schedules(["ga_gd", "task_vector"], bad)
    with pytest.raises(UnknownNameError):
        parse_schedules(["nope"])


def _rate(x: float, n: int = 100) -> Rate:
    return Rate(round(x * n), n, x, max(0.0, x - 0.1), min(1.0, x + 0.1))


def _pt(method: str, strength: float, val: float, seed: int = 0, verdict: str = "suppression") -> SweepPoint:
    r = _rate(0.5)
    return SweepPoint(
        f"{method}@{strength:g}" + (f".s{seed}" if seed else ""),
        method,
        "steps",
        strength,
        seed,
        _rate(val),
        r,
        r,
        r,
        r,
        _rate(0.0),
        None,
        verdict,
    )


def test_choose_matched_takes_the_strongest_point_in_the_band():
    pts = [
        _pt("a", 5, 0.80),
        _pt("a", 10, 0.73),
        _pt("a", 20, 0.71),
        _pt("b", 5, 0.70),
        _pt("b", 10, 0.60),
        _pt("c", 5, 0.80),
        _pt("c", 10, 0.50),
        _pt("c", 20, 0.75),
        _pt("a", 5, 0.50, seed=1),
    ]
    got = {(c.method, c.seed): c for c in choose_matched(pts, base_validation=0.8, band=0.9)}  # threshold 0.72
    assert got[("a", 0)].point == "a@10" and "a@20" in got[("a", 0)].reason
    assert got[("b", 0)].point is None and "cannot unlearn" in got[("b", 0)].reason
    assert got[("c", 0)].point == "c@20"  # the strongest in the band, even past a point outside it
    assert got[("a", 1)].point is None
    assert got[("a", 0)].threshold == pytest.approx(0.72)
    assert [c.point for c in choose_matched(pts, base_validation=0.8, band=1.0)][:1] == ["a@5"]
    for band in (0.0, 1.5):
        with pytest.raises(InputError, match="band"):
            choose_matched(pts, 0.8, band)
    weak = [_pt("d", 5, 0.8, verdict="not_unlearned"), _pt("d", 10, 0.5)]
    assert "barely unlearns" in choose_matched(weak, 0.8)[0].reason


def test_verdict_stability_across_seeds():
    pts = [_pt("a", 5, 0.8, seed=s, verdict=v) for s, v in ((0, "suppression"), (1, "suppression"), (2, "removal"))]
    pts.append(_pt("b", 5, 0.1, seed=0))
    base = _rate(0.8)
    res = SweepResult([], [0, 1, 2], 0.9, base, pts, choose_matched(pts, 0.8), [], {}, {})
    st = res.stability()
    assert st["a"]["majority"] == "suppression" and (st["a"]["agree"], st["a"]["n"]) == (2, 3)
    assert st["b"]["points"] == {0: None} and st["b"]["majority"] == "no point in the band"
    assert "suppression in 2 of 3 seeds" in res.table()


def test_split_validation_is_disjoint_by_fact(micro_world):
    from unpact.evidence import cluster_keys

    retain = micro_world.retain
    audited, val = split_validation(retain, 40, max_retain=60)
    keys = cluster_keys(retain, by="fact")
    assert len(val) == 40 and len({keys[e.id] for e in val}) == 40  # one phrasing per fact
    assert not {keys[e.id] for e in val} & {keys[e.id] for e in audited}
    assert audited[:60] == list(retain[:60])  # the audit's first max_retain items are untouched
    assert len({e.meta["attribute"] for e in val}) > 3  # spread over facts, not one attribute
    audited2, val2 = split_validation(retain, 40)  # every retain item audited: facts leave the audit
    assert len(audited2) + sum(keys[e.id] in {keys[v.id] for v in val2} for e in retain) == len(retain)
    with pytest.raises(InputError):
        split_validation(retain, 0)
    with pytest.raises(InputError):
        split_validation(retain[:3], 10)  # nothing would stay for the audit


def test_task_vector_alpha_points_are_the_alpha_runs(micro_world, toy_base, tmp_path):
    from unpact.audit.auditdir import AuditDir
    from unpact.models import load_model
    from unpact.sweep.run import _unlearn_schedule
    from unpact.sweep.schedule import Schedule

    sched = Schedule("task_vector", "alpha", (0.5, 2.0))
    d = AuditDir.create(tmp_path / "tv")
    _unlearn_schedule(toy_base, micro_world.forget, [], sched, 0, d, ["tv@a0.5", "tv@a2"], False, {"steps": 3})
    for alpha, name in ((0.5, "tv@a0.5"), (2.0, "tv@a2")):
        direct = _state(
            unlearn(toy_base, micro_world.forget, method="task_vector", steps=3, alpha=alpha, progress=False)
        )
        saved = _state(load_model(str(d.model_dir(name))))
        for n, v in direct.items():
            torch.testing.assert_close(saved[n], v, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_sweep_end_to_end_and_resume(micro_world, toy_base, tmp_path, monkeypatch):
    from unpact.audit.config import AuditConfig

    cfg = AuditConfig(preset="micro", max_forget=24, attacks=("repeat", "embed_scale")).with_preset_limits()
    kw = dict(retain_only=micro_world.load_retain_only(), points="3,6", config=cfg, progress=False, n_validation=30)
    out = tmp_path / "sweep"
    res = sweep(toy_base, micro_world.forget, micro_world.retain, ["ga_gd", "rmu"], out=out, **kw)
    assert [p.name for p in res.points] == ["ga_gd@3", "ga_gd@6", "rmu@3", "rmu@6"]
    assert SweepResult.load(out).to_dict() == json.loads(json.dumps(res.to_dict()))
    for p in res.points:
        assert (out / "models" / p.name / "config.json").exists()
        assert p.validation.n == 30 and p.forget_acc.n == 24
        assert p.verdict in (
            "removal",
            "suppression",
            "destruction",
            "not_unlearned",
            "insufficient_data",
            "inconclusive",
        )
    recorded = json.loads((out / "models" / "ga_gd@3" / "config.json").read_text())["unpact_unlearn"]
    assert recorded["steps"] == 3 and recorded["method"] == "ga_gd"
    assert {c.method for c in res.choices} == {"ga_gd", "rmu"}
    for c in res.choices:
        pts = [p for p in res.points if p.method == c.method]
        inside = [p for p in pts if p.validation.rate >= c.threshold]
        assert c.point == (inside[-1].name if inside else None)
    table = res.table()
    assert "ga_gd@6" in table and "band" in table

    # resumed: nothing is unlearned again and the result is the same
    import unpact.unlearn

    def boom(*a, **k):
        raise AssertionError("a resumed sweep must not unlearn again")

    monkeypatch.setattr(unpact.unlearn, "unlearn", boom)
    again = sweep(toy_base, micro_world.forget, micro_world.retain, ["ga_gd", "rmu"], out=out, **kw)
    assert [p.to_dict() for p in again.points] == [p.to_dict() for p in res.points]

    from viz.sweep import pareto_front, save_sweep_plots

    paths = save_sweep_plots(res, out)
    assert [p.name for p in paths] == ["tradeoff.png", "recovery_vs_strength.png"] and all(
        p.stat().st_size for p in paths
    )
    assert pareto_front([(0.5, 0.2), (0.6, 0.3), (0.4, 0.25), (0.6, 0.4)]) == [(0.5, 0.2), (0.6, 0.3)]


def test_sweep_cli_errors(tmp_path, capsys):
    from unpact.cli import main

    assert main(["sweep", "--out", str(tmp_path / "s"), "--base", "x"]) == 2
    assert "needs --base, --forget and --retain" in capsys.readouterr().err
    assert main(["sweep", "--out", str(tmp_path / "s"), "--seeds", "a"]) == 2


@pytest.mark.slow
def test_matched_toyworld_audit(micro_world, tmp_path, monkeypatch):
    """The toy world's default audit judges each method at its matched point, with the standard metrics."""
    from unpact.audit import AuditConfig, audit_toyworld
    from unpact.evidence import cluster_keys
    from unpact.sweep import DEFAULT_VALIDATION, split_validation

    monkeypatch.setenv("UNPACT_CACHE", str(Path(micro_world.root).parent))
    out = tmp_path / "audit"
    cfg = AuditConfig(
        preset="micro",
        out=str(out),
        methods=("ga_gd",),
        sweep_points="3,6",
        max_forget=24,
        progress=False,
        probes=False,
        directions=False,
        soft_prompt=False,
        diff_attacks=False,
        relearn=False,
        quantize=False,
        circuits=0,
        lens=False,
        attacks=("repeat",),
        standard_items=20,
        band=0.5,
    )
    assert cfg.strength == "matched"
    summary = audit_toyworld(cfg)
    res = SweepResult.load(out / "sweep")
    choice = res.choices[0]
    assert choice.point is not None and res.band == 0.5
    t = summary.models["ga_gd"].sections["tradeoff"]
    assert t["point"] == choice.point and t["reason"] == choice.reason
    assert summary.models["base"].sections["tradeoff"]["choices"][0]["point"] == choice.point
    rec = json.loads((out / "models" / "ga_gd" / "config.json").read_text())["unpact_unlearn"]
    assert rec["steps"] == int(res.chosen("ga_gd").strength)
    # the audited retain items never share a fact with the validation items the point was chosen on
    _, val = split_validation(micro_world.retain, DEFAULT_VALIDATION, max_retain=60)
    keys = cluster_keys(micro_world.retain, by="fact")
    audited = {r["item"] for r in (json.loads(line) for line in (out / "records.jsonl").read_text().splitlines())}
    assert not {keys[e.id] for e in val} & {keys[i] for i in audited if i in keys}
    sm = summary.models["ga_gd"].sections["standard_metrics"]
    assert sm["forget_quality"]["n"] == [20, 20] and sm["n_holdout"] == 20
    assert set(sm["privleak"]) == {"loss", "zlib", "min_k", "min_k_plus_plus"}
    assert "forget_quality" not in summary.models["retain_only"].sections["standard_metrics"]
    assert (out / "metrics" / "ga_gd.json").exists()
    var = summary.models["ga_gd"].sections["variants"]
    assert set(var) == {"forget_heldout", "forget_bios"}
    assert var["forget_heldout"]["n"] == len(micro_world.forget_heldout) and "retain_only" in var["forget_bios"]
    base_var = summary.models["base"].sections["variants"]["forget_heldout"]
    assert base_var["accuracy"]["rate"] > base_var["retain_only"]["rate"]  # the base knows some held-out phrasings

    from viz.report import write_report

    html = Path(write_report(out)).read_text()
    assert "Trade-off: the strength sweep" in html and "standard metrics (TOFU, MUSE)" in html
    assert "Other wordings of the forget facts" in html
    assert "could not be drawn" not in html


def test_metrics_agreement():
    from viz.report_tradeoff import metrics_agreement

    fq = lambda p: {"forget_quality": {"pvalue": p}}
    assert metrics_agreement(fq(0.001), "suppression").startswith("agree: both")
    assert metrics_agreement(fq(0.5), "removal").startswith("agree: neither")
    assert "the attacks recover it" in metrics_agreement(fq(0.5), "suppression")
    assert "finds nothing recoverable" in metrics_agreement(fq(0.001), "removal")
    assert metrics_agreement({}, "removal") == "-"


def test_sweep_refuses_another_sweeps_directory_before_any_work(micro_world, toy_base, tmp_path, monkeypatch):
    from unpact.audit.auditdir import AuditDir
    from unpact.errors import AuditConfigMismatch
    from unpact.sweep.run import _check_sweep_key

    d = AuditDir.create(tmp_path / "s")
    _check_sweep_key(d, {"seeds": [0]})
    _check_sweep_key(d, {"seeds": [0]})  # the same settings resume
    with pytest.raises(AuditConfigMismatch, match="seeds"):
        _check_sweep_key(d, {"seeds": [1]})
    import unpact.unlearn

    monkeypatch.setattr(unpact.unlearn, "unlearn", lambda *a, **k: pytest.fail("no work before the checks"))
    for kw in ({"band": 1.5}, {"points": "nan"}, {"points": "ga_gd=2;ga_gd=3"}, {"seeds": ()}):
        with pytest.raises(InputError):
            sweep(toy_base, micro_world.forget, micro_world.retain, ["ga_gd"], out=tmp_path / "t", **kw)
    assert not (tmp_path / "t").exists()  # nothing written for bad input
