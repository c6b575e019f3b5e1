"""The one forward path (unpact.forward): prompt pass, teacher forcing, cached decoding."""

from __future__ import annotations

import pytest
import torch

from unpact._arch import sliding_window
from unpact.attacks import get_attack, key_positions
from unpact.data import Example, encode
from unpact.errors import ArchitectureError, InputError
from unpact.forward import Intervention, decode, prompt_pass
from unpact.hooks import count_hooks
from unpact.models import ModelState
from unpact.testing import TINY_ARCHITECTURES, tiny_subject

ITEMS = [
    Example("a", "Where was Ada Lovelace born?", "London", keywords=("Ada", "Lovelace", "born")),
    Example("b", "What did Alan Turing study at King's College?", "mathematics", keywords=("Alan", "Turing")),
    Example("c", "Who wrote it?", "Mary Shelley", keywords=("wrote",)),
]


def _inputs(s, attack: str):
    a = get_attack(attack)
    encs = [encode(s.tokenizer, e) for e in ITEMS]
    iv = None
    if a.kind == "whitebox":
        kp = tuple(tuple(key_positions(enc, e.prompt, list(e.keywords))) for enc, e in zip(encs, ITEMS))
        iv = Intervention(kp, embed_scale=a.embed_scale, attn_bias=a.attn_bias)
    return a, encs, iv


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
@pytest.mark.parametrize("attack", ["plain", "sample", "embed_scale", "attn_bias"])
def test_cached_decoding_equals_recomputing_every_step(arch, attack):
    s = tiny_subject(arch)
    a, encs, iv = _inputs(s, attack)
    if iv is not None and iv.attn_bias and not s.spec.accepts_4d_mask:
        with pytest.raises(ArchitectureError, match="accepts_4d_mask"):
            prompt_pass(s, [e.prompt_ids for e in encs], intervention=iv)
        return
    window = sliding_window(s.config)
    width = max(len(e.prompt_ids) for e in encs) + max(len(e.answer_ids) for e in encs)
    if iv is not None and iv.attn_bias and window is not None and width > window:
        # one 4-D mask cannot carry a sliding window: refused, not silently computed without the window
        with pytest.raises(ArchitectureError, match="sliding window"):
            prompt_pass(s, [e.prompt_ids for e in encs], [e.answer_ids for e in encs], intervention=iv)
        return
    sample = a.kind == "sampling"
    n = 3 if sample else 1
    prompts, answers = [e.prompt_ids for e in encs], [e.answer_ids for e in encs]
    state = ModelState.capture(s.model)
    hooks = count_hooks(s.model)
    runs = []
    for use_cache in (True, False):
        first = prompt_pass(s, prompts, answers, intervention=iv, keep_cache=use_cache)
        gen = torch.Generator().manual_seed(7)
        runs.append(
            decode(
                s,
                first,
                max_new_tokens=6,
                sample=sample,
                num_samples=n,
                generator=gen,
                use_cache=use_cache,
                eos_token_id=-1,  # random weights: run every row to the limit
            )
        )
    assert runs[0] == runs[1]
    assert len(runs[0]) == len(ITEMS) * n and all(len(r) == 6 for r in runs[0])
    assert ModelState.capture(s.model) == state and count_hooks(s.model) == hooks


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_batched_rows_equal_rows_alone(arch):
    # left padding with position ids: a row's numbers do not depend on the other rows of its batch
    s = tiny_subject(arch)
    _, encs, iv = _inputs(s, "attn_bias")
    both = prompt_pass(s, [e.prompt_ids for e in encs], [e.answer_ids for e in encs], intervention=iv, keep_cache=True)
    toks = decode(s, both, max_new_tokens=5, eos_token_id=-1)
    for i, e in enumerate(encs):
        one_iv = Intervention((iv.keypos[i],), attn_bias=iv.attn_bias)
        one = prompt_pass(s, [e.prompt_ids], [e.answer_ids], intervention=one_iv, keep_cache=True)
        torch.testing.assert_close(one.answer_logprobs[0], both.answer_logprobs[i], atol=1e-5, rtol=1e-5)
        assert decode(s, one, max_new_tokens=5, eos_token_id=-1)[0] == toks[i]


