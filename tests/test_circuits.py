"""Tests of unpact.circuits: EAP vs a hand-computed first-order estimate, exact edge patching vs an
independent reference implemented here, faithfulness, save/load, circuit diff, hygiene, CLI."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unpact._arch import ArchSpec, get_architecture
from unpact.circuits import (
    CircuitDiff,
    EdgeScores,
    Graph,
    circuit_diff,
    edge_attribution_patching,
    exact_edge_patching,
    faithfulness,
    faithfulness_curve,
)
from unpact.circuits._graph import check_supported
from unpact.data import Example, InputError
from unpact.hooks import count_hooks, hooked
from unpact.models import ModelState, Subject, load_model
from unpact.testing import TINY_ARCHITECTURES, tiny_model, tiny_subject

EX = Example("ada", "Where was Ada Lovelace born?", "London", subject="Ada Lovelace", keywords=("born",))
CORRUPT = "Where was The Lovelace born?"  # "Ada" and "The" are one token each in the tiny tokenizer
ARCHS = [a for a in TINY_ARCHITECTURES if get_architecture(a).additive_writes]


# ----- an independent reference: patch one edge by replacing the downstream node's OUTPUT ---------------
def _head_contrib(s, layer: int, head_out: torch.Tensor, h: int) -> torch.Tensor:
    """Head h's write to the residual, via the output projection itself (no weight reshaping)."""
    proj = s.attn_out_proj(layer)
    only = torch.zeros_like(head_out)
    only[..., h, :] = head_out[..., h, :]
    flat = lambda t: t.reshape(*t.shape[:-2], -1)
    return proj(flat(only)) - proj(flat(torch.zeros_like(head_out)))


def _upstream_outputs(s, ids: torch.Tensor, upstream: list[str]) -> dict[str, torch.Tensor]:
    sites = ["resid_pre.0"] + [f"{k}.{l}" for l in range(s.n_layers) for k in ("head_out", "mlp_out")]
    with torch.no_grad(), hooked(s, cache=sites) as cache:
        s.model(input_ids=ids[None], use_cache=False)
    out = {}
    for name in upstream:
        if name == "embed":
            out[name] = cache["resid_pre.0"][0]
        elif ".h" in name:
            layer, h = int(name[1 : name.index(".")]), int(name.split(".h")[1])
            with torch.no_grad():
                out[name] = _head_contrib(s, layer, cache[f"head_out.{layer}"], h)[0]
        else:
            out[name] = cache[f"mlp_out.{int(name[1:])}"][0]
    return out


def _metric(s, ids, logits, span) -> torch.Tensor:
    a0, a1 = span
    lp = torch.log_softmax(logits[0, a0 - 1 : a1 - 1].double(), -1)
    return lp.gather(-1, ids[a0:a1, None]).mean()


def _reference_patch(s, ids, span, down: str, delta: torch.Tensor, parallel: bool) -> torch.Tensor:
    """Metric with ``delta`` added to the input of node ``down`` only (two passes: recompute the node's
    output with the edited residual, then splice that output into an otherwise clean run). Differentiable
    in ``delta``."""
    add = lambda x, *, hook: x + delta
    if down == "logits":
        with hooked(s, {f"mlp_out.{s.n_layers - 1}": add}):
            logits = s.model(input_ids=ids[None], use_cache=False).logits
        return _metric(s, ids, logits, span)
    layer = int(down[1:])
    if down.startswith("a"):
        edit, out_site = f"resid_pre.{layer}", f"attn_out.{layer}"
    else:
        edit = f"resid_pre.{layer}" if parallel else f"attn_out.{layer}"
        out_site = f"mlp_out.{layer}"
    with hooked(s, {edit: add}, cache=[out_site], detach=False) as cache:
        s.model(input_ids=ids[None], use_cache=False)
    new = cache[out_site]
    with hooked(s, {out_site: lambda x, *, hook: new}):
        logits = s.model(input_ids=ids[None], use_cache=False).logits
    return _metric(s, ids, logits, span)


