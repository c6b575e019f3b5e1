"""Unlearning methods: each lowers forget accuracy, never touches the reference, records provenance."""

from __future__ import annotations

import json

import pytest
import torch

from unpact.cli import main
from unpact.evaluate import evaluate
from unpact.hooks import count_hooks
from unpact.models import ModelState, load_model, weights_hash
from unpact.unlearn import METHODS, unlearn


@pytest.fixture(scope="module")
def base_forget_acc(micro_world, toy_base):
    return evaluate(toy_base, micro_world.forget).accuracy()


def test_registry():
    assert set(METHODS) == {
        *("ga", "ga_gd", "ga_kl", "npo", "npo_gd", "npo_kl", "idk", "task_vector", "rmu"),
        *("relearn", "palu", "unierase"),
    }


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_forgets_and_leaves_reference(method, micro_world, toy_base, base_forget_acc):
    before = ModelState.capture(toy_base.model, with_weights=True)
    lr = {"rmu": 5e-3, "unierase": None}.get(method, 1e-3)  # UniErase trains one embedding row (its own lr)
    extra = {"unierase": {"alpha": 1.25}}.get(method, {})  # its edit at 1.25x (tests/test_seed_methods.py)
    new = unlearn(
        toy_base,
        micro_world.forget,
        micro_world.retain,
        method,
        steps=20,
        lr=lr,
        batch_size=16,
        progress=False,
        **extra,
    )
    assert ModelState.capture(toy_base.model, with_weights=True) == before  # reference untouched
    assert count_hooks(toy_base.model) == 0 and count_hooks(new.model) == 0
    assert new.model is not toy_base.model and new.weights_hash() != before.weights
    rec = new.model.config.unpact_unlearn
    assert rec["method"] == method and rec["parent_weights_hash"] == before.weights and rec["steps"] == 20
    after = evaluate(new, micro_world.forget).accuracy()
    assert after <= base_forget_acc - 0.2, (method, base_forget_acc, after)


def test_deterministic_and_task_vector_identity(micro_world, toy_base):
    f, r = micro_world.forget[:32], micro_world.retain[:32]
    a = unlearn(toy_base, f, r, "npo_gd", steps=3, batch_size=8, progress=False)
    b = unlearn(toy_base, f, r, "npo_gd", steps=3, batch_size=8, progress=False)
    assert a.weights_hash() == b.weights_hash()
    # analytic check: alpha = 0 subtracts nothing
    tv = unlearn(toy_base, f, None, "task_vector", steps=2, batch_size=8, alpha=0.0, progress=False)
    for (n, p), q in zip(tv.model.named_parameters(), toy_base.model.parameters()):
        assert torch.allclose(p, q), n


def test_rmu_updates_only_its_mlps(micro_world, toy_base):
    new = unlearn(
        toy_base,
        micro_world.forget[:16],
        micro_world.retain[:16],
        "rmu",
        steps=2,
        batch_size=8,
        layer=0,
        n_update_layers=1,
        progress=False,
    )
    changed = {
        n for (n, p), q in zip(new.model.named_parameters(), toy_base.model.parameters()) if not torch.equal(p, q)
    }
    assert changed and all(".h.0.mlp." in n for n in changed), changed


def test_errors(micro_world, toy_base):
    f = micro_world.forget[:4]
    with pytest.raises(ValueError, match="npo_gd"):
        unlearn(toy_base, f, None, "forget_everything")
    with pytest.raises(ValueError, match="retain"):
        unlearn(toy_base, f, None, "ga_gd", steps=1)
    with pytest.raises(ValueError, match="beta"):
        unlearn(toy_base, f, f, "npo", steps=1, temperature=3)
    with pytest.raises(ValueError):
        unlearn(toy_base, [], f, "ga")


def test_cli_unlearn_and_evaluate(micro_world, tmp_path, capsys):
    data = micro_world.root / "data"
    out = tmp_path / "unlearned"
    code = main(
        [
            "unlearn",
            "--model",
            str(micro_world.base_path),
            "--forget",
            str(data / "forget10.json"),
            "--retain",
            str(data / "retain90.json"),
            "--method",
            "ga_kl",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--hparam",
            "retain_weight=2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    new = load_model(str(out))
    rec = new.model.config.unpact_unlearn
    assert rec["method"] == "ga_kl" and rec["hparams"]["retain_weight"] == 2
    assert rec["parent_weights_hash"] == weights_hash(load_model(str(micro_world.base_path)).model)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--split", str(data / "forget01.json"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["summary"]["n"] == len(micro_world.split("forget01"))


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "qwen2"])
@pytest.mark.parametrize("method", ["npo_kl", "rmu", "idk"])
def test_other_architectures(arch, method):
    from unpact.data import Example
    from unpact.testing import tiny_subject

    s = tiny_subject(arch)
    f = [Example("f", "Where was Ada born?", "London"), Example("g", "Who wrote the book?", "The author")]
    r = [Example("r", "What is the capital of France?", "Paris")]
    before = ModelState.capture(s.model, with_weights=True)
    new = unlearn(s, f, r, method, steps=2, batch_size=2, progress=False)
    assert ModelState.capture(s.model, with_weights=True) == before
    assert new.weights_hash() != before.weights and count_hooks(new.model) == 0
