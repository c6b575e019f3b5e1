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


# ----- MIB evaluation: faithfulness curves, CPR / CMD, per-edge-type error ------------------------------------
def test_mib_areas_and_fraction_counts() -> None:
    from unpact.circuits import MIB_FRACTIONS, mib_areas
    from unpact.circuits.mib import fraction_counts

    assert MIB_FRACTIONS == (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    cpr, cmd = mib_areas(MIB_FRACTIONS, [1.0] * 10)
    assert cpr == pytest.approx(0.999) and cmd == pytest.approx(0.0)
    # the trapezoid is exact for f(x) = x: CPR = int_0.001^1 x dx, CMD = int_0.001^1 (1 - x) dx
    cpr, cmd = mib_areas(MIB_FRACTIONS, list(MIB_FRACTIONS))
    assert cpr == pytest.approx((1 - 0.001**2) / 2, abs=1e-12)
    assert cmd == pytest.approx(0.999 - (1 - 0.001**2) / 2, abs=1e-12)
    # |1 - f| is taken at the points: f = 2 at both ends of [0, 1] gives CMD 1, CPR 2
    assert mib_areas([0.0, 1.0], [2.0, 2.0]) == pytest.approx((2.0, 1.0))
    assert fraction_counts(MIB_FRACTIONS, 105) == [0, 0, 0, 1, 2, 5, 10, 21, 52, 105]
    with pytest.raises(InputError, match="strictly increasing"):
        mib_areas([0.1, 0.05, 1.0], [0.0, 0.0, 1.0])
    with pytest.raises(InputError, match="at least two"):
        mib_areas([1.0], [1.0])


def test_spearman_matches_scipy() -> None:
    from scipy.stats import spearmanr

    from unpact.circuits.edge_types import spearman

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 40).astype(float)  # with ties
    b = a + rng.standard_normal(40)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b)[0], abs=1e-12)
    assert np.isnan(spearman(np.ones(5), b[:5]))


def test_circuit_quality_exact_beats_random_on_held_out(micro_world, toy_base) -> None:
    from unpact.circuits import CircuitQuality, circuit_quality, mean_scores
    from unpact.circuits.results import Circuit

    s = toy_base
    donors = micro_world.forget + micro_world.retain
    usable = [e for e in micro_world.forget if e.subject and e.subject in e.prompt and not e.meta.get("emphasis")]
    scoring, held_out = usable[0:12:3], usable[1:12:3]  # disjoint, several attributes
    eap = [edge_attribution_patching(s, ex, corrupt=donors) for ex in scoring]
    exact = [exact_edge_patching(s, es) for es in eap]
    assert np.allclose(mean_scores(exact), np.mean([x.scores for x in exact], axis=0))
    fractions = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
    q_exact = circuit_quality(s, exact, held_out, corrupt=donors, fractions=fractions)
    rand = np.random.default_rng(0).standard_normal(exact[0].scores.shape)
    q_rand = circuit_quality(s, rand, held_out, corrupt=donors, fractions=fractions)
    assert isinstance(q_exact, CircuitQuality) and q_exact.method == "exact" and q_rand.method == "given"
    assert q_exact.scored_on == tuple(e.id for e in scoring) and q_exact.eval_ids == tuple(e.id for e in held_out)
    assert q_exact.n_kept == (0, 1, 3, 6, 16, 33)
    for q in (q_exact, q_rand):
        f = q.faithfulness
        assert f[0] == pytest.approx(0.0, abs=1e-4)  # every edge patched: the corrupt run
        assert f[-1] == pytest.approx(1.0, abs=1e-4)  # no edge patched: the full model
        assert q.cmd >= 0.0
        assert np.allclose(q.metric_circuit[:, -1], q.metric_clean, atol=1e-4)
    assert q_exact.cpr > q_rand.cpr + 0.1 and q_exact.cmd < q_rand.cmd
    # the same patched runs as faithfulness(): an eval example's own EdgeScores carry its inputs
    ex = held_out[0]
    own = edge_attribution_patching(s, ex, corrupt=donors)
    mean = mean_scores(exact)
    top6 = np.abs(mean[own.valid]) >= np.sort(np.abs(mean[own.valid]))[-6]
    mask = np.zeros_like(own.valid)
    mask[own.valid] = top6
    assert mask.sum() == 6  # no ties at the cut
    ref = faithfulness(s, Circuit(own, mask))
    assert q_exact.metric_circuit[0, 3] == pytest.approx(ref.metric_circuit, abs=1e-5)
    assert q_exact.metric_empty[0] == pytest.approx(own.metric_corrupt, abs=1e-4)
    json.dumps(q_exact.to_dict())