def _first_order(s, ids, span, down: str, delta: torch.Tensor, parallel: bool) -> float:
    """d/dt metric(down's input + t * delta) at t = 0, by autograd through the reference patch."""
    t = torch.zeros((), dtype=delta.dtype, requires_grad=True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(_reference_patch(s, ids, span, down, t * delta, parallel), t)
    return float(g)


def _refs(s, scores: EdgeScores):
    ids = torch.as_tensor(scores.input_ids)
    clean = _upstream_outputs(s, ids, scores.upstream)
    corr = _upstream_outputs(s, torch.as_tensor(scores.corrupt_ids), scores.upstream)
    return ids, clean, corr


# ----- EAP equals a hand-computed first-order estimate ------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_eap_equals_first_order_estimate(arch: str) -> None:
    model, tok = tiny_model(arch)
    s = load_model(model.double(), tok)
    eap = edge_attribution_patching(s, EX, corrupt=CORRUPT)
    assert eap.corruption == "prompt" and eap.key_positions.tolist() == [3]
    ids, clean, corr = _refs(s, eap)
    parallel = arch == "gpt_neox"
    with torch.no_grad():
        m0 = float(_reference_patch(s, ids, eap.answer_span, "logits", torch.zeros_like(clean["embed"]), parallel))
    assert m0 == pytest.approx(eap.metric_clean, abs=1e-9)
    us, vs = np.nonzero(eap.valid)
    for i in np.random.default_rng(0).choice(len(us), size=8, replace=False):
        u, v = eap.upstream[us[i]], eap.downstream[vs[i]]
        delta = corr[u] - clean[u]
        first_order = _first_order(s, ids, eap.answer_span, v, delta, parallel)
        assert eap.scores[us[i], vs[i]] == pytest.approx(first_order, rel=1e-4, abs=1e-7), (u, v)
        if arch == "gpt2":  # no float32 casts inside: a central difference confirms the derivative
            t = 1e-4
            with torch.no_grad():
                fd = (
                    _reference_patch(s, ids, eap.answer_span, v, t * delta, parallel)
                    - _reference_patch(s, ids, eap.answer_span, v, -t * delta, parallel)
                ) / (2 * t)
            assert float(fd) == pytest.approx(first_order, rel=1e-4, abs=1e-7), (u, v)
    # the per-position split sums to the scores, and is zero before the first corrupted position
    assert np.allclose(eap.position_scores.sum(0), eap.scores, atol=1e-6)
    assert np.abs(eap.position_scores[:3]).max() < 1e-6


# ----- exact patching equals the independent reference on every architecture ---------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_exact_patching_matches_reference(arch: str) -> None:
    s = tiny_subject(arch)
    before = ModelState.capture(s.model, with_weights=True)
    hooks0 = count_hooks(s.model)
    eap = edge_attribution_patching(s, EX, corrupt=CORRUPT)
    exact = exact_edge_patching(s, eap)
    assert ModelState.capture(s.model, with_weights=True) == before
    assert count_hooks(s.model) == hooks0
    ids, clean, corr = _refs(s, eap)
    us, vs = np.nonzero(eap.valid)
    for i in np.random.default_rng(1).choice(len(us), size=4, replace=False):
        u, v = eap.upstream[us[i]], eap.downstream[vs[i]]
        with torch.no_grad():
            ref = float(_reference_patch(s, ids, eap.answer_span, v, corr[u] - clean[u], arch == "gpt_neox"))
        assert exact.scores[us[i], vs[i]] == pytest.approx(ref - exact.metric_clean, abs=2e-4), (u, v)
    # patching every edge reproduces the corrupt run; patching none keeps the clean run
    full, empty = faithfulness_curve(s, [eap.top_k(eap.n_edges), eap.top_k(0)])
    assert full.share == pytest.approx(1.0, abs=1e-4)
    assert empty.metric_circuit == pytest.approx(eap.metric_corrupt, abs=1e-4)
    assert eap.metric_clean != pytest.approx(eap.metric_corrupt, abs=1e-4)


def test_eap_ig_ranks_edges_at_least_as_well_as_eap() -> None:
    from scipy.stats import spearmanr

    s = tiny_subject("gpt2")
    eap = edge_attribution_patching(s, EX, corrupt=CORRUPT)
    ig = edge_attribution_patching(s, EX, corrupt=CORRUPT, method="eap-ig", n_steps=32, internal_batch_size=8)
    exact = exact_edge_patching(s, eap)
    v = eap.valid
    rho_eap = spearmanr(eap.scores[v], exact.scores[v])[0]
    rho_ig = spearmanr(ig.scores[v], exact.scores[v])[0]
    assert rho_ig > 0.9 and rho_ig >= rho_eap - 0.02
    # one interpolation step at alpha = 1 is plain EAP
    one = edge_attribution_patching(s, EX, corrupt=CORRUPT, method="eap-ig", n_steps=1)
    assert np.allclose(one.scores, eap.scores, atol=1e-6)


def test_faithfulness_grows_with_k_and_mean_ablation() -> None:
    s = tiny_subject("llama")
    es = edge_attribution_patching(s, EX, corrupt="mean")
    assert es.corruption == "mean" and set(es.key_positions.tolist()) >= {3}
    ks = [0, 5, es.n_edges]
    res = faithfulness_curve(s, [es.top_k(k) for k in ks])
    assert [r.n_edges for r in res] == ks
    assert res[0].share == pytest.approx(0.0, abs=1e-4) and res[-1].share == pytest.approx(1.0, abs=1e-4)
    single = faithfulness(s, es.top_k(5))
    assert single.metric_circuit == pytest.approx(res[1].metric_circuit, abs=1e-5)
    with pytest.raises(InputError, match="EAP-IG"):
        edge_attribution_patching(s, EX, corrupt="mean", method="eap-ig")


# ----- corrupt inputs and errors --------------------------------------------------------------------------
def test_donors_and_errors() -> None:
    s = tiny_subject("gpt2")
    donors = [
        Example("b", "Where was Bob Lovelace born?", "Paris", subject="Bob Lovelace"),
        Example("t", "Where was The Lovelace born?", "Paris", subject="The Lovelace"),
    ]
    es = edge_attribution_patching(s, EX, corrupt=donors)
    assert es.corruption == "tokens" and es.corrupt_prompt == CORRUPT and es.key_positions.tolist() == [3]
    assert es.provenance.args["donor"] == "t"
    with pytest.raises(InputError, match="same token length"):
        edge_attribution_patching(s, EX, corrupt="Where was Bob Lovelace born?")
    with pytest.raises(InputError, match="none of the 1 donors"):
        edge_attribution_patching(s, EX, corrupt=donors[:1])
    with pytest.raises(InputError, match="corrupt answer"):
        edge_attribution_patching(s, EX, corrupt=CORRUPT, metric="logit_diff")
    ld = edge_attribution_patching(s, EX, corrupt=donors, metric="logit_diff")
    assert ld.metric == "logit_diff" and ld.corrupt_token >= 0
    with pytest.raises(InputError, match="unknown method"):
        edge_attribution_patching(s, EX, method="acdc")  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="gemma2"):
        edge_attribution_patching(tiny_subject("gemma2"), EX, corrupt=CORRUPT)