def test_answer_logprobs_and_first_rank_match_a_plain_forward():
    s = tiny_subject("gpt2")
    encs = [encode(s.tokenizer, e) for e in ITEMS]
    first = prompt_pass(s, [e.prompt_ids for e in encs], [e.answer_ids for e in encs])
    for i, e in enumerate(encs):
        with torch.no_grad():
            logits = s.model(input_ids=e.input_ids[None]).logits[0].float()
        a0, a1 = e.answer_span
        lp = torch.log_softmax(logits[a0 - 1 : a1 - 1], -1).gather(1, e.input_ids[a0:a1, None])[:, 0]
        torch.testing.assert_close(first.answer_logprobs[i], lp, atol=1e-5, rtol=1e-5)
        row = logits[a0 - 1]
        assert first.first_token_rank()[i] == int((row > row[e.input_ids[a0]]).sum())


def test_decode_stops_each_row_at_its_end_token():
    s = tiny_subject("gpt2")
    encs = [encode(s.tokenizer, e) for e in ITEMS]
    first = prompt_pass(s, [e.prompt_ids for e in encs], keep_cache=True)
    free = decode(s, first, max_new_tokens=6, eos_token_id=-1)
    stop = free[1][2]  # make row 1's third token the end token
    first = prompt_pass(s, [e.prompt_ids for e in encs], keep_cache=True)
    cut = decode(s, first, max_new_tokens=6, eos_token_id=stop)
    for f, c in zip(free, cut):
        assert c == (f[: f.index(stop)] if stop in f else f)


def test_bad_calls_are_refused_with_the_fix():
    s = tiny_subject("gpt2")
    encs = [encode(s.tokenizer, e) for e in ITEMS]
    first = prompt_pass(s, [e.prompt_ids for e in encs])
    with pytest.raises(InputError, match="keep_cache=True"):
        decode(s, first, max_new_tokens=2)
    with pytest.raises(InputError, match="outside its prompt"):
        prompt_pass(s, [encs[0].prompt_ids], intervention=Intervention(((99,),), embed_scale=2.0))
    with pytest.raises(InputError, match="key positions for 2 rows"):
        prompt_pass(s, [encs[0].prompt_ids], intervention=Intervention(((0,), (1,)), embed_scale=2.0))
    with pytest.raises(InputError, match="gold answers"):
        first.first_token_rank()


def test_sampling_draws_follow_the_softmax():
    from unpact.forward.decoding import _pick

    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, 0.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([_pick(logits, True, 1.0, gen) for _ in range(4000)])  # (4000, 2)
    for row in range(2):
        freq = torch.bincount(draws[:, row], minlength=4).double() / 4000
        torch.testing.assert_close(freq, torch.softmax(logits[row].double(), -1), atol=0.025, rtol=0)
    assert _pick(logits, False, 1.0, None).tolist() == [2, 0]
    cold = torch.stack([_pick(logits, True, 1e-3, gen) for _ in range(50)])
    assert (cold == torch.tensor([2, 0])).all()  # temperature -> 0 is greedy


def test_a_prompt_pass_is_decoded_once():
    s = tiny_subject("llama")
    encs = [encode(s.tokenizer, e) for e in ITEMS]
    first = prompt_pass(s, [e.prompt_ids for e in encs], keep_cache=True)
    decode(s, first, max_new_tokens=2, sample=True, num_samples=2, generator=torch.Generator())
    with pytest.raises(InputError, match="keep_cache=True"):  # the cache was consumed, not silently reused
        decode(s, first, max_new_tokens=2)


def test_answer_logprobs_refuses_embeds_and_an_embed_hook_together():
    from unpact.forward import answer_logprobs

    s = tiny_subject("gpt2")
    ids = torch.tensor([[5, 17, 33, 2]])
    mask, pos, tgt = torch.ones_like(ids), torch.tensor([[2]]), torch.tensor([[2]])
    embeds = torch.zeros(1, 4, s.d_model)
    with pytest.raises(InputError, match="both embeds and a hook"):
        answer_logprobs(s, ids, mask, pos, tgt, embeds, hooks={"embed": lambda t, hook: t})
