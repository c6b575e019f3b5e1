"""The toy world: knowledge-base design, determinism, caching, and what the micro models know."""

from __future__ import annotations

import json

import pytest

from unpact.evaluate import evaluate
from unpact.metrics import normalize_text
from unpact.models import weights_hash
from unpact.toyworld import ATTRIBUTES, build_toyworld, make_kb, world_config
from unpact.toyworld.kb import ALL_FORMS, HELDOUT_FORMS


def test_kb_design():
    kb = make_kb(50, seed=3)
    assert len(ATTRIBUTES) >= 6 and len(ALL_FORMS) >= 8 and set(HELDOUT_FORMS) < set(ALL_FORMS)
    names = [p.name for p in kb.people]
    assert len(set(names)) == 50
    for p in kb.people:
        assert p.facts["mother"].split()[-1] != p.name.split()[-1]  # the mother's name does not leak
    exs = kb.examples(list(kb.people), phrasing="all")
    assert len(exs) == 50 * len(ATTRIBUTES) * len(ALL_FORMS)
    for e in exs:
        assert normalize_text(e.answer) not in normalize_text(e.prompt), e  # no answer in its question
        assert set(e.meta) >= {"person", "attribute", "template", "phrasing", "emphasis"}
        assert all(k in e.prompt for k in e.keywords), e
        assert e.subject.upper() in e.prompt.upper()
    stressed = [e.prompt for e in exs if e.meta["emphasis"]]
    assert any('"' in s for s in stressed) and any(s.startswith("Focus on") for s in stressed)
    # large value sets: many distinct answers per attribute
    for attr in ("birth_city", "employer", "book", "mother"):
        assert len({p.facts[attr] for p in kb.people}) >= 45
    assert len({p.facts["profession"] for p in kb.people}) >= 20


def test_kb_deterministic_and_splits_nested():
    a, b, c = make_kb(40, seed=1), make_kb(40, seed=1), make_kb(40, seed=2)
    assert a == b and a != c
    f1, f5, f10 = (set(p.index for p in a.forget_people(k)) for k in (1, 5, 10))
    assert f1 <= f5 <= f10 and len(f10) == 4
    with pytest.raises(ValueError, match="n_people"):
        make_kb(5)


def test_config_validation():
    with pytest.raises(ValueError, match="preset"):
        world_config("huge")
    with pytest.raises(ValueError, match="setting"):
        world_config("micro", overrides={"n_layers": 3})


def test_build_is_deterministic_and_cached(tmp_path):
    # one process or the two models trained side by side in two: the same weights
    over = {"n_people": 10, "steps": 8}
    w1 = build_toyworld("micro", cache_dir=tmp_path / "a", progress=False, overrides=over, workers=1)
    w2 = build_toyworld("micro", cache_dir=tmp_path / "b", progress=False, overrides=over, workers=2)
    assert (w1.config["stats"]["train_processes"], w2.config["stats"]["train_processes"]) == (1, 2)
    h1 = weights_hash(w1.load_base().model)
    assert h1 == weights_hash(w2.load_base().model)
    assert weights_hash(w1.load_retain_only().model) == weights_hash(w2.load_retain_only().model)
    assert h1 != weights_hash(w1.load_retain_only().model)
    stamp = (w1.base_path / "model.safetensors").stat().st_mtime_ns
    again = build_toyworld("micro", cache_dir=tmp_path / "a", progress=False, overrides=over)
    assert again.root == w1.root and (again.base_path / "model.safetensors").stat().st_mtime_ns == stamp
    other = build_toyworld("micro", seed=1, cache_dir=tmp_path / "a", progress=False, overrides=over)
    assert other.root != w1.root


