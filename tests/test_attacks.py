"""Attack registry, text transforms, white-box interventions: inference only, no trace left on the model."""

from __future__ import annotations

import pytest
import torch

from unpact import attacks as atk
from unpact.data import Example
from unpact.errors import ArchitectureError
from unpact.hooks import count_hooks
from unpact.models import ModelState
from unpact.prompts import PromptFormat
from unpact.testing import TINY_ARCHITECTURES, tiny_subject

EX = Example("a", "Where was Ada Lovelace born?", "London", keywords=("Ada", "Lovelace", "born"))
EX2 = Example("b", "What is the capital of France?", "Paris", keywords=("capital", "France", "Paris"))


def test_text_transforms_exact():
    kw = ["Lovelace", "born"]
    assert atk.apply_text_attack("restate", EX, kw).prompt == "Focus on: Lovelace, born. Where was Ada Lovelace born?"
    assert atk.apply_text_attack("repeat", EX, kw).prompt == "Where was Ada Lovelace Lovelace born born?"
    assert atk.apply_text_attack("quote", EX, kw).prompt == 'Where was Ada "Lovelace" "born"?'
    assert atk.apply_text_attack("capitalise", EX, kw).prompt == "Where was Ada LOVELACE BORN?"
    assert atk.apply_text_attack("front", EX, kw).prompt == "Lovelace, born: Where was Ada Lovelace born?"
    combo = atk.apply_text_attack("restate+quote", EX, ["born"])
    assert combo.prompt == 'Focus on: "born". Where was Ada Lovelace "born"?'
    assert combo.answer == EX.answer and combo.id == EX.id and combo.meta["attack"] == "restate+quote"


def test_whole_words_only_and_case_fallback():
    ex = Example("c", "Is the born-again bornholm BORN here?", "x")
    assert atk.find_keyword_spans(ex.prompt, ["born"]) == [(7, 11, "born")]
    assert atk.find_keyword_spans("no hit", ["zzz"]) == []
    assert atk.find_keyword_spans("The CITY", ["city"]) == [(4, 8, "city")]


def test_answer_is_never_emphasised():
    out = atk.apply_text_attack("restate", EX2, ["capital", "Paris"])
    assert "Paris" not in out.prompt


def test_registry_errors_and_custom():
    with pytest.raises(ValueError, match="registered attacks:.*restate"):
        atk.get_attack("nope")
    with pytest.raises(ValueError, match="already registered"):
        atk.register_attack("restate", atk.restate)
    with pytest.raises(ValueError, match="only text attacks"):
        atk.get_attack("restate+sample")

    def shout(ex, kws):
        return ex.with_prompt(ex.prompt + "!!")

    try:
        atk.register_attack("shout_test", shout)
        assert "shout_test" in atk.list_attacks("text")
        assert atk.apply_text_attack("shout_test", EX, []).prompt.endswith("!!")
        atk.register_attack("shout_test", atk.Attack("x", "whitebox", embed_scale=2.0), overwrite=True)
        assert atk.get_attack("shout_test").kind == "whitebox"
    finally:
        atk._registry().pop("shout_test", None)


def test_key_positions(tiny):
    enc = tiny.encode(EX)
    pos = atk.key_positions(enc, EX.prompt, ["Lovelace"])
    toks = tiny.tokenizer.convert_ids_to_tokens(enc.prompt_ids.tolist())
    assert pos and "".join(toks[p] for p in pos).replace("\u0120", "") == "Lovelace"
    assert atk.key_positions(enc, EX.prompt, ["absent"]) == []
    # inside a template, the same word is found at its new positions; template words never count
    templated = tiny.with_format(PromptFormat(template="Lovelace asks: {question}\nAnswer:"))
    enc2 = templated.encode(EX)
    pos2 = atk.key_positions(enc2, EX.prompt, ["Lovelace"])
    toks2 = tiny.tokenizer.convert_ids_to_tokens(enc2.prompt_ids.tolist())
    assert pos2 and min(pos2) >= enc2.prompt_span[0] and pos2 != pos
    assert "".join(toks2[p] for p in pos2).replace("\u0120", "") == "Lovelace"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_attacks_leave_no_trace(arch):
    from unpact.testing import tiny_subject

    s = tiny_subject(arch)
    s.model.train()  # a non-default mode must come back as it was
    before = ModelState.capture(s.model, with_weights=True)
    for name in ("plain", *atk.DEFAULT_ATTACKS):
        outs = atk.run_attack(s, [EX, EX2], name, max_new_tokens=3)
        assert len(outs) == 2 and all(o.samples for o in outs)
    assert ModelState.capture(s.model, with_weights=True) == before
    assert count_hooks(s.model) == 0