def test_support_is_read_from_the_arch_spec() -> None:
    assert "gemma2" not in ARCHS and "llama" in ARCHS
    model, tok = tiny_model("llama")
    llama = get_architecture("llama")
    bare = ArchSpec(
        model_type="llama_caps_test",
        embed=llama.embed,
        blocks=llama.blocks,
        final_norm=llama.final_norm,
        unembed=llama.unembed,
        attn=llama.attn,
        attn_out_proj=llama.attn_out_proj,
        mlp=llama.mlp,
    )
    with pytest.raises(NotImplementedError, match="llama_caps_test.*additive_writes=True"):
        Graph.of(Subject(model, tok, bare, "t"))  # undeclared: refused, never silently wrong
    declared = dataclasses.replace(bare, additive_writes=True)
    assert Graph.of(Subject(model, tok, declared, "t")).n_layers == 2

    # post-LN OPT has no final norm module, so load_model refuses it already; the check itself:
    post_ln = SimpleNamespace(spec=get_architecture("opt"), config=SimpleNamespace(do_layer_norm_before=False))
    with pytest.raises(NotImplementedError, match="post-LN opt .do_layer_norm_before=False"):
        check_supported(post_ln)  # type: ignore[arg-type]

    neox_model, neox_tok = tiny_model("gpt_neox")
    neox = get_architecture("gpt_neox")
    no_norms = dataclasses.replace(neox, parallel_norms=None)
    with pytest.raises(NotImplementedError, match="parallel_norms"):
        Graph.of(Subject(neox_model, neox_tok, no_norms, "t"))
    norms = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}
    via_extra = dataclasses.replace(no_norms, extra=norms)
    assert Graph.of(Subject(neox_model, neox_tok, via_extra, "t")).parallel
    sequential = load_model(*tiny_model("gpt_neox", use_parallel_residual=False))
    assert not Graph.of(sequential).parallel


