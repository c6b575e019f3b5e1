"""Model layer: architecture map for every supported family, loading, safety, bridge."""

from __future__ import annotations

import pytest
import torch

import unpact
from unpact._arch import (
    ArchSpec,
    UnknownArchitectureError,
    get_architecture,
    register_architecture,
    supported_architectures,
)
from unpact.errors import ArchitectureError, InputError
from unpact.hooks import count_hooks, hooked
from unpact.models import ModelState, load_model
from unpact.testing import TINY_ARCHITECTURES, tiny_model, tiny_subject

IDS = torch.tensor([[5, 17, 33, 2, 41, 8, 60, 12], [9, 9, 70, 4, 3, 100, 7, 1]])


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_final_site_decodes_to_model_logits(arch: str) -> None:
    s = tiny_subject(arch)
    with torch.no_grad(), hooked(s, cache=["final"]) as cache:
        logits = s.model(IDS).logits
    decoded = s.decode_resid(cache["final"])
    assert decoded.shape == logits.shape
    assert (decoded - logits).abs().max().item() <= 1e-5
    # The logits depend on the input (the tiny model is not degenerate).
    assert logits[0].std() > 1e-3


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_sizes_and_grouped_query(arch: str) -> None:
    s = tiny_subject(arch)
    assert s.n_layers == 2 and s.d_model == 64 and s.n_heads == 4 and s.d_head == 16
    expect_kv = 4 if arch in {"gpt2", "gpt_neox", "opt"} else 2
    assert s.n_kv_heads == expect_kv
    assert s.vocab_size == len(s.tokenizer)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_head_outputs_recompose_attention_output(arch: str) -> None:
    """Per-head outputs through the output projection sum to the attention output projection's output."""
    s = tiny_subject(arch)
    proj = s.attn_out_proj(1)
    captured = {}
    handle = proj.register_forward_hook(lambda m, a, o: captured.__setitem__("out", o))
    try:
        with torch.no_grad(), hooked(s, cache=["head_out.1"]) as cache:
            s.model(IDS)
    finally:
        handle.remove()
    heads = cache["head_out.1"]
    assert heads.shape == (2, 8, s.n_heads, s.d_head)
    assert torch.allclose(proj(heads.flatten(-2)), captured["out"], atol=1e-6)


def test_unknown_architecture_error_names_it_and_says_how() -> None:
    model, tok = tiny_model("gpt2")
    model.config.model_type = "my_new_lm"
    model.config.n_layer = 3  # the config disagrees with the layer list: detection finds no usable map
    with pytest.raises(UnknownArchitectureError) as err:
        load_model(model, tok)
    msg = str(err.value)
    assert "my_new_lm" in msg and "register_architecture" in msg and "gpt2" in msg


def test_register_architecture_adds_a_family_and_refuses_silent_overwrite() -> None:
    spec = get_architecture("llama")
    new = ArchSpec(**{**spec.__dict__, "model_type": "llama_fork_for_test"})
    register_architecture(new)
    try:
        assert "llama_fork_for_test" in supported_architectures()
        with pytest.raises(ValueError, match="overwrite=True"):
            register_architecture(new)
        model, tok = tiny_model("llama")
        model.config.model_type = "llama_fork_for_test"
        assert load_model(model, tok).spec.model_type == "llama_fork_for_test"
    finally:
        from unpact import _arch

        _arch._REGISTRY.pop("llama_fork_for_test", None)


def test_wrong_spec_path_is_a_clear_error() -> None:
    model, tok = tiny_model("gpt2")
    bad = ArchSpec(**{**get_architecture("gpt2").__dict__, "final_norm": "transformer.ln_final"})
    from unpact.models import Subject

    with pytest.raises(ArchitectureError, match="ln_final"):
        Subject(model=model, tokenizer=tok, spec=bad, name="x")


def test_save_and_load_roundtrip_is_safetensors(tmp_path) -> None:
    model, tok = tiny_model("llama")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.bin"))
    s = load_model(tmp_path, dtype=torch.float32)
    assert s.weights_hash() == load_model(model, tok).weights_hash()
    assert s.name == str(tmp_path)
    assert not s.model.training


