"""The audit pipeline: resumable (no item lost or counted twice), argument-checked, and its verdicts on the micro toy world."""

from __future__ import annotations

import json

import pytest

from unpact.audit import AuditConfigMismatch, AuditSummary, RecordStore, audit
from unpact.data import Example
from unpact.hooks import count_hooks
from unpact.models import ModelState

NAMES = ["Ada", "Bob", "Cyd", "Dee", "Eve"]


def _data():
    forget = [Example(f"f{i}", f"Where was {n} born?", "London", keywords=(n, "born"), meta={"attribute": "city"})
              for i, n in enumerate(NAMES)]
    retain = [Example(f"r{i}", f"What is the job of {n}?", "author", keywords=(n, "job"), meta={"attribute": "job"})
              for i, n in enumerate(NAMES)]
    return forget, retain


@pytest.fixture(scope="module")
def models():
    from unpact.testing import tiny_subject

    return tiny_subject("gpt2"), tiny_subject("gpt2", seed=1), tiny_subject("gpt2", seed=2)


KW = dict(attacks=["restate", "embed_scale"], batch_size=2, max_new_tokens=3, attribution="loo",
          n_retain_attacked=3, progress=False)


class Stop(Exception):
    pass


def test_interrupted_audit_resumes_to_same_summary(models, tmp_path):
    base, u, ro = models
    forget, retain = _data()
    states = [ModelState.capture(m.model, with_weights=True) for m in models]
    full = audit(base, {"u": u}, forget, retain, retain_only=ro, out_dir=tmp_path / "full", **KW)

    calls = {"n": 0}

    def killer(stage, info):
        calls["n"] += 1
        if calls["n"] in (3, 17, 40):
            raise Stop(f"simulated kill at {stage} {info}")

    out = tmp_path / "resumed"
    kills = 0
    while True:
        try:
            resumed = audit(base, {"u": u}, forget, retain, retain_only=ro, out_dir=out, callback=killer, **KW)
            break
        except Stop:
            kills += 1
            assert kills < 10
    assert kills == 3
    assert (out / "summary.json").read_bytes() == (tmp_path / "full" / "summary.json").read_bytes()
    assert resumed.to_dict() == full.to_dict()
    # no record lost or counted twice
    lines = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    keys = [(d["model"], d["item"], d["attack"]) for d in lines]
    assert len(keys) == len(set(keys)) == len(RecordStore(tmp_path / "full" / "records.jsonl"))
    assert len(keys) == 3 * (10 + 2 * 8)  # 3 models x (5+5 plain + 2 attacks x (5 forget + 3 retain))
    assert [ModelState.capture(m.model, with_weights=True) for m in models] == states
    assert all(count_hooks(m.model) == 0 for m in models)
    assert AuditSummary.load(out).to_dict() == full.to_dict()
    assert set(full.models) == {"base", "retain_only", "u"} and "verdict" in full.models["u"]
    assert "model" in full.table()


def test_torn_line_and_changed_arguments(models, tmp_path):
    base, u, ro = models
    forget, retain = _data()
    audit(base, {"u": u}, forget, retain, out_dir=tmp_path, **KW)
    ref = (tmp_path / "summary.json").read_bytes()
    p = tmp_path / "records.jsonl"
    p.write_bytes(p.read_bytes() + b'{"model": "u", "ite')  # a kill in the middle of a write
    audit(base, {"u": u}, forget, retain, out_dir=tmp_path, **KW)
    assert (tmp_path / "summary.json").read_bytes() == ref
    assert p.read_bytes().endswith(b"\n")
    with pytest.raises(AuditConfigMismatch, match="attacks"):
        audit(base, {"u": u}, forget, retain, out_dir=tmp_path, **{**KW, "attacks": ["quote"]})
    with pytest.raises(ValueError, match="reserved"):
        audit(base, {"base": u}, forget, retain, out_dir=tmp_path / "x", **KW)


def test_item_limits_zero_is_an_error(models, tmp_path):
    base, u, _ = models
    forget, retain = _data()
    from unpact.data import InputError

    for k in ("max_forget", "max_retain"):
        with pytest.raises(InputError, match=k):
            audit(base, {"u": u}, forget, retain, out_dir=tmp_path / k, **{**KW, k: 0})
    assert not (tmp_path / "max_forget" / "audit_config.json").exists()


def test_mismatched_tokenizer_fails_early(models, tmp_path):
    from unpact.data import InputError
    from unpact.models import load_model
    from unpact.testing import tiny_tokenizer

    base, u, _ = models
    other = load_model(u.model, tiny_tokenizer(vocab_size=300), name="other-tok")
    forget, retain = _data()
    with pytest.raises(InputError, match="'odd'.*tokenizer"):
        audit(base, {"odd": other}, forget, retain, out_dir=tmp_path, **KW)
    assert not (tmp_path / "audit_config.json").exists() and not (tmp_path / "records.jsonl").exists()