def test_hooks_removed_on_exception() -> None:
    s = tiny_subject("gpt2")
    n0 = count_hooks(s.model)

    def boom(module, args, output):
        raise RuntimeError("boom")

    handle = s.final_norm.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            edge_attribution_patching(s, EX, corrupt=CORRUPT)
    finally:
        handle.remove()
    assert count_hooks(s.model) == n0
    assert all(p.requires_grad for p in s.model.parameters())


# ----- results: save/load, top-k, diff ----------------------------------------------------------------------
def test_save_load_top_k_and_diff(tmp_path) -> None:
    a_subject, b_subject = tiny_subject("qwen2"), tiny_subject("qwen2", seed=1)
    a = edge_attribution_patching(a_subject, EX, corrupt=CORRUPT, method="eap-ig", n_steps=4)
    a.save(tmp_path / "a.npz")
    assert EdgeScores.load(tmp_path / "a.npz") == a
    exact = exact_edge_patching(a_subject, a)
    exact.save(tmp_path / "x.npz")
    assert EdgeScores.load(tmp_path / "x.npz") == exact
    top = a.top_k(7)
    assert len(top) == 7 and len(top.edges) == 7
    kth = sorted(np.abs(a.scores[a.valid]))[-7]
    assert np.all(np.abs(a.scores[top.mask]) >= kth)
    assert len(a.threshold(kth)) >= 7
    same = circuit_diff(a, a, k=10)
    assert same.jaccard == 1.0 and not same.lost and not same.gained and len(same.reweighted) == 10
    b = edge_attribution_patching(b_subject, EX, corrupt=CORRUPT, method="eap-ig", n_steps=4)
    d = circuit_diff(a, b, k=10)
    assert 0.0 <= d.jaccard < 1.0 and len(d.lost) == len(d.gained) > 0
    assert d.key_total_a == pytest.approx(float(np.abs(a.position_scores[3]).sum()), rel=1e-5)
    assert np.allclose(d.key_scores_a, a.position_scores[3])
    d.save(tmp_path / "d.npz")
    assert CircuitDiff.load(tmp_path / "d.npz") == d
    json.dumps(d.to_dict())
    json.dumps(a.to_dict())
    other = edge_attribution_patching(b_subject, EX, corrupt="mean")
    with pytest.raises(InputError, match="different clean/corrupt inputs"):
        circuit_diff(a, other)


def test_cli_circuit(tmp_path, capsys) -> None:
    from unpact.cli import main

    model, tok = tiny_model("llama")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    rc = main(
        [
            "circuit",
            "--model",
            str(tmp_path / "m"),
            "--prompt",
            EX.prompt,
            "--answer",
            EX.answer,
            "--corrupt",
            CORRUPT,
            "--json",
            "--top-k",
            "5",
            "--out",
            str(tmp_path / "e.npz"),
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["top_edges"]) == 5 and 0 < out["faithfulness"]["k"] <= 5
    assert EdgeScores.load(tmp_path / "e.npz").corrupt_prompt == CORRUPT
    rc = main(
        [
            "circuit",
            "--model",
            str(tmp_path / "m"),
            "--prompt",
            EX.prompt,
            "--answer",
            EX.answer,
            "--corrupt",
            "Where was Bob Lovelace born?",
        ]
    )
    assert rc == 2 and "same token length" in capsys.readouterr().err
