"""The quantization attack (unpact.weights.quantization): reference RTN, layers, reports, library backends."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from unpact._arch import weight_in_out
from unpact.data import Example
from unpact.errors import InputError, UnknownNameError, UnsupportedFeatureError
from unpact.evaluate import evaluate
from unpact.hooks import count_hooks
from unpact.models import ModelState, Subject, load_model
from unpact.testing import tiny_subject
from unpact.weights.quantization import (
    DEFAULT_SCHEMES,
    QuantReport,
    QuantScheme,
    code_agreement,
    fake_quantize,
    quant_codes,
    quantizable,
    quantize,
)

ALL_KINDS = [QuantScheme(b, g, s) for b in (8, 4) for g in (None, 16) for s in (True, False)]


def _weight(n_in: int = 64, n_out: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randn(n_in, n_out, generator=torch.Generator().manual_seed(seed)) * 0.05


def _expanded(t: torch.Tensor, n_in: int) -> torch.Tensor:
    """``(n_groups, out)`` per-group values repeated to ``(in, out)``."""
    return t.repeat_interleave(n_in // t.shape[0], dim=0)


def _perturbed(subject: Subject, scheme: QuantScheme, size: float, seed: int = 0) -> Subject:
    """A copy with each quantizable weight moved by ``size`` times its own bin width, random sign."""
    model = copy.deepcopy(subject.model)
    mods = dict(model.named_modules())
    gen = torch.Generator().manual_seed(seed)
    for name, module in quantizable(subject):
        w = weight_in_out(module)
        _, scale, _ = quant_codes(w, scheme)
        sign = torch.randint(0, 2, w.shape, generator=gen).float() * 2 - 1
        with torch.no_grad():
            weight_in_out(mods[name]).add_(sign * size * _expanded(scale, w.shape[0]))
    return load_model(model, subject.tokenizer, name=f"{subject.name}+noise{size}")


def test_scheme_names_and_checks() -> None:
    assert [s.name() for s in DEFAULT_SCHEMES] == ["int8-channel", "int4-channel", "int4-g32"]
    assert QuantScheme(4, 32, symmetric=False).name() == "int4-g32-asym"
    for bad in (1, 9, True, 4.0):
        with pytest.raises(InputError, match="bits"):
            QuantScheme(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="group_size"):
        QuantScheme(4, group_size=0)


@pytest.mark.parametrize("scheme", ALL_KINDS, ids=lambda s: s.name())
def test_codes_round_trip_within_half_a_bin(scheme: QuantScheme) -> None:
    w = _weight()
    codes, scale, zero = quant_codes(w, scheme)
    n_groups = 1 if scheme.group_size is None else 64 // scheme.group_size
    assert codes.shape == w.shape and scale.shape == zero.shape == (n_groups, 48)
    lo, hi = (-(2 ** (scheme.bits - 1)), 2 ** (scheme.bits - 1) - 1) if scheme.symmetric else (0, 2**scheme.bits - 1)
    assert int(codes.min()) >= lo and int(codes.max()) <= hi
    if scheme.symmetric:
        assert torch.all(zero == 0)
    fq = fake_quantize(w, scheme)
    assert fq.shape == w.shape and fq.dtype == w.dtype
    half_bin = _expanded(scale, 64) / 2
    assert torch.all((w - fq).abs() <= half_bin * (1 + 1e-5) + 1e-9)
    assert torch.equal(fq, codes.float() * _expanded(scale, 64) + _expanded(zero, 64))
    assert torch.equal(fake_quantize(w.double(), scheme).float(), fq)  # float32 arithmetic, the input's dtype back


def test_eight_bits_much_closer_than_four() -> None:
    w = _weight()
    err8 = (w - fake_quantize(w, QuantScheme(8))).abs().mean()
    err4 = (w - fake_quantize(w, QuantScheme(4))).abs().mean()
    assert err8 < err4 / 10  # bins 127 / 7 = 18x narrower


def test_per_channel_scales_follow_output_columns() -> None:
    w = _weight()
    _, scale, _ = quant_codes(w, QuantScheme(4))
    assert torch.allclose(scale[0], w.abs().amax(dim=0) / 7)  # one scale per output column of (in, out)
    fq = fake_quantize(w, QuantScheme(4))
    for j in range(w.shape[1]):  # each output channel keeps its largest weight and at most 15 levels
        i = int(w[:, j].abs().argmax())
        assert fq[i, j] == pytest.approx(float(w[i, j]), rel=1e-6)
        assert len(torch.unique(fq[:, j])) <= 15


def test_groups_confine_an_outlier() -> None:
    w = _weight()
    w[0, 0] = 10.0  # one outlier in output channel 0, input feature 0 (group 0)
    channel = fake_quantize(w, QuantScheme(4))
    grouped = fake_quantize(w, QuantScheme(4, group_size=16))
    _, scale, _ = quant_codes(w, QuantScheme(4, group_size=16))
    assert scale.shape == (4, 48)
    assert torch.allclose(scale[:, 0], w[:, 0].reshape(4, 16).abs().amax(dim=1) / 7)
    assert torch.all(channel[1:, 0] == 0)  # per channel: the outlier's bin swallows the whole column
    assert (w[16:, 0] - grouped[16:, 0]).abs().max() < 0.02  # grouped: the other groups keep their detail
    assert torch.equal(channel[:, 1:], fake_quantize(w[:, 1:], QuantScheme(4)))  # channels are independent
    with pytest.raises(InputError, match="groups of 24"):
        quant_codes(w, QuantScheme(4, group_size=24))


def test_asymmetric_uses_min_and_max() -> None:
    w = 1 + torch.rand(32, 8, generator=torch.Generator().manual_seed(1))  # all in [1, 2]
    asym = QuantScheme(4, symmetric=False)
    codes, scale, zero = quant_codes(w, asym)
    assert torch.equal(zero[0], w.amin(dim=0))
    assert torch.allclose(scale[0], (w.amax(dim=0) - w.amin(dim=0)) / 15)
    assert torch.equal(codes[w.argmin(dim=0), torch.arange(8)], torch.zeros(8, dtype=codes.dtype))
    assert torch.equal(codes[w.argmax(dim=0), torch.arange(8)], torch.full((8,), 15, dtype=codes.dtype))
    err_asym = (w - fake_quantize(w, asym)).abs().mean()
    err_sym = (w - fake_quantize(w, QuantScheme(4))).abs().mean()
    assert err_asym < err_sym / 3  # symmetric spends half its codes on negatives that never occur


def test_constant_groups_are_kept_exactly() -> None:
    w = torch.zeros(32, 4)
    w[:, 1] = 0.25
    for scheme in ALL_KINDS:
        fq = fake_quantize(w, scheme)
        assert torch.equal(fq, w), scheme.name()


def test_quantizable_layers_blocks_only() -> None:
    gpt2, llama = tiny_subject("gpt2"), tiny_subject("llama")
    names = [n for n, _ in quantizable(gpt2)]
    assert names == [
        f"transformer.h.{i}.{p}" for i in range(2) for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    assert [n for n, _ in quantizable(gpt2, include_head=True)] == [*names, "lm_head"]
    lnames = [n for n, _ in quantizable(llama)]
    assert len(lnames) == 14 and all(n.startswith("model.layers.") for n in lnames)
    with pytest.raises(InputError, match="Subject"):
        quantizable(gpt2.model)  # type: ignore[arg-type]


def _by_hand(subject: Subject) -> int:
    """Weights of every linear layer in the blocks, from the config."""
    c = subject.config
    if subject.spec.model_type == "gpt2":
        d, inner = c.n_embd, c.n_inner or 4 * c.n_embd
        return c.n_layer * (d * 3 * d + d * d + 2 * d * inner)
    d, ff, h, kv = c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads
    dh = getattr(c, "head_dim", None) or d // h
    return c.num_hidden_layers * (2 * d * h * dh + 2 * d * kv * dh + 3 * d * ff)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_quantize_share_and_values(arch: str) -> None:
    s = tiny_subject(arch)
    scheme = QuantScheme(4, group_size=32)
    q, report = quantize(s, scheme)
    assert q.name == f"tiny-{arch}+int4-g32" and q.prompt_format == s.prompt_format and q.tokenizer is s.tokenizer
    assert report.n_params_quantized == _by_hand(s)
    assert report.n_params_total == sum(p.numel() for p in s.model.parameters())
    assert report.share_quantized == pytest.approx(_by_hand(s) / report.n_params_total)
    assert report.layers == [n for n, _ in quantizable(s)] and report.skipped == [] and report.code_agreement is None
    original, new = dict(s.model.named_modules()), dict(q.model.named_modules())
    for name in report.layers:  # Conv1D too: quantized along its output columns, stored (in, out) as before
        assert torch.equal(weight_in_out(new[name]), fake_quantize(weight_in_out(original[name]), scheme))
    kept = [n for n, _ in s.model.named_parameters() if not any(n.startswith(f"{x}.") for x in report.layers)]
    new_params, old_params = dict(q.model.named_parameters()), dict(s.model.named_parameters())
    assert kept and all(torch.equal(new_params[n], old_params[n]) for n in kept)  # embeddings, norms, biases, head


def test_include_head_quantizes_the_tied_embedding_too() -> None:
    s = tiny_subject("gpt2")
    q, report = quantize(s, QuantScheme(8), include_head=True, reference=s)
    assert report.layers[-1] == "lm_head" and report.code_agreement == 1.0
    assert report.n_params_quantized == _by_hand(s) + s.model.lm_head.weight.numel()
    assert q.model.lm_head.weight is q.model.transformer.wte.weight  # still tied, in the copy
    assert torch.equal(q.model.transformer.wte.weight, fake_quantize(s.model.lm_head.weight.T, QuantScheme(8)).T)


def test_quantize_gpt2_conv1d_orientation() -> None:
    s = tiny_subject("gpt2")
    q, report = quantize(s, QuantScheme(4))
    for name in report.layers:
        w = dict(q.model.named_modules())[name].weight  # Conv1D stores (in, out): one scale per column
        assert type(dict(q.model.named_modules())[name]).__name__ == "Conv1D"
        assert max(len(torch.unique(w[:, j])) for j in range(w.shape[1])) <= 16
        assert max(len(torch.unique(w[i, :])) for i in range(w.shape[0])) > 16


def test_quantize_leaves_the_input_untouched() -> None:
    s = tiny_subject("gpt2")
    s.model.train()
    s.model.transformer.h[0].mlp.c_fc.weight.requires_grad_(False)
    before = ModelState.capture(s.model, with_weights=True)
    q, _ = quantize(s, QuantScheme(4), reference=s)
    assert ModelState.capture(s.model, with_weights=True) == before
    assert count_hooks(s.model) == 0 and count_hooks(q.model) == 0
    assert q.weights_hash() != s.weights_hash()
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(q.model.parameters(), s.model.parameters()))


def test_code_agreement_self_small_and_large_perturbations() -> None:
    s = tiny_subject("llama")
    scheme = QuantScheme(4)
    assert code_agreement(s, s, scheme) == 1.0 and code_agreement(s, s, scheme, own_scales=True) == 1.0
    small = code_agreement(_perturbed(s, scheme, 0.01), s, scheme)  # 1% of a bin: flips only weights at an edge
    large = code_agreement(_perturbed(s, scheme, 1.5), s, scheme)  # a bin and a half: nearly every code moves
    assert small > 0.97
    assert large < 0.2
    _, report = quantize(_perturbed(s, scheme, 0.01), scheme, reference=s)
    assert report.code_agreement == pytest.approx(small)
    assert report.code_agreement_own_scales is not None and 0.9 < report.code_agreement_own_scales < 1


def test_agreement_refuses_other_models() -> None:
    with pytest.raises(InputError, match="layer"):
        code_agreement(tiny_subject("gpt2"), tiny_subject("llama"), QuantScheme(8))
    with pytest.raises(InputError, match="no layers"):
        code_agreement(tiny_subject("gpt2"), tiny_subject("gpt2"), QuantScheme(8), layers=[])


def test_bad_arguments() -> None:
    s = tiny_subject("gpt2")
    with pytest.raises(UnknownNameError, match="backend"):
        quantize(s, QuantScheme(8), backend="gptq")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="QuantScheme"):
        quantize(s, 8)  # type: ignore[arg-type]
    for backend in ("reference", "quanto"):  # checked before any library sees the layer
        with pytest.raises(InputError, match="groups of 48"):
            quantize(s, QuantScheme(4, group_size=48, symmetric=False), backend=backend, convert_conv1d=True)


def test_quantized_subject_runs_and_report_saves(tmp_path) -> None:
    s = tiny_subject("gpt2")
    q, report = quantize(s, QuantScheme(8), reference=s)
    examples = [Example("a", "Where was Ada born?", "London"), Example("b", "What is the capital?", "Paris")]
    result = evaluate(q, examples, max_new_tokens=4)
    assert len(result.records) == 2 and math.isfinite(result.records[0].answer_logprob)
    assert report.code_agreement == 1.0 and report.provenance is not None
    assert report.provenance.model == q.name and report.provenance.weights_hash == q.weights_hash()
    report.save(tmp_path / "r.npz")
    assert QuantReport.load(tmp_path / "r.npz") == report


QUANTO_SCHEMES = [QuantScheme(8), QuantScheme(4, symmetric=False), QuantScheme(4, 32, False), QuantScheme(2, 32, False)]


@pytest.mark.parametrize("scheme", QUANTO_SCHEMES, ids=lambda s: s.name())
def test_quanto_equals_reference_on_linear_layers(scheme: QuantScheme) -> None:
    pytest.importorskip("optimum.quanto")
    s = tiny_subject("llama")
    lib, lib_report = quantize(s, scheme, backend="quanto")
    ref, ref_report = quantize(s, scheme)
    assert lib_report.layers == ref_report.layers and lib_report.skipped == []
    assert lib_report.share_quantized == ref_report.share_quantized
    assert all(torch.equal(a, b) for a, b in zip(lib.model.parameters(), ref.model.parameters()))


def test_quanto_skips_conv1d_unless_converted(caplog) -> None:
    pytest.importorskip("optimum.quanto")
    s = tiny_subject("gpt2")
    with caplog.at_level("WARNING", logger="unpact.weights.quantization"):
        q, report = quantize(s, QuantScheme(8), backend="quanto")
    assert report.n_params_quantized == 0 and report.share_quantized == 0.0 and report.layers == []
    assert report.skipped == [n for n, _ in quantizable(s)] and "convert_conv1d=True" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(q.model.parameters(), s.model.parameters()))
    converted, creport = quantize(s, QuantScheme(8), backend="quanto", convert_conv1d=True)
    ref, rreport = quantize(s, QuantScheme(8))
    assert creport.share_quantized == rreport.share_quantized > 0.5
    assert all(torch.equal(a, b) for a, b in zip(converted.model.parameters(), ref.model.parameters()))


def test_quanto_refuses_schemes_it_does_not_have() -> None:
    pytest.importorskip("optimum.quanto")
    s = tiny_subject("llama")
    for scheme in (
        QuantScheme(4),
        QuantScheme(8, symmetric=False),
        QuantScheme(8, 32),
        QuantScheme(3, symmetric=False),
    ):
        with pytest.raises(UnsupportedFeatureError, match="optimum-quanto cannot quantize"):
            quantize(s, scheme, backend="quanto")


def _torchao_rtn(w: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """torchao's IntxWeightOnlyConfig arithmetic on ``(in, out)``: the documented difference from the reference."""
    g = w.shape[0] if scheme.group_size is None else scheme.group_size
    wg = w.float().reshape(-1, g, w.shape[1])
    qmin, qmax = -(2 ** (scheme.bits - 1)), 2 ** (scheme.bits - 1) - 1
    if scheme.symmetric:  # max|w| / (qmax + 0.5), zero point 0
        scale, zp = wg.abs().amax(1, keepdim=True) / ((qmax - qmin) / 2), torch.zeros(())
    else:  # the range widened to include 0, an integer zero point
        lo, hi = wg.amin(1, keepdim=True).clamp(max=0), wg.amax(1, keepdim=True).clamp(min=0)
        scale = (hi - lo) / (qmax - qmin)
        zp = qmin - torch.round(lo / scale)
    codes = torch.clamp(torch.round(wg * (1.0 / scale)) + zp, qmin, qmax)
    return ((codes - zp) * scale).reshape(w.shape)


