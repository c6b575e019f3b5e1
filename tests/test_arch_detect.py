"""Architecture maps found from a model's structure (unpact._arch_detect): same as the registry where both
exist, loaded with no code change where only detection does, and clear errors where neither can."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import unpact
from unpact._arch import get_architecture, resolve_path
from unpact._arch_detect import PATH_PARTS, detect_architecture, detect_from_config
from unpact.attribution import integrated_gradients, leave_one_out
from unpact.data import Example
from unpact.errors import ArchitectureError, ModelLoadError, UnknownArchitectureError
from unpact.hooks import count_hooks, run_with_cache
from unpact.lens import logit_lens
from unpact.models import ModelState, load_model
from unpact.testing import TINY_ARCHITECTURES, tiny_config, tiny_model

EX = Example("ada", "Where was Ada Lovelace born?", "London")

# Where detection and the registry disagree, and why (everything else must match).
REGISTRY_DIFFERENCES = {
    # transformers 5's OPT takes a 4-D additive mask (checked by detection); the registry entry predates that
    ("opt", "accepts_4d_mask"): (False, True),
}
CAPABILITIES = ("additive_writes", "accepts_4d_mask", "logit_softcap_attr", "parallel_norms", "lens_ok", "decode_ok")


def _renamed(arch: str, model_type: str = "my_new_lm", **overrides) -> tuple[nn.Module, object]:
    model, tok = tiny_model(arch, **overrides)
    model.config.model_type = model_type
    return model, tok


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_detection_matches_the_registry(arch: str) -> None:
    model, _ = tiny_model(arch)
    state, hooks = ModelState.capture(model, with_weights=True), count_hooks(model)
    det = detect_architecture(model)
    assert det.ok and det.verified, det.missing
    assert ModelState.capture(model, with_weights=True) == state and count_hooks(model) == hooks
    reg, found = get_architecture(arch), det.spec
    assert found is not None and found.detected and not reg.detected
    for part in ("embed", "blocks", "final_norm", "unembed"):
        assert model.get_submodule(getattr(found, part)) is resolve_path(model, getattr(reg, part)), part
    block = model.get_submodule(found.blocks)[0]
    for part in ("attn", "attn_out_proj", "mlp", "mlp_out_proj"):
        assert block.get_submodule(getattr(found, part)) is resolve_path(block, getattr(reg, part)), part
    assert found.is_parallel(model.config) == reg.is_parallel(model.config)
    for cap in CAPABILITIES:
        want = (getattr(reg, cap), getattr(found, cap))
        if (arch, cap) in REGISTRY_DIFFERENCES:
            assert want == REGISTRY_DIFFERENCES[(arch, cap)], cap
        else:
            assert want[0] == want[1], (cap, want)
    assert set(det.found) >= set(PATH_PARTS)


def test_a_renamed_registered_model_loads_by_detection_and_hooks_the_same_modules(caplog) -> None:
    model, tok = tiny_model("gpt2")
    registered = load_model(model, tok)
    model.config.model_type = "my_new_lm"
    with caplog.at_level(logging.INFO, logger="unpact.models"):
        detected = load_model(model, tok)
    assert detected.detected and not registered.detected and detected.spec.model_type == "my_new_lm"
    assert "detected from the module's structure" in caplog.text and "transformer.h" in caplog.text
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    sites = ["embed", "resid_post.1", "attn_out.0", "head_out.1", "mlp_out.1", "final"]
    logits_a, cache_a = run_with_cache(registered, ids, sites)
    logits_b, cache_b = run_with_cache(detected, ids, sites)
    torch.testing.assert_close(logits_a, logits_b)
    for site in sites:
        torch.testing.assert_close(cache_a[site], cache_b[site])
    assert repr(detected).startswith("Subject(") and count_hooks(model) == 0


def test_an_unregistered_family_loads_with_no_code_change() -> None:
    model, tok = tiny_model("phi")  # parallel attention + MLP reading one norm, biased lm_head
    assert "phi" not in unpact._arch.supported_architectures()
    s = load_model(model, tok)
    assert s.detected and s.spec.blocks == "model.layers" and s.spec.attn_out_proj == "self_attn.dense"
    assert s.spec.is_parallel(s.config) and s.spec.parallel_norms is None
    assert not s.spec.additive_writes and "one shared norm" in (s.spec.disabled_reason("circuits") or "")
    lp = leave_one_out(s, [EX])[0]
    with torch.no_grad():
        enc = s.encode(EX)
        logits = s.model(input_ids=enc.input_ids[None]).logits[0]
    a0, a1 = enc.answer_span
    ref = torch.log_softmax(logits[a0 - 1 : a1 - 1], -1).gather(1, enc.input_ids[a0:a1, None]).mean()
    assert lp.value == pytest.approx(float(ref), abs=1e-5)


def test_a_registered_spec_overrides_detection() -> None:
    from unpact._arch import _REGISTRY, ArchSpec, register_architecture

    model, tok = tiny_model("stablelm")
    spec = ArchSpec(
        model_type="stablelm",
        embed="model.embed_tokens",
        blocks="model.layers",
        final_norm="model.norm",
        unembed="lm_head",
        attn="self_attn",
        attn_out_proj="self_attn.o_proj",
        mlp="mlp",
    )
    register_architecture(spec)
    try:
        s = load_model(model, tok)
        assert s.spec is spec and not s.detected and not s.spec.additive_writes  # as registered, not as detected
    finally:
        _REGISTRY.pop("stablelm")
    assert load_model(model, tok).detected


@pytest.mark.parametrize(
    ("family", "field", "attr"),
    [
        ("cohere", "logit_scale_attr", "logit_scale"),  # logits * 0.0625
        ("granite", "logit_divisor_attr", "logits_scaling"),  # logits / 4
        ("gemma3_text", "logit_softcap_attr", "final_logit_softcapping"),
    ],
)
def test_the_final_logit_transform_is_found_and_applied_by_decode_resid(family: str, field: str, attr: str) -> None:
    model, tok = tiny_model(family)
    s = load_model(model, tok)
    assert getattr(s.spec, field) == attr and s.spec.decode_ok and s.spec.lens_ok
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    logits, cache = run_with_cache(s, ids, ["final"])
    torch.testing.assert_close(s.decode_resid(cache["final"]), logits, atol=1e-5, rtol=1e-5)


def test_sandwich_norms_and_residual_multipliers_switch_circuits_off_with_the_reason() -> None:
    olmo2 = detect_architecture(tiny_model("olmo2")[0])
    assert "sandwich norm" in olmo2.disabled["circuits"] and not olmo2.spec.additive_writes
    granite = detect_architecture(tiny_model("granite")[0])
    assert "config.residual_multiplier" in granite.disabled["circuits"]
    falcon = detect_architecture(tiny_model("falcon")[0])  # mlp_output += attention_output, in place
    assert "in place" in falcon.disabled["circuits"]
    neox = detect_architecture(_renamed("gpt_neox")[0])  # two norms with equal weights: told apart by identity
    assert neox.spec.parallel_norms == ("input_layernorm", "post_attention_layernorm") and neox.spec.additive_writes


def test_logits_that_cannot_be_reproduced_switch_decoding_off_with_the_reason() -> None:
    model, tok = _renamed("llama")
    handle = model.register_forward_hook(lambda mod, args, out: out.__setitem__("logits", out["logits"] * 3.7))
    try:
        s = load_model(model, tok)
        assert not s.spec.decode_ok and not s.spec.lens_ok
        assert "no final transform" in (s.spec.disabled_reason("lens") or "")
        with pytest.raises(ArchitectureError, match="logit lens is off for my_new_lm.*no final transform"):
            logit_lens(s, [EX])
        with pytest.raises(ArchitectureError, match="cannot decode the final-normed residual"):
            leave_one_out(s, [EX])
    finally:
        handle.remove()


def test_a_final_norm_that_does_not_read_the_last_block_switches_only_the_lens_off() -> None:
    model, tok = _renamed("llama")
    handle = model.model.norm.register_forward_pre_hook(lambda mod, args: (args[0] * 2.0,))
    try:
        s = load_model(model, tok)
        assert s.spec.decode_ok and not s.spec.lens_ok
        with pytest.raises(ArchitectureError, match="does not read the last block's output"):
            logit_lens(s, [EX])
        assert len(integrated_gradients(s, [EX], n_steps=4)[0].token_scores) > 0  # scoring still works
    finally:
        handle.remove()


def test_a_model_whose_layer_list_cannot_be_found_is_refused_naming_what_is_missing() -> None:
    model, tok = _renamed("llama", "llama_fork")
    model.config.num_hidden_layers = 3  # the config no longer matches the 2 blocks
    with pytest.raises(UnknownArchitectureError) as err:
        load_model(model, tok)
    msg = str(err.value)
    assert "'llama_fork'" in msg and "blocks: no nn.ModuleList of 3 blocks" in msg
    assert "model.layers (2 x LlamaDecoderLayer)" in msg and "gpt2" in msg  # what it saw; what is registered
    assert "register_architecture(unpact.ArchSpec(model_type='llama_fork', embed='model.embed_tokens'" in msg
    assert "blocks='?'" in msg and "docs/models.md" in msg
    assert isinstance(err.value, KeyError) and count_hooks(model) == 0


@pytest.mark.parametrize(
    ("family", "missing"),
    [
        ("openai-gpt", "final_norm: no norm module beside transformer.h"),  # post-LN GPT-1: no final norm
        ("rwkv", "left_padding: with left padding"),  # recurrent: a padded row's numbers change
    ],
)
def test_families_unpact_cannot_trace_are_refused_not_mis_traced(family: str, missing: str) -> None:
    model, tok = tiny_model(family)
    with pytest.raises(UnknownArchitectureError, match=missing):
        load_model(model, tok)
    assert count_hooks(model) == 0


def test_a_non_transformer_module_is_refused() -> None:
    det = detect_architecture(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    assert not det.ok and {"config", "embed", "unembed", "blocks"} <= set(det.missing)
    with pytest.raises(UnknownArchitectureError, match="config: Sequential has no Hugging Face config.*register_arch"):
        det.raise_if_unusable()

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = SimpleNamespace(model_type="toy", num_hidden_layers=2)
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10)

        def get_input_embeddings(self) -> nn.Module:
            return self.emb

        def get_output_embeddings(self) -> nn.Module:
            return self.head

    with pytest.raises(UnknownArchitectureError, match="'toy'.*blocks: no nn.ModuleList of 2 blocks.*lists seen: none"):
        load_model(Toy())
    with pytest.raises(ModelLoadError, match="no config.model_type"):
        load_model(nn.Linear(2, 2))


def test_detection_restores_the_model_and_leaves_no_hook_when_a_forward_fails() -> None:
    model, _ = _renamed("llama")
    model.train()
    handle = model.model.layers[1].mlp.register_forward_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    state = ModelState.capture(model, with_weights=True)
    try:
        det = detect_architecture(model)  # the failing forward is reported as a missing part, with its reason
        assert not det.ok and "boom" in det.missing["forward"]
        with pytest.raises(UnknownArchitectureError, match="boom"):
            det.raise_if_unusable()
        assert ModelState.capture(model, with_weights=True) == state and count_hooks(model) == 1
    finally:
        handle.remove()


def test_structure_only_detection_from_a_config_reads_no_weights() -> None:
    det = detect_from_config(tiny_config("starcoder2"))
    assert det.ok and not det.verified and det.spec.blocks == "model.layers"
    assert det.capabilities()["circuits"] is False and "not verified" in det.disabled["attn_bias"]
    bert = detect_from_config(
        {"model_type": "bert", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}
    )
    assert not bert.ok and "final_norm" in bert.missing
    with pytest.raises(UnknownArchitectureError, match="'bert'.*register_architecture"):
        bert.raise_if_unusable()
    assert "model" in detect_from_config({"model_type": "no_such_family"}).missing


def test_detection_summary_and_registration_snippet() -> None:
    det = detect_architecture(tiny_model("stablelm")[0])
    text = det.summary()
    assert "blocks=model.layers" in text and "circuits on" in text and "parallel residual: no" in text
    assert det.registration().startswith("unpact.register_architecture(unpact.ArchSpec(model_type='stablelm'")
    assert det.capabilities() == {"ig": True, "lens": True, "scoring": True, "attn_bias": True, "circuits": True}


def test_the_mlp_output_projection_is_found_and_a_mixture_of_experts_has_none() -> None:
    dense = detect_from_config(tiny_config("stablelm"))
    assert dense.spec.mlp_out_proj == "mlp.down_proj" and "mlp_out_proj='mlp.down_proj'" in dense.registration()
    assert detect_from_config(tiny_config("codegen")).spec.mlp_out_proj == "mlp.fc_out"
    for family in ("mixtral", "qwen2_moe"):  # experts (fused or a shared one): no one matrix writes the MLP output
        moe = detect_from_config(tiny_config(family))
        assert moe.ok and moe.spec.mlp_out_proj is None and "mixture of experts" in moe.spec.notes, family