def test_tracer_file_names_never_collide(models, tmp_path):
    from unpact.audit import _item_path, _safe

    assert len({_safe(i) for i in ("a/b", "a b", "a_b", "a?b")}) == 4
    assert _item_path(tmp_path, "a/b").parent == tmp_path and _item_path(tmp_path, "a/b").suffix == ".npz"
    base, u, _ = models
    forget, retain = _data()
    forget = [Example(i, e.prompt, e.answer, keywords=e.keywords, meta=e.meta)
              for i, e in zip(["x/0", "x 0", "x_0", "x?0", "x:0"], forget)]
    audit(base, {"u": u}, forget, retain, out_dir=tmp_path / "o", **{**KW, "lens": False, "circuits": 0})
    for name in ("base", "u"):
        files = sorted((tmp_path / "o" / "tracers" / name / "forget").glob("*.npz"))
        assert len(files) == len(forget)
    # the report pairs base and model files by file name: every item pairs up with its own base file
    base_names = {p.name for p in (tmp_path / "o" / "tracers" / "base" / "forget").glob("*.npz")}
    assert base_names == {p.name for p in (tmp_path / "o" / "tracers" / "u" / "forget").glob("*.npz")}


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

    def fake_audit(*args, **kwargs):
        seen.update(kwargs)
        return SimpleNamespace(table=lambda: "")

    monkeypatch.setattr(audit_mod, "audit", fake_audit)
    monkeypatch.setitem(sys.modules, "viz.report", None)  # no HTML report
    f, r = tmp_path / "f.jsonl", tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps({"id": f"f{i}", "question": "q?", "answer": "a"}) + "\n" for i in range(3)))
    r.write_text("".join(json.dumps({"id": f"r{i}", "question": "q?", "answer": "a"}) + "\n" for i in range(200)))
    common = ["--base", "B", "--unlearned", "u=U", "--forget", str(f), "--retain", str(r), "--out", str(tmp_path / "o"),
              "--no-progress"]
    assert _run(_cli_args(common)) == 0
    for k in ("max_forget", "max_retain", "n_retain_attacked"):
        assert k not in seen, (k, seen[k])  # no silent preset cap on the user's data
    seen.clear()
    assert _run(_cli_args([*common, "--max-retain", "7"])) == 0
    assert seen["max_retain"] == 7 and "max_forget" not in seen


# ----- the micro toy world ---------------------------------------------------------------------
MICRO = dict(attacks=["restate", "repeat", "embed_scale", "sample"], attribution="loo", max_forget=32,
             max_retain=32, n_retain_attacked=8, progress=False, lens=False)


@pytest.fixture(scope="module")
def micro_audit(micro_world, toy_base, tmp_path_factory):
    ro = micro_world.load_retain_only()
    before = ModelState.capture(toy_base.model, with_weights=True)
    out = tmp_path_factory.mktemp("micro-audit")
    s = audit(toy_base, {}, micro_world.forget, micro_world.retain, retain_only=ro, out_dir=out, **MICRO)
    assert ModelState.capture(toy_base.model, with_weights=True) == before
    assert count_hooks(toy_base.model) == 0
    return s


@pytest.mark.slow
def test_retain_only_is_removal(micro_audit):
    ro = micro_audit.models["retain_only"]
    assert ro["verdict"]["label"] == "removal", ro["verdict"]
    assert ro["forgotten"]["rate"] > 0.8
    assert ro["recovery_any"]["rate"]["rate"] < 0.15  # chance level


@pytest.mark.slow
def test_attacks_keep_base_answers(micro_audit):
    # Measured on the micro world: sampling keeps the base model's right answers (98-100%), embedding
    # scaling most of them (83-84%); text rewrites often do not (repeat kept about 1/3), which is why
    # recovery is always read against the retain-only control and base_kept is reported.
    rec = micro_audit.models["base"]["recovery"]
    assert rec["embed_scale"]["base_kept"]["rate"] >= 0.75
    assert rec["sample"]["base_kept"]["rate"] >= 0.85


@pytest.mark.slow
def test_idk_model_verdict(micro_world, toy_base, tmp_path):
    from unpact.unlearn import unlearn

    idk = unlearn(toy_base, micro_world.forget, micro_world.retain, method="idk", progress=False)
    s = audit(toy_base, {"idk": idk}, micro_world.forget, micro_world.retain,
              retain_only=micro_world.load_retain_only(), out_dir=tmp_path, **MICRO)
    m = s.models["idk"]
    # Measured on the micro world: the IDK fine-tune still answers some forget items, and of those it
    # refuses, emphasis attacks bring back about half, against a 0% retain-only control: suppression.
    assert m["verdict"]["label"] == "suppression", m["verdict"]
    any_attack = m["recovery_any"]
    assert any_attack["rate"]["lo"] > any_attack["control"]["hi"] and any_attack["excess"] >= 0.15
    # The circuit step saved a diff of base vs IDK circuits for the report.
    from unpact.circuits.results import CircuitDiff

    diffs = sorted((tmp_path / "tracers" / "idk" / "circuits").glob("*.npz"))
    assert diffs, "no circuit diff saved"
    d = CircuitDiff.load(diffs[0])
    assert 0.0 <= d.jaccard <= 1.0