def test_missing_local_path_raises() -> None:
    with pytest.raises(FileNotFoundError, match="no model directory"):
        load_model("./does/not/exist")


def test_bad_type_raises() -> None:
    with pytest.raises(InputError, match="load_model expects"):
        load_model(42)


def test_capabilities_default_to_unsupported_and_builtins_declare_theirs() -> None:
    bare = ArchSpec(
        model_type="x", embed="e", blocks="b", final_norm="n", unembed="u", attn="a", attn_out_proj="a.o", mlp="m"
    )
    assert not bare.additive_writes and not bare.accepts_4d_mask and bare.parallel_norm_paths() is None
    assert not bare.is_parallel(object()) and not bare.is_post_norm(object())
    caps = {a: (get_architecture(a).additive_writes, get_architecture(a).accepts_4d_mask) for a in TINY_ARCHITECTURES}
    assert caps["gemma2"] == (False, True) and caps["opt"] == (True, False)
    assert all(caps[a] == (True, True) for a in TINY_ARCHITECTURES if a not in ("gemma2", "opt"))
    neox = get_architecture("gpt_neox")
    assert neox.parallel_norm_paths() == ("input_layernorm", "post_attention_layernorm")
    assert neox.is_parallel(tiny_model("gpt_neox")[0].config)
    assert not neox.is_parallel(tiny_model("gpt_neox", use_parallel_residual=False)[0].config)


def test_weights_hash_changes_with_weights() -> None:
    s = tiny_subject("gpt2")
    h = s.weights_hash()
    with torch.no_grad():
        next(s.model.parameters())[0, 0] += 1.0
    assert s.weights_hash() != h


def test_weights_hash_is_computed_once_until_a_weight_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    import unpact.models as models

    calls = []
    real = models.weights_hash
    monkeypatch.setattr(models, "weights_hash", lambda m: calls.append(m) or real(m))
    s = tiny_subject("llama")
    w = s.model.lm_head.weight
    h, old = s.weights_hash(), w[0, 0].item()
    assert s.weights_hash() == h and s.weights_hash() == h and len(calls) == 1
    with torch.no_grad():
        w[0, 0] += 1.0  # in place: bumps the tensor's version counter
    h2 = s.weights_hash()
    assert h2 != h and len(calls) == 2
    assert s.weights_hash() == h2 and len(calls) == 2
    with torch.no_grad():
        w[0, 0] = old
    assert s.weights_hash() == h == real(s.model) and len(calls) == 3
    s.model.lm_head.weight.data = s.model.lm_head.weight.data.clone()  # new storage, same values
    assert s.weights_hash() == h and len(calls) == 4
    assert s.refresh_weights_hash() == h and len(calls) == 5


def test_public_surface_is_lazy_and_small() -> None:
    assert set(unpact.__all__) >= {"load_model", "Subject", "Example", "hooked", "register_architecture"}
    with pytest.raises(AttributeError):
        unpact.not_a_thing


@pytest.mark.tl
def test_transformer_bridge_is_accepted_and_matches(tiny_bridge) -> None:
    model, bridge = tiny_bridge
    s = load_model(bridge)
    assert s.bridge is bridge and s.tokenizer is not None
    with torch.no_grad():
        bridge(IDS)  # the bridge installs its own hooks on first use; count ours after that
    before = count_hooks(s.model)
    with torch.no_grad(), hooked(s, cache=["final", "resid_post.0"]) as cache:
        bridge_logits = bridge(IDS)
    assert count_hooks(s.model) == before
    assert (s.decode_resid(cache["final"]) - bridge_logits).abs().max().item() <= 1e-5
    assert ModelState.capture(s.model) == ModelState.capture(model)


def test_sharded_safetensors_checkpoint_loads(tmp_path):
    from unpact.models import weights_hash

    model, tok = tiny_model("llama")
    model.save_pretrained(tmp_path, max_shard_size="100KB", safe_serialization=True)
    tok.save_pretrained(tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    s = load_model(str(tmp_path))
    assert weights_hash(s.model) == weights_hash(model)
