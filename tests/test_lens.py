"""Tests of unpact.lens (logit lens, trajectories, diffs, TransformerLens bridge)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unpact.data import Example, InputError, encode
from unpact.hooks import count_hooks
from unpact.lens import LensTrajectory, logit_lens
from unpact.models import ModelState, load_model
from unpact.testing import tiny_subject

EXAMPLES = [
    Example("capital", "What is the capital of France?", "The capital of France is Paris."),
    Example("ada", "Where was Ada Lovelace born?", "London"),
]


def _model_logprobs(model, ids: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.log_softmax(model(ids[None]).logits[0].float(), -1)[:-1].numpy()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma2", "opt"])
def test_last_layer_equals_model_logprobs(arch: str) -> None:
    s = tiny_subject(arch)
    for ex, tr in zip(EXAMPLES, logit_lens(s, EXAMPLES, top_k=3, keep_distributions=True)):
        ids = encode(s.tokenizer, ex).input_ids
        ref = _model_logprobs(s.model, ids)
        np.testing.assert_allclose(tr.logprobs[-1], ref, atol=1e-5)
        gold = ref[np.arange(len(ids) - 1), ids[1:].numpy()]
        np.testing.assert_allclose(tr.logprob[-1], gold, atol=1e-5)
        np.testing.assert_array_equal(tr.rank[-1], (ref > gold[:, None]).sum(-1))
        np.testing.assert_array_equal(tr.topk_ids[-1, :, 0], ref.argmax(-1))
        assert tr.logprob.shape == (s.n_layers + 1, len(ids) - 1)
        np.testing.assert_allclose(tr.kl_to_final[-1], 0.0, atol=1e-6)


def test_toy_model_lens(toy_base, micro_world) -> None:
    exs = micro_world.forget[:3]
    for ex, tr in zip(exs, logit_lens(toy_base, exs)):
        ref = _model_logprobs(toy_base.model, encode(toy_base.tokenizer, ex).input_ids)
        gold = ref[np.arange(ref.shape[0]), tr.token_ids[1:]]
        np.testing.assert_allclose(tr.logprob[-1], gold, atol=1e-5)
        assert tr.answer_rank().shape == (toy_base.n_layers + 1, tr.answer_span[1] - tr.answer_span[0])


def test_intermediate_layer_is_decoded_residual(tiny) -> None:
    from unpact.hooks import run_with_cache

    tr = logit_lens(tiny, EXAMPLES[:1], keep_distributions=True)[0]
    ids = torch.as_tensor(tr.token_ids)[None]
    _, cache = run_with_cache(tiny, ids, ["resid_post.0", "resid_pre.0"])
    for row, site in ((1, "resid_post.0"), (0, "resid_pre.0")):
        with torch.no_grad():
            ref = torch.log_softmax(tiny.decode_resid(tiny.final_norm(cache[site][0, :-1])), -1).numpy()
        np.testing.assert_allclose(tr.logprobs[row], ref, atol=1e-5)


def test_batching_and_padding_do_not_change_results(tiny) -> None:
    a = logit_lens(tiny, EXAMPLES, batch_size=1)
    b = logit_lens(tiny, EXAMPLES, batch_size=2)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.logprob, y.logprob, atol=1e-5)
        np.testing.assert_array_equal(x.topk_ids[..., 0], y.topk_ids[..., 0])


def test_save_load_and_diff(tmp_path) -> None:
    a, b = tiny_subject("gpt2", seed=0), tiny_subject("gpt2", seed=1)
    ta = logit_lens(a, EXAMPLES, keep_distributions=True)[0]
    tb = logit_lens(b, EXAMPLES, keep_distributions=True)[0]
    ta.save(tmp_path / "t.npz")
    assert LensTrajectory.load(tmp_path / "t.npz") == ta
    d = ta.diff(tb)
    np.testing.assert_allclose(d.rank_change, tb.rank - ta.rank)
    np.testing.assert_allclose(d.prob_change, tb.prob - ta.prob)
    assert d.kl is not None and d.kl.shape == ta.logprob.shape and (d.kl >= -1e-6).all()
    assert d.kl_answer.shape == (a.n_layers + 1,)
    # KL of a model with itself is zero; without distributions there is no KL.
    assert np.abs(ta.diff(ta).kl).max() < 1e-6
    lean = logit_lens(a, EXAMPLES[:1], keep_distributions=False)[0]
    assert lean.logprobs is None and lean.diff(lean).kl is None
    assert set(d.to_dict()) >= {"rank_change", "kl_answer"}
    with pytest.raises(InputError, match="different token sequences"):
        ta.diff(logit_lens(a, EXAMPLES[1:])[0])


def test_lens_leaves_model_untouched(tiny, monkeypatch) -> None:
    tiny.model.train()
    before = ModelState.capture(tiny.model, with_weights=True)
    hooks = count_hooks(tiny.model)
    logit_lens(tiny, EXAMPLES)
    assert ModelState.capture(tiny.model, with_weights=True) == before
    monkeypatch.setattr(tiny.final_norm, "forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        logit_lens(tiny, EXAMPLES)
    monkeypatch.undo()
    assert ModelState.capture(tiny.model, with_weights=True) == before
    assert count_hooks(tiny.model) == hooks
    with pytest.raises(ValueError, match="top_k"):
        logit_lens(tiny, EXAMPLES, top_k=0)


@pytest.mark.tl
def test_transformer_lens_bridge_matches_hf(tiny_bridge) -> None:
    model, bridge = tiny_bridge
    via_bridge = logit_lens(load_model(bridge), EXAMPLES)
    # The bridge's tokenizer prepends BOS (TransformerLens' convention): compare on the same tokens.
    via_hf = logit_lens(load_model(model, bridge.tokenizer), EXAMPLES)
    for x, y in zip(via_bridge, via_hf):
        np.testing.assert_allclose(x.logprob, y.logprob, atol=1e-6)
        np.testing.assert_array_equal(x.topk_ids, y.topk_ids)
        ids = torch.as_tensor(x.token_ids)[None]
        with torch.no_grad():
            own = torch.log_softmax(bridge(ids).float(), -1)[0, :-1]
        gold = own.gather(-1, ids[0, 1:, None]).squeeze(-1).numpy()
        np.testing.assert_allclose(x.logprob[-1], gold, atol=1e-5)