@pytest.mark.parametrize("scheme", [*DEFAULT_SCHEMES, QuantScheme(4, 32, False)], ids=lambda s: s.name())
def test_torchao_matches_its_documented_arithmetic(scheme: QuantScheme) -> None:
    pytest.importorskip("torchao")
    s = tiny_subject("llama")
    q, report = quantize(s, scheme, backend="torchao")
    assert report.layers == [n for n, _ in quantizable(s)]
    original, new = dict(s.model.named_modules()), dict(q.model.named_modules())
    for name in report.layers:
        w = weight_in_out(original[name])
        assert torch.equal(weight_in_out(new[name]), _torchao_rtn(w, scheme))
        _, scale, _ = quant_codes(w, scheme)  # within one reference bin of the reference values
        assert torch.all((weight_in_out(new[name]) - fake_quantize(w, scheme)).abs() <= _expanded(scale, w.shape[0]))
    _, gpt2_report = quantize(tiny_subject("gpt2"), scheme, backend="torchao")
    assert gpt2_report.share_quantized == 0.0


@pytest.mark.slow
def test_micro_world_quantized_models(micro_world, toy_base) -> None:
    forget, retain = micro_world.forget, micro_world.retain
    before = ModelState.capture(toy_base.model, with_weights=True)
    base_forget = evaluate(toy_base, forget).accuracy("lenient")
    base_retain = evaluate(toy_base, retain).accuracy("lenient")
    q8, report = quantize(toy_base, QuantScheme(8), reference=toy_base)
    assert report.code_agreement == 1.0 and report.n_params_quantized == _by_hand(toy_base)
    assert abs(evaluate(q8, forget).accuracy("lenient") - base_forget) <= 0.05  # int8 keeps the model
    assert abs(evaluate(q8, retain).accuracy("lenient") - base_retain) <= 0.05
    retain_only = micro_world.load_retain_only()
    assert code_agreement(retain_only, toy_base, QuantScheme(4)) < 0.5  # trained apart: codes unrelated
    assert ModelState.capture(toy_base.model, with_weights=True) == before
