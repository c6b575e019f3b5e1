"""The audit pipeline: resumable (no item lost or counted twice), checked inputs and directory, and its verdicts
on the micro toy world, against a committed golden summary."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from unpact.audit import AuditConfig, AuditConfigMismatch, AuditDir, AuditSummary, Models, RecordStore, audit
from unpact.data import Example
from unpact.errors import AuditDirError, DataFileError, InputError
from unpact.hooks import count_hooks
from unpact.models import ModelState

NAMES = ["Ada", "Bob", "Cyd", "Dee", "Eve"]
GOLDEN = Path(__file__).parent / "golden" / "micro_audit_summary.json"


def _data():
    forget = [
        Example(f"f{i}", f"Where was {n} born?", "London", keywords=(n, "born"), meta={"attribute": "city"})
        for i, n in enumerate(NAMES)
    ]
    retain = [
        Example(f"r{i}", f"What is the job of {n}?", "author", keywords=(n, "job"), meta={"attribute": "job"})
        for i, n in enumerate(NAMES)
    ]
    return forget, retain


@pytest.fixture(scope="module")
def models():
    from unpact.testing import tiny_subject

    return tiny_subject("gpt2"), tiny_subject("gpt2", seed=1), tiny_subject("gpt2", seed=2)


def cfg(out, **kw):
    base = dict(
        attacks=("restate", "embed_scale"),
        batch_size=2,
        max_new_tokens=3,
        attribution="loo",
        n_retain_attacked=3,
        progress=False,
        workers=1,
        min_base_accuracy=0.0,  # random tiny models know no facts
    )
    return AuditConfig(out=str(out), **{**base, **kw})


class Stop(Exception):
    pass


def test_interrupted_audit_resumes_to_same_summary(models, tmp_path):
    base, u, ro = models
    forget, retain = _data()
    states = [ModelState.capture(m.model, with_weights=True) for m in models]
    ms = Models(base, {"u": u}, retain_only=ro)
    full = audit(cfg(tmp_path / "full"), ms, forget, retain)

    calls = {"n": 0}

    def killer(stage, info):
        calls["n"] += 1
        if calls["n"] in (3, 17, 40):
            raise Stop(f"simulated kill at {stage} {info}")

    out = tmp_path / "resumed"
    kills = 0
    while True:
        try:
            resumed = audit(cfg(out), ms, forget, retain, callback=killer)
            break
        except Stop:
            kills += 1
            assert kills < 10
    assert kills == 3
    strip = lambda s: {**s.to_dict(), "config": {**s.to_dict()["config"], "out": None}}
    assert strip(resumed) == strip(full)
    # no record lost or counted twice
    lines = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    keys = [(d["model"], d["item"], d["attack"]) for d in lines]
    assert len(keys) == len(set(keys)) == len(RecordStore(tmp_path / "full" / "records.jsonl"))
    assert len(keys) == 3 * (10 + 2 * 8)  # 3 models x (5+5 plain + 2 attacks x (5 forget + 3 retain))
    assert [ModelState.capture(m.model, with_weights=True) for m in models] == states
    assert all(count_hooks(m.model) == 0 for m in models)
    assert AuditDir(out).read_summary().to_dict() == resumed.to_dict()
    assert set(full.models) == {"base", "retain_only", "u"} and full.models["u"].verdict is not None
    # ReLearn's perplexity under the model that never saw the forget facts, for forget and retain answers
    assert {m.quality.ppl_model for m in full.models.values() if m.quality} == {"retain_only"}
    assert all(m.quality and (m.quality.n_forget, m.quality.n_retain) == (5, 5) for m in full.models.values())
    assert "model" in full.table()
    # files written atomically and appended share one mode
    modes = {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()}
    assert len(modes) == 1, modes


def test_torn_line_and_changed_settings(models, tmp_path):
    base, u, ro = models
    forget, retain = _data()
    ms = Models(base, {"u": u})
    first = audit(cfg(tmp_path), ms, forget, retain)
    assert {m.quality.ppl_model for m in first.models.values() if m.quality} == {"base"}  # no retain-only model
    ref = (tmp_path / "summary.json").read_bytes()
    p = tmp_path / "records.jsonl"
    p.write_bytes(p.read_bytes() + b'{"model": "u", "ite')  # a kill in the middle of a write
    audit(cfg(tmp_path), ms, forget, retain)
    assert (tmp_path / "summary.json").read_bytes() == ref
    assert p.read_bytes().endswith(b"\n")
    with pytest.raises(AuditConfigMismatch, match="settings.attacks"):
        audit(cfg(tmp_path, attacks=("quote",)), ms, forget, retain)
    # changed data (same ids, other answer) or another model under the same name: refused, not mixed
    changed = [dataclasses.replace(forget[0], answer="Paris"), *forget[1:]]
    with pytest.raises(AuditConfigMismatch, match="data.forget"):
        audit(cfg(tmp_path), ms, changed, retain)
    with pytest.raises(AuditConfigMismatch, match="models.u"):
        audit(cfg(tmp_path), Models(base, {"u": ro}), forget, retain)
    # settings that do not change the records may change
    audit(
        cfg(tmp_path, circuits=0, lens=False, rule=dataclasses.replace(AuditConfig().rule, min_excess=0.3)),
        ms,
        forget,
        retain,
    )


@pytest.mark.parametrize("name", ["base", "retain_only", "../../x", "/abs", "", "a/b", ".hidden", "x" * 101])
def test_bad_model_names_are_refused(models, name):
    base, u, _ = models
    with pytest.raises(InputError, match="model name"):
        Models(base, {name: u})


def test_bad_settings_are_refused(tmp_path):
    for kw, msg in (
        (dict(max_forget=0), "max_forget must be >= 1"),
        (dict(max_retain=0), "max_retain"),
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(n_retain_attacked=-1), ">= 0"),
        (dict(circuits=-2), "circuits"),
        (dict(attacks="restate"), "list of names"),
        (dict(attribution="shap"), "one of"),
        (dict(ig_steps=1.5), "must be int"),
    ):
        with pytest.raises(InputError, match=msg):
            cfg(tmp_path, **kw)
    with pytest.raises(InputError, match="unknown attack"):
        cfg(tmp_path, attacks=("nope",))
    assert not any(tmp_path.iterdir())


def test_output_directory_is_checked(models, tmp_path):
    base, u, _ = models
    forget, retain = _data()
    ms = Models(base, {"u": u})
    (tmp_path / "file").write_text("x")
    with pytest.raises(AuditDirError, match="is a file"):
        audit(cfg(tmp_path / "file"), ms, forget, retain)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(AuditDirError, match="not an unpact audit"):
        audit(cfg(foreign), ms, forget, retain)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # nothing written, nothing lost
    # another audit's files without its config (e.g. copied records): also refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "records.jsonl").write_text("")
    with pytest.raises(AuditDirError):
        audit(cfg(other), ms, forget, retain)
    if os.geteuid() != 0:  # root can write anywhere
        ro_dir = tmp_path / "ro"
        ro_dir.mkdir(mode=0o500)
        with pytest.raises(AuditDirError, match="cannot write"):
            audit(cfg(ro_dir / "out"), ms, forget, retain)


def test_corrupt_files_name_file_and_line(models, tmp_path):
    base, u, _ = models
    forget, retain = _data()
    ms = Models(base, {"u": u})
    audit(cfg(tmp_path, lens=False, circuits=0), ms, forget, retain)
    rec = tmp_path / "records.jsonl"
    lines = rec.read_text().splitlines()
    lines[2] = '{"model": "u", "broken": true}'
    rec.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"records.jsonl line 3: not an audit record"):
        audit(cfg(tmp_path, lens=False, circuits=0), ms, forget, retain)
    (tmp_path / "audit_config.json").write_text("{\n oops")
    with pytest.raises(DataFileError, match=r"audit_config.json line 2: not valid JSON"):
        audit(cfg(tmp_path, lens=False, circuits=0), ms, forget, retain)


def test_mismatched_tokenizer_fails_early(models, tmp_path):
    from unpact.models import load_model
    from unpact.testing import tiny_tokenizer

    base, u, _ = models
    other = load_model(u.model, tiny_tokenizer(vocab_size=300), name="other-tok")
    with pytest.raises(InputError, match="'odd'.*tokenizer"):
        Models(base, {"odd": other})


def test_same_directory_as_unlearned_and_control_warns(models, tmp_path, caplog):
    base, u, _ = models
    u.model.save_pretrained(tmp_path / "m")
    u.tokenizer.save_pretrained(tmp_path / "m")
    with caplog.at_level("WARNING"):
        Models(base, {"u": tmp_path / "m"}, retain_only=str(tmp_path / "m"))
    assert "same directory" in caplog.text


def test_tracer_file_names_never_collide(models, tmp_path):
    from unpact.audit.auditdir import item_file_name

    assert len({item_file_name(i) for i in ("a/b", "a b", "a_b", "a?b", "../a")}) == 5
    d = AuditDir(tmp_path)
    assert d.tracer_path("u", "forget", "../../x").parent == tmp_path / "tracers" / "u" / "forget"
    with pytest.raises(InputError):
        d.tracer_path("../u", "forget", "x")
    base, u, _ = models
    forget, retain = _data()
    forget = [dataclasses.replace(e, id=i) for i, e in zip(["x/0", "x 0", "x_0", "x?0", "x:0"], forget)]
    audit(cfg(tmp_path / "o", lens=False, circuits=0), Models(base, {"u": u}), forget, retain)
    out = AuditDir(tmp_path / "o")
    for name in ("base", "u"):
        assert len(out.tracer_files(name, "forget")) == len(forget)
    # the report pairs base and model files by file name: every item pairs up with its own base file
    assert {p.name for p in out.tracer_files("base", "forget")} == {p.name for p in out.tracer_files("u", "forget")}


def test_worker_processes_give_the_same_records(models, tmp_path):
    base, u, ro = models
    forget, retain = _data()
    ms = Models(base, {"u": u}, ro)
    kw = dict(lens=False, circuits=0, attacks=("restate", "sample", "attn_bias"))
    one = audit(cfg(tmp_path / "one", **kw), ms, forget, retain)
    stop = {"n": 0}

    def killer(stage, info):  # a stop while worker processes hold queued units
        stop["n"] += 1
        if stop["n"] == 4:
            raise Stop("simulated kill")

    with pytest.raises(Stop):
        audit(cfg(tmp_path / "two", workers=2, **kw), ms, forget, retain, callback=killer)
    two = audit(cfg(tmp_path / "two", workers=2, **kw), ms, forget, retain)
    recs = [{json.dumps(r, sort_keys=True) for r in AuditDir.open(tmp_path / d).read_records()} for d in ("one", "two")]
    assert recs[0] == recs[1] and len(recs[0]) > 0
    assert _comparable(one.to_dict())["models"] == _comparable(two.to_dict())["models"]


def test_stages_are_listed_and_skipped_when_done(models, tmp_path):
    from unpact.audit.stages import default_stages

    names = [s.name for s in default_stages()]
    assert names[:3] == ["keywords", "accuracy", "attacks"] and names[-1] == "verdict"
    assert all(s.writes for s in default_stages())
    base, u, _ = models
    forget, retain = _data()
    ms = Models(base, {"u": u})
    seen: list[str] = []
    audit(cfg(tmp_path, lens=False, circuits=0), ms, forget, retain, callback=lambda st, info: seen.append(st))
    assert {"keywords", "accuracy", "attacks", "attribution"} <= set(seen)
    first = AuditDir.open(tmp_path).read_timings()
    seen.clear()
    audit(cfg(tmp_path, lens=False, circuits=0), ms, forget, retain, callback=lambda st, info: seen.append(st))
    assert seen == []  # every saving stage was done: nothing recomputed
    # the plan counted the work before it started, and timings.json has the seconds each stage took
    n_models, n_attacks = len(ms.names), 2
    assert first["work"]["accuracy"]["decode"] == n_models * (len(forget) + len(retain))
    assert first["work"]["attacks"]["decode"] == n_models * n_attacks * (len(forget) + 3)
    assert first["work"]["attribution"]["attribute"] == n_models * (len(forget) + 3)
    assert "lens" not in first["work"] and first["estimated_total_seconds"] > 0
    assert {"keywords", "accuracy", "attacks", "attribution"} <= set(first["seconds"])
    again = AuditDir.open(tmp_path).read_timings()
    assert all(w == {"decode": 0, "attribute": 0, "forward": 0} for w in again["work"].values())
    assert again["estimated_total_seconds"] == 0


def _cli_args(argv):
    import argparse

    from unpact._cli.audit import register

    p = argparse.ArgumentParser()
    register(p.add_subparsers())
    return p.parse_args(["audit", *argv])


def test_cli_user_mode_uses_audit_defaults(tmp_path, monkeypatch):
    import sys
    from types import SimpleNamespace

    import unpact.audit as audit_mod
    from unpact._cli.audit import _run

    seen = {}

    def fake_audit(config, models, forget, retain, shard=None):
        seen.update(config=config, forget=forget, retain=retain)
        return SimpleNamespace(table=lambda: "")

    monkeypatch.setattr(audit_mod, "audit", fake_audit)
    monkeypatch.setattr(audit_mod, "Models", lambda *a, **k: None)
    monkeypatch.setitem(sys.modules, "viz.report", None)  # no HTML report
    f, r = tmp_path / "f.jsonl", tmp_path / "r.jsonl"
    # TOFU files have no ids: each split gets its own, so they do not collide
    f.write_text("".join(json.dumps({"question": "q?", "answer": "a"}) + "\n" for _ in range(3)))
    r.write_text("".join(json.dumps({"question": "q?", "answer": "a"}) + "\n" for _ in range(200)))
    common = [
        "--base",
        "B",
        "--unlearned",
        "u=U",
        "--forget",
        str(f),
        "--retain",
        str(r),
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert _run(_cli_args(common)) == 0
    c = seen["config"]
    assert c.max_forget is None and c.max_retain is None and c.n_retain_attacked is None  # no silent preset cap
    assert [e.id for e in seen["forget"]] == ["forget-0", "forget-1", "forget-2"]
    assert seen["retain"][0].id == "retain-0"
    assert _run(_cli_args([*common, "--max-retain", "7"])) == 0
    assert seen["config"].max_retain == 7 and seen["config"].max_forget is None


# ----- the micro toy world: a golden audit --------------------------------------------------------
MICRO = dict(
    attacks=("restate", "repeat", "embed_scale", "sample"),
    attribution="loo",
    max_forget=32,
    max_retain=32,
    n_retain_attacked=8,
    progress=False,
    lens=False,
    circuits=2,
)


def _comparable(d: dict) -> dict:
    """A summary dict without the machine-specific output path."""
    return {**d, "config": {k: v for k, v in d["config"].items() if k != "out"}}


@pytest.fixture(scope="module")
def micro_audit(micro_world, toy_base, tmp_path_factory):
    from unpact.unlearn import unlearn

    idk = unlearn(toy_base, micro_world.forget, micro_world.retain, method="idk", progress=False)
    before = ModelState.capture(toy_base.model, with_weights=True)
    out = tmp_path_factory.mktemp("micro-audit")
    s = audit(
        AuditConfig(out=str(out), **MICRO),
        Models(toy_base, {"idk": idk}, micro_world.load_retain_only()),
        micro_world.forget,
        micro_world.retain,
    )
    assert ModelState.capture(toy_base.model, with_weights=True) == before
    assert count_hooks(toy_base.model) == 0
    return s, out


@pytest.mark.slow
def test_golden_micro_audit(micro_audit):
    """The micro-world audit (fixed seeds) reproduces the committed summary: any change to what the audit
    computes shows up here. After an intended change, regenerate the file with
    ``UNPACT_UPDATE_GOLDEN=1 pytest tests/test_audit.py -k golden`` and review the diff."""
    s, _ = micro_audit
    got = _comparable(s.to_dict())
    if os.environ.get("UNPACT_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert AuditSummary.from_dict(want).verdicts() == s.verdicts()
    assert _approx_equal(got, want)


def _approx_equal(a, b, path="") -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), (path, sorted(set(a) ^ set(b)))
        return all(_approx_equal(a[k], b[k], f"{path}.{k}") for k in a)
    if isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        return all(_approx_equal(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), (path, a, b)
        return True
    assert a == b, (path, a, b)
    return True


@pytest.mark.slow
def test_retain_only_is_removal(micro_audit):
    ro = micro_audit[0].models["retain_only"]
    # 32 items about one person (about six facts): the clustered intervals cannot exclude the 15-point margin, so
    # the verdict is inconclusive rather than removal; nothing is recoverable at any level
    assert ro.verdict.label in ("removal", "inconclusive"), ro.verdict
    assert "recoverable" not in ro.verdict.levels.values() and "residue" not in ro.verdict.levels.values()
    assert ro.scores.forgotten.rate > 0.8
    assert ro.scores.recovery_any.rate.rate < 0.15  # chance level


@pytest.mark.slow
def test_attacks_keep_base_answers(micro_audit):
    # Measured on the micro world: sampling keeps the base model's right answers (98-100%), embedding
    # scaling most of them (83-84%); text rewrites often do not (repeat kept about 1/3), which is why
    # recovery is always read against the retain-only control and base_kept is reported.
    rec = micro_audit[0].models["base"].scores.recovery
    assert rec["embed_scale"].base_kept.rate >= 0.75
    assert rec["sample"].base_kept.rate >= 0.85


@pytest.mark.slow
def test_idk_model_verdict(micro_audit):
    s, out = micro_audit
    m = s.models["idk"]
    # Measured on the micro world: the IDK fine-tune still answers some forget items, and of those it
    # refuses, emphasis attacks bring back about half, against a 0% retain-only control (item level). On 32 items
    # about one person (about six facts) the clustered test cannot reach significance after Holm: the prompt
    # levels stay inconclusive, never "not recoverable", and the verdict is never removal.
    assert m.verdict.label != "removal", m.verdict
    assert m.verdict.levels["black_box"] != "not_recoverable"
    a = m.scores.recovery_any
    # the rates' intervals are clustered by fact (about six here), so they are wide and overlap; the excess stands
    assert a.excess >= 0.15 and a.rate.method != "wilson" and a.control.method != "wilson"
    assert a.rate.hi - a.rate.lo > 0.3
    # The circuit stage saved a diff of base vs IDK circuits for the report.
    from unpact.circuits.results import CircuitDiff

    diffs = AuditDir(out).tracer_files("idk", "circuits")
    assert diffs, "no circuit diff saved"
    assert 0.0 <= CircuitDiff.load(diffs[0]).jaccard <= 1.0


def test_docs_stage_example(models, tmp_path):
    """The worked example of docs/architecture.md: a new stage in one class, added without touching the audit."""
    import re

    from unpact.audit.stages import default_stages

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    import textwrap

    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    code = textwrap.dedent(next(b for b in blocks if "class GoldLogprobStage" in b))
    ns: dict = {}
    exec(compile(code, "docs/architecture.md", "exec"), ns)
    base, u, ro = models
    forget, retain = _data()
    s = audit(
        cfg(tmp_path, lens=False, circuits=0),
        Models(base, {"u": u}, retain_only=ro),
        forget,
        retain,
        stages=[*default_stages(), ns["GoldLogprobStage"]()],
    )
    sec = s.models["u"].sections["gold_logprob"]
    assert sec["minus_control"] == pytest.approx(
        sec["mean"] - s.models["retain_only"].sections["gold_logprob"]["mean"], abs=1e-5
    )
    assert AuditDir(tmp_path).read_summary().models["u"].sections == s.models["u"].sections


def test_tuned_lens_in_the_audit(models, tmp_path):
    """``lens_method="tuned"``: a tuned lens per model, fit on retain items only, decodes the saved trajectories."""
    from unpact.lens import LensTrajectory
    from unpact.representations import TunedLens

    base, u, ro = models
    forget, retain = _data()
    states = [ModelState.capture(m.model, with_weights=True) for m in models]
    audit(cfg(tmp_path / "a", lens_method="tuned"), Models(base, {"u": u}, retain_only=ro), forget, retain)
    d = AuditDir(tmp_path / "a")
    for name in ("base", "u", "retain_only"):
        lens = TunedLens.load(d.representations_path(name, "tuned_lens", "lens"))
        lens.check_subject({"base": base, "u": u, "retain_only": ro}[name])  # fit on that model's own weights
        traj = LensTrajectory.load(d.tracer_path(name, "lens", forget[0].id))
        assert traj.method == "tuned"
    assert [ModelState.capture(m.model, with_weights=True) for m in models] == states
    # the lens method changes what the lens stage saves: it is part of the resume key
    with pytest.raises(AuditConfigMismatch):
        audit(cfg(tmp_path / "a"), Models(base, {"u": u}, retain_only=ro), forget, retain)
