"""Tests of unpact.attribution (integrated gradients, leave-one-out) and unpact.words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unpact.attribution import (
    IG_METHODS,
    Attribution,
    AttributionDiff,
    attribute,
    ig_nodes,
    integrated_gradients,
    leave_one_out,
)
from unpact.data import Example, InputError, encode
from unpact.hooks import count_hooks
from unpact.models import ModelState, frozen
from unpact.testing import tiny_subject
from unpact.words import group_tokens

EXAMPLES = [
    Example("capital", "What is the capital of France?", "The capital of France is Paris.", keywords=("France",)),
    Example("ada", "Where was Ada Lovelace born?", "London"),
]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(b).max())


def _captum_lig(subject, ex: Example, *, n_steps: int, method: str, target: str, baseline_id: int) -> np.ndarray:
    """Reference: captum's LayerIntegratedGradients on the embedding layer, full-logits forward."""
    from captum.attr import LayerIntegratedGradients

    enc = encode(subject.tokenizer, ex)
    ids = enc.input_ids[None]
    (a, b), (p0, p1) = enc.answer_span, enc.prompt_span
    base = ids.clone()
    base[0, p0:p1] = baseline_id

    def forward(inp: torch.Tensor) -> torch.Tensor:
        lp = torch.log_softmax(subject.model(inp).logits.float(), -1)[:, a - 1 : b - 1]
        lp = lp.gather(-1, inp[:, a:b, None]).squeeze(-1)
        return lp.mean(-1) if target == "mean" else lp.sum(-1)

    with frozen(subject.model):
        lig = LayerIntegratedGradients(forward, subject.embed)
        attr = lig.attribute(ids, baselines=base, n_steps=n_steps, method=method, internal_batch_size=8)
    return attr.sum(-1)[0, p0:p1].double().numpy()


@pytest.mark.parametrize(
    ("arch", "method", "target"),
    [("gpt2", "gausslegendre", "mean"), ("llama", "riemann_trapezoid", "sum"), ("gpt_neox", "riemann_left", "mean")],
)
def test_ig_equals_captum_layer_integrated_gradients(arch: str, method: str, target: str) -> None:
    s = tiny_subject(arch)
    ours = integrated_gradients(
        s, EXAMPLES, n_steps=16, method=method, target=target, baseline="pad", internal_batch_size=5
    )
    for ex, res in zip(EXAMPLES, ours):
        ref = _captum_lig(s, ex, n_steps=16, method=method, target=target, baseline_id=s.tokenizer.pad_token_id)
        assert res.token_scores.shape == ref.shape
        assert _rel(res.token_scores, ref) <= 1e-4


def test_ig_batching_does_not_change_results(tiny) -> None:
    a = integrated_gradients(tiny, EXAMPLES, n_steps=8, internal_batch_size=3, batch_size=1)
    b = integrated_gradients(tiny, EXAMPLES, n_steps=8)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.token_scores, y.token_scores, rtol=1e-5, atol=1e-7)


