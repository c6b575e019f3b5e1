"""Generation, teacher-forced answer scores and EvalResult."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unpact.data import Example, encode
from unpact.errors import InputError
from unpact.evaluate import EvalResult, answer_logprob, evaluate, first_token_rank, generate
from unpact.hooks import count_hooks
from unpact.models import ModelState

EXAMPLES = [
    Example("a", "Where was Ada born?", "London"),
    Example("b", "Focus on the name. What is the capital of France?", "Paris is the capital"),
    Example("c", "Who wrote the book?", "The author"),
]


def test_generate_shapes_batching_and_state(tiny):
    before = ModelState.capture(tiny.model, with_weights=True)
    one = generate(tiny, EXAMPLES, max_new_tokens=5, batch_size=1)
    many = generate(tiny, [e.prompt for e in EXAMPLES], max_new_tokens=5, batch_size=8)
    assert one == many  # left padding does not change greedy outputs
    assert len(one) == 3 and all(len(s) == 1 for s in one)
    s1 = generate(tiny, EXAMPLES, max_new_tokens=5, num_samples=4, seed=1)
    s2 = generate(tiny, EXAMPLES, max_new_tokens=5, num_samples=4, seed=1)
    assert s1 == s2 and all(len(s) == 4 for s in s1)
    assert ModelState.capture(tiny.model, with_weights=True) == before
    assert count_hooks(tiny.model) == 0
    with pytest.raises(ValueError):
        generate(tiny, EXAMPLES, num_samples=0)
    with pytest.raises(InputError, match="expected Examples or prompt strings"):
        generate(tiny, [3])  # type: ignore[list-item]


def test_greedy_matches_argmax(tiny):
    """The first generated token is the argmax of an unpadded forward pass."""
    tok = tiny.tokenizer
    gens = generate(tiny, EXAMPLES, max_new_tokens=1, batch_size=8)
    for ex, g in zip(EXAMPLES, gens):
        ids = torch.tensor([tok(ex.prompt)["input_ids"]])
        with torch.no_grad():
            nxt = int(tiny.model(ids).logits[0, -1].argmax())
        expect = "" if nxt == tok.eos_token_id else tok.decode([nxt], skip_special_tokens=True).strip()
        assert g[0] == expect


def test_answer_logprob_matches_manual(tiny):
    lp_mean = answer_logprob(tiny, EXAMPLES)
    lp_sum = answer_logprob(tiny, EXAMPLES, reduce="sum")
    ranks = first_token_rank(tiny, EXAMPLES)
    assert lp_mean.shape == (3,) and ranks.dtype == np.int64
    for i, ex in enumerate(EXAMPLES):
        enc = encode(tiny.tokenizer, ex)
        with torch.no_grad():
            logp = torch.log_softmax(tiny.model(enc.input_ids[None]).logits[0].double(), -1)
        a0, a1 = enc.answer_span
        manual = logp[torch.arange(a0 - 1, a1 - 1), enc.input_ids[a0:a1]]
        assert lp_sum[i] == pytest.approx(float(manual.sum()), abs=1e-4)
        assert lp_mean[i] == pytest.approx(float(manual.mean()), abs=1e-4)
        assert ranks[i] == int((logp[a0 - 1] > logp[a0 - 1, enc.input_ids[a0]]).sum())
    with pytest.raises(ValueError):
        answer_logprob(tiny, EXAMPLES, reduce="max")  # type: ignore[arg-type]


def test_evaluate_roundtrip(tiny, tmp_path):
    res = evaluate(tiny, EXAMPLES, max_new_tokens=4)
    assert len(res) == 3 and 0.0 <= res.accuracy("lenient") <= 1.0
    assert res.provenance is not None and res.provenance.weights_hash == tiny.weights_hash()
    res.save(tmp_path / "r.json")
    back = EvalResult.load(tmp_path / "r.json")
    assert back.records == res.records and back.provenance == res.provenance
    assert set(res.to_dict()["summary"]) >= {"exact", "lenient", "rouge_l", "answer_logprob"}
    with pytest.raises(ValueError):
        res.accuracy("fuzzy")  # type: ignore[arg-type]


def test_evaluate_on_trained_model(micro_world, toy_base):
    """On the trained micro model, lenient >= exact and top-1 first tokens mostly start a right answer."""
    res = evaluate(toy_base, micro_world.forget)
    assert res.accuracy("lenient") >= res.accuracy("exact") >= 0.5
    assert res.mean_logprob > -1.0
    right = [r for r in res.records if r.exact]
    assert all(r.first_token_top1 for r in right)
