"""Big models: device maps, per-module devices in the hooks, disk offload and half-precision IG."""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import pytest
import torch

from unpact import _devices, load_model
from unpact.attacks import run_attack
from unpact.attribution import integrated_gradients
from unpact.circuits import edge_attribution_patching
from unpact.data import Example
from unpact.errors import InputError, UnsupportedFeatureError
from unpact.hooks import hooked, run_with_cache
from unpact.lens import logit_lens
from unpact.testing import tiny_model

EX = Example("ada", "Where was Ada Lovelace born?", "London", subject="Ada Lovelace", keywords=("born",))
CORRUPT = "Where was The Lovelace born?"


def _dmap(value_for_layer1: str = "cpu") -> dict[str, str]:
    return {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": value_for_layer1,
        "model.norm": "cpu",
        "lm_head": "cpu",
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama saved as safetensors."""
    d = tmp_path_factory.mktemp("tiny-llama")
    model, tok = tiny_model("llama")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def _results(s):
    ig = integrated_gradients(s, [EX], n_steps=8)[0].token_scores
    lens = logit_lens(s, [EX])[0].logprob
    eap = edge_attribution_patching(s, EX, corrupt=CORRUPT).scores
    attack = run_attack(s, [EX], "plain", max_new_tokens=3)[0]
    return ig, lens, eap, attack


def test_explicit_device_map_matches_unsplit(saved):
    plain = load_model(saved)
    split = load_model(saved, device_map=_dmap())
    for a, b in zip(_results(plain)[:3], _results(split)[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert _results(plain)[3].samples == _results(split)[3].samples


def test_device_map_as_inline_json_and_file(saved, tmp_path):
    f = tmp_path / "map.json"
    f.write_text(json.dumps(_dmap()))
    assert _devices.parse_device_map(str(f)) == _dmap()
    assert _devices.parse_device_map(json.dumps(_dmap())) == _dmap()
    assert _devices.parse_device_map("auto") == "auto"
    s = load_model(saved, device_map=str(f))
    assert s.device == torch.device("cpu") and s.output_device == torch.device("cpu")


def test_module_device_is_asked_per_hooked_module(monkeypatch):
    m, tok = tiny_model("llama")
    s = load_model(m, tok)
    seen: list[torch.nn.Module] = []
    real = _devices.module_device

    def spy(module: torch.nn.Module) -> torch.device:
        seen.append(module)
        return real(module)

    monkeypatch.setattr(_devices, "module_device", spy)
    sites = ["embed", "resid_pre.1", "attn_out.0", "head_out.1", "mlp_out.0", "final"]
    ids = torch.tensor([[1, 5, 9, 13]])
    _, cache = run_with_cache(s, ids, sites)
    expected = [s.embed, s.blocks[1], s.attn(0), s.attn_out_proj(1), s.mlp(0), s.final_norm]
    for module in expected:
        assert any(module is x for x in seen), type(module).__name__
    assert set(cache) == set(sites)


def test_hook_writes_land_on_the_hooked_module_device(monkeypatch):
    """A replacement made on another device is moved to the device the hooked module reports."""
    m, tok = tiny_model("llama")
    s = load_model(m, tok)
    moved: list[torch.device] = []
    target = torch.device("cpu", 0)  # != torch.device("cpu"), so the move is taken (a no-op copy on the CPU)
    monkeypatch.setattr(_devices, "module_device", lambda module: target)
    real_to = torch.Tensor.to

    def spy_to(self, *args, **kwargs):
        if args and args[0] == target:
            moved.append(args[0])
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy_to)
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad(), hooked(s, {"resid_post.0": lambda t, hook: t * 1.0, "mlp_out.1": lambda t, hook: t + 0}):
        s.model(input_ids=ids)
    assert len(moved) == 2  # one move per hooked module that was written


def test_disk_offload_refuses_gradients_and_runs_forward(saved, tmp_path):
    plain = load_model(saved)
    off = load_model(saved, device_map=_dmap("disk"), offload_folder=str(tmp_path / "off"))
    assert _devices.disk_modules(off.model) == ["model.layers.1"]
    for fn in (
        lambda: integrated_gradients(off, [EX], n_steps=4),
        lambda: edge_attribution_patching(off, EX, corrupt=CORRUPT),
    ):
        with pytest.raises(UnsupportedFeatureError, match=r"model\.layers\.1.*disk") as info:
            fn()
        assert "max_memory" in str(info.value)  # the fix
    np.testing.assert_allclose(logit_lens(off, [EX])[0].logprob, logit_lens(plain, [EX])[0].logprob, atol=1e-4)
    assert off.weights_hash() == plain.weights_hash()  # offloaded weights are read from the offload map


def test_dispatch_of_a_built_module(tmp_path):
    m, tok = tiny_model("llama")
    ref = load_model(copy.deepcopy(m), tok)
    s = load_model(m, tok, device_map=_dmap("disk"), offload_folder=str(tmp_path))
    assert _devices.disk_modules(s.model) == ["model.layers.1"]
    np.testing.assert_allclose(logit_lens(s, [EX])[0].logprob, logit_lens(ref, [EX])[0].logprob, atol=1e-4)


def test_placement_errors(saved):
    with pytest.raises(InputError, match="both device"):
        load_model(saved, device="cpu", device_map="auto")
    with pytest.raises(InputError, match="no device_map"):
        load_model(saved, max_memory="cpu=1GiB")
    with pytest.raises(InputError, match="neither a strategy"):
        _devices.parse_device_map("nowhere.json")
    with pytest.raises(InputError, match="device=size"):
        _devices.parse_max_memory("0:20GiB")
    assert _devices.parse_max_memory("0=20GiB, cuda:1=10GiB,cpu=60GiB") == {0: "20GiB", 1: "10GiB", "cpu": "60GiB"}
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            load_model(saved, device_map={**_dmap(), "lm_head": 0})
    m, tok = tiny_model("llama")
    with pytest.raises(InputError, match="offload folder"):
        load_model(m, tok, device_map=_dmap("disk"))


def test_cli_options_reach_load_model():
    from unpact._cli._common import add_model_args, load_options

    p = argparse.ArgumentParser()
    add_model_args(p)
    plain = load_options(p.parse_args([]))
    assert "device_map" not in plain and "max_memory" not in plain
    argv = ["--device-map", "auto", "--max-memory", "0=20GiB,cpu=60GiB", "--dtype", "bfloat16"]
    opts = load_options(p.parse_args(argv))
    assert opts["device_map"] == "auto" and opts["max_memory"] == {0: "20GiB", "cpu": "60GiB"}


# Completeness |sum(attributions) - (F(x) - F(x'))| summed over examples, over sum |F(x) - F(x')|.
# Measured on tiny random models (12 examples, 32 steps): float32 3e-4 (Llama) / 1e-5 (GPT-2),
# bfloat16 0.012 / 0.016: the bfloat16 forward and backward, not the path integral, set the error.
FP32_BOUND, BF16_BOUND = 2e-3, 0.05


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_ig_completeness_in_bfloat16(arch):
    words = "the capital of France is Paris Alice was born in city London water boils at red blue".split()
    rng = np.random.default_rng(0)
    exs = [Example(f"e{i}", " ".join(rng.choice(words, 6)), " ".join(rng.choice(words, 2))) for i in range(6)]
    m, tok = tiny_model(arch)
    for dtype, bound in ((torch.float32, FP32_BOUND), (torch.bfloat16, BF16_BOUND)):
        s = load_model(copy.deepcopy(m), tok, dtype=dtype)
        res = integrated_gradients(s, exs, n_steps=32)
        err = sum(abs(r.completeness_error or 0.0) for r in res)
        gap = sum(abs(r.value - (r.baseline_value or 0.0)) for r in res)
        assert err / gap < bound, (dtype, err / gap)


def test_audit_models_take_a_device_map(saved, tmp_path):
    from unpact.audit import Models

    ms = Models(saved, {"u": saved}, device_map=_dmap("disk"), offload_folder=str(tmp_path / "off"))
    for _, s in ms.items():  # the placement reached every model's load
        assert _devices.disk_modules(s.model) == ["model.layers.1"]
    np.testing.assert_allclose(
        logit_lens(ms.base, [EX])[0].logprob, logit_lens(load_model(saved), [EX])[0].logprob, atol=1e-4
    )
