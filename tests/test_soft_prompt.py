"""The soft-prompt attack: exact plumbing (real-token embeddings = those tokens typed), training, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unpact.attacks.soft_prompt import SoftPromptResult, fit_soft_prompt, score_soft_prompt, soft_prompt_attack
from unpact.data import Example, fill_id
from unpact.errors import InputError
from unpact.evaluate import evaluate
from unpact.forward import Intervention, decode, prompt_pass
from unpact.hooks import count_hooks
from unpact.metrics import lenient_match
from unpact.models import ModelState
from unpact.weights import split_halves


def test_real_token_embeddings_as_a_soft_prompt_equal_those_tokens_in_the_prompt(micro_world, toy_base) -> None:
    # the soft prompt's vectors replace placeholder embeddings before the question: with the embeddings of real
    # tokens, scores and generations must be those of the prompt with the tokens written in (left-padded batch,
    # rows of different lengths, KV-cached decoding)
    s = toy_base
    items = micro_world.forget[:5] + micro_world.retain[:4]
    words = torch.tensor(s.tokenizer(" please answer", add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        embeds = s.embed(words[None].to(s.device))[0].float()
    hits, lps = score_soft_prompt(s, items, embeds, max_new_tokens=6, batch_size=4)
    encs = [s.encode(e) for e in items]
    typed = [torch.cat([e.prompt_ids[: e.prompt_span[0]], words, e.prompt_ids[e.prompt_span[0] :]]) for e in encs]
    first = prompt_pass(s, typed, [e.answer_ids for e in encs], keep_cache=True, fill=fill_id(s.tokenizer))
    want_lp = np.array([float(lp.mean()) for lp in first.answer_logprobs])
    new = decode(s, first, max_new_tokens=6)
    want_hits = [
        lenient_match(s.tokenizer.decode(r, skip_special_tokens=True).strip(), e.answer) for r, e in zip(new, items)
    ]
    np.testing.assert_allclose(lps, want_lp, atol=1e-4)
    assert hits.tolist() == want_hits
    # and the soft prompt is not a no-op: other vectors give other scores
    _, other = score_soft_prompt(s, items, embeds * 3.0, max_new_tokens=6, batch_size=4)
    assert not np.allclose(other, lps, atol=1e-3)


def test_fit_lowers_the_loss_keeps_the_best_check_and_leaves_the_model_unchanged(micro_world) -> None:
    ro = micro_world.load_retain_only()
    people = sorted({e.subject for e in micro_world.retain})[:10]  # ten subjects: two held out for validation
    train = [e for e in micro_world.retain if e.subject in people]
    before, hooks = ModelState.capture(ro.model, with_weights=True), count_hooks(ro.model)
    fit = fit_soft_prompt(ro, train, n_tokens=4, steps=20, batch_size=8)
    assert ModelState.capture(ro.model, with_weights=True) == before and count_hooks(ro.model) == hooks
    assert fit.embeds.shape == (4, ro.d_model) and fit.losses.shape == (20,)
    assert fit.losses[-5:].mean() < fit.losses[:3].mean()
    # eleven validation checks (start, every second step); the kept step is the best check's
    assert len(fit.val_losses) == 11 and fit.best_step == 2 * int(np.argmin(fit.val_losses))
    none = fit_soft_prompt(ro, train, n_tokens=4, steps=3, batch_size=8, val_share=0)
    assert none.best_step == 3 and none.val_losses.size == 0


def test_attack_result_saves_loads_and_checks_its_halves(micro_world, toy_base, tmp_path) -> None:
    a, b = split_halves(micro_world.forget, seed=0)
    r = soft_prompt_attack(toy_base, a, b, n_tokens=2, steps=4, max_new_tokens=6)
    assert r.keys == ["none", "soft"] and r.correct.shape == (2, len(b)) and r.n_train == len(a)
    plain = np.array([x.lenient for x in evaluate(toy_base, b, max_new_tokens=6).records])
    assert (r.hits("none") == plain).all()
    r.save(tmp_path / "sp.npz")
    assert SoftPromptResult.load(tmp_path / "sp.npz") == r
    with pytest.raises(InputError, match="no condition"):
        r.hits("ablate")
    with pytest.raises(InputError, match="subject"):
        soft_prompt_attack(toy_base, a, a[:2], steps=1)
    with pytest.raises(InputError, match="lr"):
        fit_soft_prompt(toy_base, a, lr=0.0)
    with pytest.raises(InputError, match="no training items"):
        fit_soft_prompt(toy_base, [])


def test_intervention_embeds_need_one_key_position_per_vector(toy_base) -> None:
    ids = [toy_base.encode(e).prompt_ids for e in [Example("x", "Where does Ada live?", "Paris")]]
    iv = Intervention(((0, 1, 2),), embeds=torch.zeros(2, toy_base.d_model))
    with pytest.raises(InputError, match="one key position per vector"):
        prompt_pass(toy_base, ids, intervention=iv)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_runs_on_tiny_models_of_several_architectures(arch) -> None:
    from unpact.testing import tiny_subject

    s = tiny_subject(arch)
    train = [Example(f"t{i}", f"Where does person {i} live?", f"city {i % 3}", subject=f"p{i}") for i in range(8)]
    test = [Example(f"f{i}", f"Where does person {i} live?", f"city {i % 3}", subject=f"q{i}") for i in range(3)]
    before = ModelState.capture(s.model, with_weights=True)
    r = soft_prompt_attack(s, train, test, n_tokens=2, steps=3, max_new_tokens=3, batch_size=4)
    assert ModelState.capture(s.model, with_weights=True) == before
    assert r.correct.shape == (2, 3) and np.isfinite(r.logprob).all() and np.isfinite(r.losses).all()