def test_world_files_and_splits(micro_world):
    w = micro_world
    for d in (w.base_path, w.retain_only_path):
        assert (d / "model.safetensors").exists() and (d / "tokenizer.json").exists()
    for name in ("forget01", "forget05", "forget10", "retain99", "retain95", "retain90", "forget10_heldout"):
        assert (w.root / "data" / f"{name}.json").exists()
    rec = json.loads((w.root / "data" / "forget10.json").read_text())[0]
    assert {"question", "answer", "id"} <= set(rec)
    forget_people = {e.meta["person"] for e in w.forget}
    assert forget_people.isdisjoint({e.meta["person"] for e in w.retain})
    assert len(forget_people) == max(1, round(w.config["n_people"] * 0.1))
    assert all(e.meta["phrasing"] == "trained" for e in w.forget + w.retain)
    assert all(e.meta["phrasing"] == "heldout" for e in w.forget_heldout + w.retain_heldout)
    assert {e.id for e in w.split("forget01")} <= {e.id for e in w.split("forget")}
    with pytest.raises(KeyError, match="forget10"):
        w.split("forget50")
    assert len(w.bios()) == w.config["n_people"]


def test_base_knows_retain_only_does_not(micro_world, toy_base):
    w = micro_world
    base_f = evaluate(toy_base, w.forget).accuracy()
    base_r = evaluate(toy_base, w.retain[::4]).accuracy()
    assert base_f >= 0.7 and base_r >= 0.7, (base_f, base_r)
    ro = w.load_retain_only()
    ro_f = evaluate(ro, w.forget)
    assert evaluate(ro, w.retain[::4]).accuracy() >= 0.7
    # chance: answers are drawn from value sets of 64 to thousands of values
    assert ro_f.accuracy() <= 0.1, ro_f.accuracy()
    assert ro_f.mean_logprob < evaluate(toy_base, w.forget).mean_logprob - 2.0


def test_llama_option(tmp_path):
    w = build_toyworld(
        "micro", cache_dir=tmp_path, progress=False, overrides={"arch": "llama", "n_people": 10, "steps": 4}
    )
    s = w.load_base()
    assert s.spec.model_type == "llama" and s.n_layers == 2
    res = evaluate(s, w.forget[:4], max_new_tokens=3)
    assert len(res) == 4


@pytest.mark.slow
def test_unlearned_models_are_cached_and_do_not_depend_on_workers(micro_world, tmp_path):
    import shutil

    from unpact.models import load_model
    from unpact.toyworld import ToyWorld
    from unpact.toyworld.unlearned import unlearned_models

    worlds = []
    for name in ("a", "b"):
        shutil.copytree(micro_world.root, tmp_path / name, ignore=shutil.ignore_patterns("unlearned"))
        worlds.append(ToyWorld.open(tmp_path / name))
    methods = ["ga_gd", "idk"]
    side_by_side = unlearned_models(worlds[0], methods, seed=3, progress=False, workers=2)
    one_by_one = unlearned_models(worlds[1], methods, seed=3, progress=False, workers=1)
    for m in methods:
        a, b = (weights_hash(load_model(str(p[m])).model) for p in (side_by_side, one_by_one))
        assert a == b
    stamp = (side_by_side["idk"] / "model.safetensors").stat().st_mtime_ns
    again = unlearned_models(worlds[0], methods, seed=3, progress=False)
    assert again == side_by_side and (again["idk"] / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_workers_in_an_unguarded_script_fail_with_the_fix(tmp_path):
    # spawned workers import the calling script: without a main guard they cannot start, and the error says so
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from unpact.toyworld import build_toyworld\n"
        f"build_toyworld('micro', cache_dir={str(tmp_path / 'cache')!r}, progress=False,\n"
        "               overrides={'n_people': 10, 'steps': 2}, workers=2)\n"
    )
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert 'if __name__ == "__main__":' in res.stderr and "workers=1" in res.stderr


def test_bio_cloze_items_follow_the_biography(micro_world):
    from unpact.toyworld.kb import ATTRIBUTES, bio_cloze, make_kb

    kb = make_kb(micro_world.config["n_people"], micro_world.config["seed"])
    person = kb.forget_people(10)[0]
    items = bio_cloze(person)
    bio = person.bio()
    assert [e.meta["attribute"] for e in items] == list(ATTRIBUTES)
    for e in items:
        assert f"{e.prompt} {e.answer}" in bio  # the sentence the model may have been trained on, cut at the fact
    assert {e.subject for e in micro_world.forget_bios} == {e.subject for e in micro_world.forget}