def test_circuit_quality_errors() -> None:
    from unpact.circuits import circuit_quality

    s = tiny_subject("gpt2")
    scored = edge_attribution_patching(s, EX, corrupt=CORRUPT)
    held = Example("ada-eval", EX.prompt, EX.answer, subject="Ada Lovelace")
    q = circuit_quality(s, scored, [held], corrupt=[CORRUPT], fractions=(0.0, 0.5, 1.0))
    assert q.faithfulness[0] == pytest.approx(0.0, abs=1e-4) and q.faithfulness[-1] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(InputError, match="evaluation set is empty"):
        circuit_quality(s, scored, [], corrupt=[CORRUPT])
    with pytest.raises(InputError, match="no counterfactual inputs"):
        circuit_quality(s, scored, [held], corrupt=None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no counterfactual inputs"):
        circuit_quality(s, scored, [held], corrupt="mean")  # type: ignore[arg-type]
    no_subject = Example("x", "Where was Ada Lovelace born?", "London")
    donor = Example("t", "Where was The Lovelace born?", "Paris", subject="The Lovelace")
    with pytest.raises(InputError, match=r"\['x'\] have no counterfactual.*Example.subject"):
        circuit_quality(s, scored, [held, no_subject], corrupt=[donor])
    with pytest.raises(InputError, match="2 corrupt prompts for 1 evaluation examples"):
        circuit_quality(s, scored, [held], corrupt=[CORRUPT, CORRUPT])
    with pytest.raises(InputError, match=r"\['ada'\] were used to score the edges.*held-out"):
        circuit_quality(s, scored, [EX], corrupt=[CORRUPT])
    with pytest.raises(InputError, match="ranking array must be"):
        circuit_quality(s, np.zeros((2, 2)), [held], corrupt=[CORRUPT])
    with pytest.raises(InputError, match="equal on average"):
        circuit_quality(s, scored, [held], corrupt=[EX.prompt])
    with pytest.raises(InputError, match="strictly increasing"):
        circuit_quality(s, scored, [held], corrupt=[CORRUPT], fractions=(0.5, 0.1))


def test_mean_scores_and_edge_type_errors() -> None:
    from unpact.circuits import edge_type_errors, mean_scores

    s = tiny_subject("gpt2")
    other = Example("bob", "Where was Bob Lovelace born?", "Paris", subject="Bob Lovelace")
    eap = [edge_attribution_patching(s, EX, corrupt=CORRUPT), edge_attribution_patching(s, other, corrupt="mean")]
    exact = [exact_edge_patching(s, es) for es in eap]
    assert np.allclose(mean_scores(eap), (eap[0].scores + eap[1].scores) / 2)
    with pytest.raises(InputError, match="metric"):
        mean_scores(
            [eap[0], edge_attribution_patching(s, EX, corrupt=CORRUPT, metric="logit_diff", corrupt_answer="Paris")]
        )
    with pytest.raises(InputError, match="no EdgeScores"):
        mean_scores([])
    rows = {r.edge_type: r for r in edge_type_errors(eap, exact)}
    assert set(rows) == {
        "embed->attn",
        "embed->mlp",
        "embed->logits",
        "head->attn",
        "head->mlp",
        "head->logits",
        "mlp->attn",
        "mlp->mlp",
        "mlp->logits",
        "all",
    }
    assert sum(r.n_edges for k, r in rows.items() if k != "all") == eap[0].n_edges == rows["all"].n_edges
    v = eap[0].valid
    err = sum(np.abs(e.scores[v] - x.scores[v]).sum() for e, x in zip(eap, exact))
    assert rows["all"].rel_error == pytest.approx(err / sum(np.abs(x.scores[v]).sum() for x in exact), rel=1e-6)
    assert rows["all"].n_values == 2 * eap[0].n_edges and rows["all"].scaled_error == pytest.approx(
        rows["all"].rel_error
    )
    assert sum(r.error_share for k, r in rows.items() if k != "all") == pytest.approx(1.0)
    head_logits = [(u, d) for u, d in zip(*np.nonzero(v)) if ".h" in eap[0].upstream[u] and d == v.shape[1] - 1]
    assert rows["head->logits"].n_edges == len(head_logits) == s.n_layers * s.n_heads
    assert rows["all"].magnitude_ratio == pytest.approx(
        sum(np.abs(e.scores[v]).sum() for e in eap) / sum(np.abs(x.scores[v]).sum() for x in exact), rel=1e-6
    )
    same = {r.edge_type: r for r in edge_type_errors(exact, exact)}
    assert same["all"].rel_error == 0.0 and same["all"].spearman == pytest.approx(1.0)
    assert same["all"].magnitude_ratio == pytest.approx(1.0)
    with pytest.raises(InputError, match="different clean/corrupt inputs"):
        edge_type_errors(eap, exact[::-1])
    with pytest.raises(InputError, match="2 estimates for 1 exact"):
        edge_type_errors(eap, exact[:1])