def test_ig_matrix_rows_reduce_to_scores(tiny) -> None:
    for target in ("mean", "sum"):
        plain = integrated_gradients(tiny, EXAMPLES, n_steps=8, target=target)
        full = integrated_gradients(tiny, EXAMPLES, n_steps=8, target=target, per_answer_token=True)
        for p, f in zip(plain, full):
            assert f.matrix is not None and f.matrix.shape == (len(f.answer_tokens), len(f.tokens))
            red = f.matrix.mean(0) if target == "mean" else f.matrix.sum(0)
            np.testing.assert_allclose(red, p.token_scores, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(f.token_scores, red)


@pytest.mark.parametrize("baseline", ["eos", "zero", "unk", 5])
def test_ig_baselines_are_complete(tiny, baseline) -> None:
    res = integrated_gradients(tiny, EXAMPLES[:1], n_steps=64, baseline=baseline)[0]
    assert res.relative_completeness_error is not None and res.relative_completeness_error < 0.02


def test_ig_bad_arguments(tiny) -> None:
    with pytest.raises(ValueError, match="unknown IG method"):
        integrated_gradients(tiny, EXAMPLES, method="simpson")
    with pytest.raises(ValueError, match="unknown baseline"):
        integrated_gradients(tiny, EXAMPLES, baseline="nothing")
    with pytest.raises(ValueError, match="mean' or 'sum"):
        integrated_gradients(tiny, EXAMPLES, target="max")
    with pytest.raises(ValueError, match="n_steps"):
        integrated_gradients(tiny, EXAMPLES, n_steps=0)
    with pytest.raises(InputError, match="list of examples"):
        integrated_gradients(tiny, EXAMPLES[0])
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute(tiny, EXAMPLES[0], method="shap")


@pytest.mark.parametrize("method", IG_METHODS)
def test_ig_nodes_equal_captums(method: str) -> None:
    """Our quadrature nodes and weights are captum's, exactly (the test may read captum's private module)."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters(method)
    for n in (2, 3, 7, 16, 50, 129):
        nodes, weights = ig_nodes(method, n)
        np.testing.assert_array_equal(nodes, np.asarray(alphas(n)))
        np.testing.assert_array_equal(weights, np.asarray(step_sizes(n)))
        assert nodes.shape == weights.shape == (n,) and nodes.dtype == weights.dtype == np.float64


def test_library_does_not_import_captum() -> None:
    import ast
    from pathlib import Path

    import unpact

    for path in Path(unpact.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            assert not any(n.split(".")[0] == "captum" for n in names), f"{path} imports captum"


def test_completeness_on_toy_model(toy_base, micro_world) -> None:
    """Completeness error shrinks with steps and is <= 1% at the default step count."""
    examples = micro_world.forget[:4]
    errors = {}
    for steps in (4, 16):
        res = integrated_gradients(toy_base, examples, n_steps=steps)
        errors[steps] = max(r.relative_completeness_error for r in res)
    default = integrated_gradients(toy_base, examples)
    errors[50] = max(r.relative_completeness_error for r in default)
    assert errors[4] > errors[16] >= 0
    assert errors[50] <= 0.01, errors
    # Gauss-Legendre beats a left Riemann sum at equal steps.
    left = integrated_gradients(toy_base, examples, n_steps=16, method="riemann_left")
    assert max(r.relative_completeness_error for r in left) > errors[16]


def test_loo_equals_one_by_one(tiny) -> None:
    for target in ("mean", "sum"):
        res = leave_one_out(tiny, EXAMPLES, target=target, batch_size=5, per_answer_token=True)
        for ex, r in zip(EXAMPLES, res):
            enc = encode(tiny.tokenizer, ex)
            (a, b), (p0, p1) = enc.answer_span, enc.prompt_span

            def lp(ids: torch.Tensor, start: int) -> torch.Tensor:
                with torch.no_grad():
                    out = torch.log_softmax(tiny.model(ids[None]).logits[0].float(), -1)
                n = len(ids) - start
                return out[start - 1 : start - 1 + n].gather(-1, ids[start:, None]).squeeze(-1).double()

            red = (lambda t: t.mean()) if target == "mean" else (lambda t: t.sum())
            full = lp(enc.input_ids, a)
            assert r.value == pytest.approx(float(red(full)), abs=1e-5)
            expected = []
            for p in range(p0, p1):
                ids = torch.cat([enc.input_ids[:p], enc.input_ids[p + 1 :]])
                expected.append(float(red(full) - red(lp(ids, a - 1))))
            np.testing.assert_allclose(r.token_scores, expected, atol=1e-5)
            assert r.matrix is not None and r.matrix.shape == (b - a, p1 - p0)
            assert r.completeness_error is None


def test_tracers_leave_model_untouched(tiny) -> None:
    tiny.model.train()
    tiny.model.transformer.h[0].mlp.c_fc.weight.requires_grad_(False)
    before = ModelState.capture(tiny.model, with_weights=True)
    hooks = count_hooks(tiny.model)
    integrated_gradients(tiny, EXAMPLES, n_steps=4, per_answer_token=True)
    leave_one_out(tiny, EXAMPLES)
    assert ModelState.capture(tiny.model, with_weights=True) == before
    assert count_hooks(tiny.model) == hooks
    assert all(p.grad is None for p in tiny.model.parameters())


def test_tracers_clean_up_on_exception(tiny, monkeypatch) -> None:
    tiny.model.train()
    before = ModelState.capture(tiny.model, with_weights=True)
    hooks = count_hooks(tiny.model)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tiny.unembed, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        integrated_gradients(tiny, EXAMPLES, n_steps=4)
    with pytest.raises(RuntimeError, match="boom"):
        leave_one_out(tiny, EXAMPLES)
    monkeypatch.undo()
    assert ModelState.capture(tiny.model, with_weights=True) == before
    assert count_hooks(tiny.model) == hooks


def test_save_load_round_trip(tiny, tmp_path) -> None:
    ig = attribute(tiny, EXAMPLES[0], method="ig", n_steps=4, per_answer_token=True)
    loo = attribute(tiny, EXAMPLES[1], method="loo")
    for i, res in enumerate((ig, loo)):
        res.save(tmp_path / f"a{i}.npz")
        back = Attribution.load(tmp_path / f"a{i}.npz")
        assert back == res
        assert back.provenance == res.provenance and back.example == res.example
        np.testing.assert_array_equal(back.token_scores, res.token_scores)
    assert ig.provenance.method == "integrated_gradients" and ig.provenance.args["n_steps"] == 4
    assert ig.provenance.weights_hash == tiny.weights_hash()


def test_diff_of_two_models(tmp_path) -> None:
    a, b = tiny_subject("gpt2", seed=0), tiny_subject("gpt2", seed=1)
    ra = attribute(a, EXAMPLES[0], method="loo")
    rb = attribute(b, EXAMPLES[0], method="loo")
    d = ra.diff(rb)
    np.testing.assert_allclose(d.token_delta, rb.token_scores - ra.token_scores)
    np.testing.assert_allclose(d.word_delta, rb.word_scores - ra.word_scores)
    expected_total = 1.0 if (ra.word_scores > 0).any() else 0.0
    np.testing.assert_allclose(d.word_share_before.sum(), expected_total)
    np.testing.assert_allclose(d.word_share_before, ra.word_shares())
    assert sorted(d.word_rank_before.tolist()) == list(range(len(ra.words)))
    np.testing.assert_array_equal(d.word_rank_change, d.word_rank_after - d.word_rank_before)
    drops = d.largest_drops(3)
    assert len(drops) <= 3 and all(change < 0 for _, change in drops)
    if (ra.word_scores > 0).any() and (rb.word_scores > 0).any():  # shares sum to 1 on both sides: some fell
        assert drops
    d.save(tmp_path / "d.npz")
    assert AttributionDiff.load(tmp_path / "d.npz") == d
    other = attribute(a, EXAMPLES[1], method="loo")
    with pytest.raises(InputError, match="different prompts"):
        ra.diff(other)


def test_word_grouping(tiny) -> None:
    tok = tiny.tokenizer
    text = "Where was Ada Lovelace born? Quick-brown fox's den"
    ids = tok(text)["input_ids"]
    words, t2w = group_tokens(tok, text, ids)
    assert words == ["Where", "was", "Ada", "Lovelace", "born", "?", "Quick-brown", "fox's", "den"]
    assert (t2w >= 0).all() and list(t2w) == sorted(t2w)
    joined = ["".join(tok.decode([ids[j]]) for j in range(len(ids)) if t2w[j] == w).strip() for w in range(len(words))]
    assert joined == words
    res = attribute(tiny, EXAMPLES[0], method="loo")
    assert "France" in res.words
    np.testing.assert_allclose(res.word_scores.sum(), res.token_scores.sum())


def test_input_errors(tiny) -> None:
    long = Example("long", "word " * 200, "x")
    with pytest.raises(InputError, match="longer than the model's context"):
        leave_one_out(tiny, [long])


def test_ig_chunking_gives_the_same_attributions(tiny) -> None:
    """One row per forward, a few rows per forward, or all rows in one forward: the same numbers."""
    whole = integrated_gradients(tiny, EXAMPLES, n_steps=6, per_answer_token=True, internal_batch_size=10**6)
    for rows in (1, 4):
        part = integrated_gradients(tiny, EXAMPLES, n_steps=6, per_answer_token=True, internal_batch_size=rows)
        for a, b in zip(part, whole):
            np.testing.assert_allclose(a.token_scores, b.token_scores, rtol=1e-5, atol=1e-7)
            assert a.matrix is not None and b.matrix is not None
            np.testing.assert_allclose(a.matrix, b.matrix, rtol=1e-5, atol=1e-7)
            assert a.value == pytest.approx(b.value, abs=1e-6)
            assert a.baseline_value == pytest.approx(b.baseline_value, abs=1e-6)


def test_ig_small_memory_budget(tiny) -> None:
    """A tiny budget runs one row per gradient forward, with no parameter requiring grad, same results."""
    seen: list[tuple[int, bool]] = []

    def record(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            seen.append((args[0].shape[0], any(p.requires_grad for p in tiny.model.parameters())))

    handle = tiny.embed.register_forward_hook(record)
    try:
        small = integrated_gradients(tiny, EXAMPLES, n_steps=4, memory_budget_mb=1e-3)
    finally:
        handle.remove()
    assert seen == [(1, False)] * (len(EXAMPLES) * 4)
    default = integrated_gradients(tiny, EXAMPLES, n_steps=4)
    for a, b in zip(small, default):
        np.testing.assert_allclose(a.token_scores, b.token_scores, rtol=1e-5, atol=1e-7)
        assert a.completeness_error == pytest.approx(b.completeness_error, abs=1e-6)
    with pytest.raises(InputError, match="memory_budget_mb"):
        integrated_gradients(tiny, EXAMPLES, memory_budget_mb=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_row_bytes_covers_what_autograd_keeps(arch: str) -> None:
    """The per-row estimate that sizes IG's chunks is above the activations autograd saves."""
    from unpact.attribution._batching import answer_index, pad_rows
    from unpact.attribution.ig import row_bytes
    from unpact.forward import answer_logprobs

    s = tiny_subject(arch)
    encs = [encode(s.tokenizer, ex) for ex in EXAMPLES]
    ids, mask = pad_rows([e.input_ids for e in encs], s.tokenizer.pad_token_id)
    pos, tgt, _ = answer_index([e.answer_span for e in encs], ids)
    params = {p.untyped_storage().data_ptr() for p in s.model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with frozen(s.model):
        z = s.embed(ids).detach().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            answer_logprobs(s, ids, mask, pos, tgt, z)
    assert 0 < sum(saved.values()) <= len(encs) * row_bytes(s, ids.shape[1], pos.shape[1])


def test_answer_logprobs_runs_the_unembedding_on_answer_positions_only(tiny) -> None:
    """The model's own head never runs; the values equal a full forward's log-softmax."""
    from unpact.attribution._batching import answer_index, pad_rows
    from unpact.forward import answer_logprobs

    encs = [encode(tiny.tokenizer, ex) for ex in EXAMPLES]
    ids, mask = pad_rows([e.input_ids for e in encs], tiny.tokenizer.pad_token_id)
    pos, tgt, valid = answer_index([e.answer_span for e in encs], ids)
    shapes: list[tuple[int, ...]] = []
    handle = tiny.unembed.register_forward_hook(lambda m, args, out: shapes.append(tuple(args[0].shape)))
    try:
        with torch.no_grad():
            lp = answer_logprobs(tiny, ids, mask, pos, tgt)
    finally:
        handle.remove()
    assert shapes == [(*pos.shape, tiny.d_model)]
    with torch.no_grad():
        full = torch.log_softmax(tiny.model(ids, attention_mask=mask).logits.float(), -1)
    ref = full.gather(1, pos[..., None].expand(-1, -1, full.shape[-1])).gather(-1, tgt[..., None]).squeeze(-1)
    np.testing.assert_allclose(lp[valid].numpy(), ref[valid].numpy(), atol=1e-5)