def test_batched_equals_single_and_neutral_whitebox(tiny):
    for name in ("plain", "embed_scale", "attn_bias", "restate"):
        both = atk.run_attack(tiny, [EX, EX2], name, max_new_tokens=4)
        one = [atk.run_attack(tiny, [e], name, max_new_tokens=4)[0] for e in (EX, EX2)]
        assert [o.samples for o in both] == [o.samples for o in one]
        for a, b in zip(both, one):
            assert abs(a.answer_logprob - b.answer_logprob) < 1e-4
    plain = atk.run_attack(tiny, [EX], "plain", max_new_tokens=4)[0]
    neutral = atk.Attack("neutral", "whitebox", embed_scale=1.0, attn_bias=0.0)
    same = atk.run_attack(tiny, [EX], neutral, max_new_tokens=4)[0]
    assert same.samples == plain.samples and abs(same.answer_logprob - plain.answer_logprob) < 1e-6
    for strong in (atk.Attack("s", "whitebox", embed_scale=5.0), atk.Attack("b", "whitebox", attn_bias=5.0)):
        out = atk.run_attack(tiny, [EX], strong, max_new_tokens=4)[0]
        assert out.n_key_positions > 0
        assert abs(out.answer_logprob - plain.answer_logprob) > 1e-3  # the intervention does something


def test_plain_greedy_matches_hf_generate(tiny):
    ids = tiny.tokenizer(EX.prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        g = tiny.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False, pad_token_id=0
        )
    ref = tiny.tokenizer.decode(g[0, ids.shape[1] :], skip_special_tokens=True)
    assert atk.run_attack(tiny, [EX], "plain", max_new_tokens=5)[0].samples == (ref,)


def test_sampling_is_seeded(tiny):
    a = atk.run_attack(tiny, [EX], "sample", max_new_tokens=3, seed=1)[0].samples
    b = atk.run_attack(tiny, [EX], "sample", max_new_tokens=3, seed=1)[0].samples
    c = atk.run_attack(tiny, [EX], "sample", max_new_tokens=3, seed=2)[0].samples
    assert a == b and len(a) == 8 and a != c


def test_bad_inputs(tiny):
    with pytest.raises(ValueError, match="one per example"):
        atk.run_attack(tiny, [EX], "restate", [["a"], ["b"]])


def test_keywords_sharing_an_answer_word_are_dropped():
    # Answer "New York City": "York" and "york," share a content word; "of"/"the" are function words and
    # do not count, so "capital" and "of" stay.
    ex = Example("d", "Where is the capital of York county?", "New York City")
    assert atk._safe_keywords(ex, ["York", "york,", "capital", "of", "New-York"]) == ["capital", "of"]
    out = atk.apply_text_attack("restate", ex, ["York", "capital"])
    assert out.prompt == "Focus on: capital. Where is the capital of York county?"


def test_restate_and_front_use_only_keywords_in_the_prompt():
    # Key words absent from the prompt must never be injected (they could carry the answer).
    assert atk.restate(EX, ["London", "Thames"]) == EX
    assert atk.front(EX, ["London", "Thames"]) == EX
    assert atk.restate(EX, ["Thames", "born"]).prompt == "Focus on: born. Where was Ada Lovelace born?"
    assert atk.front(EX, ["Thames", "born"]).prompt == "born: Where was Ada Lovelace born?"


def test_transform_names_recorded_in_config_are_the_public_ones():
    # Attack.config() feeds the audit's argument hash: it must not move with the package layout.
    assert atk.get_attack("restate").config()["transform"] == "unpact.attacks.restate"
    assert atk.get_attack("restate+repeat").config()["transform"] == "unpact.attacks.restate+repeat"


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_attn_bias_follows_the_declared_4d_mask_capability(arch):
    s = tiny_subject(arch)
    if not s.spec.accepts_4d_mask:
        with pytest.raises(ArchitectureError, match=f"{arch} does not.*accepts_4d_mask"):
            atk.run_attack(s, [EX], "attn_bias", max_new_tokens=1)
        return
    from unpact.forward.layout import _bias_mask

    ids = torch.tensor([[5, 17, 33, 2, 41, 8]])
    with torch.no_grad():
        ref = s.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        masks = [_bias_mask(torch.ones_like(ids), 6, [0], [1], b, s) for b in (0.0, 3.0)]
        zero, biased = (s.model(input_ids=ids, attention_mask=m, use_cache=False).logits for m in masks)
    torch.testing.assert_close(zero, ref)  # the 4-D mask is read as the causal mask it is
    assert (biased - zero).abs().max() > 1e-2  # and its bias is not ignored
