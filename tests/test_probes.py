"""Per-layer probes: what they decode, their controls, and that the model is left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unpact.data import Example
from unpact.errors import InputError
from unpact.hooks import count_hooks
from unpact.models import ModelState
from unpact.representations import ProbeResult, candidate_sets, first_tokens, fit_probes, last_token_states


@pytest.fixture(scope="module")
def probed(micro_world):
    """``(base result, retain-only result, masked-base result)`` on the micro world."""
    from unpact.known_truth import mask_answers

    base, ro = micro_world.load_base(), micro_world.load_retain_only()
    before = ModelState.capture(base.model, with_weights=True)
    hooks = count_hooks(base.model)
    out = tuple(fit_probes(s, micro_world.retain, micro_world.forget) for s in (base, ro))
    assert ModelState.capture(base.model, with_weights=True) == before and count_hooks(base.model) == hooks
    masked = fit_probes(mask_answers(base, micro_world.forget), micro_world.retain, micro_world.forget)
    return (*out, masked)


def test_base_decodes_the_forget_people_above_the_retain_only_floor(probed) -> None:
    base, ro, _ = probed
    n_layers = len(base.layer_names)
    assert base.forget_rank.shape == (n_layers, len(base.forget_ids)) == ro.forget_rank.shape
    # the base model knows the forget facts; the retain-only model never saw them: a probe trained on the
    # same retain people reads them from the base's last layer more often (micro world: 0.66 vs 0.36; its two
    # forget people make the chosen layers' figures noisy: 0.52 vs 0.36)
    assert base.accuracy[-1] > ro.accuracy[-1] + 0.2, (base.accuracy, ro.accuracy)
    assert base.hits.mean() > ro.hits.mean()
    # selectivity: labels shuffled, the same probe decodes much less (0.32)
    assert base.accuracy[-1] > base.shuffled_accuracy[-1] + 0.2
    # chance is one over the attribute's distinct first tokens
    assert 0 < base.chance < 1 and (base.n_candidates >= 1).all()


def test_the_probe_reads_through_an_output_mask(probed) -> None:
    base, _, masked = probed
    # the masked model's states are the base's: the probe, which never reads the output logits, decodes the same
    np.testing.assert_array_equal(masked.forget_rank, base.forget_rank)
    assert masked.layer == base.layer


def test_result_saves_and_loads(probed, tmp_path) -> None:
    base = probed[0]
    base.save(tmp_path / "p.npz")
    assert ProbeResult.load(tmp_path / "p.npz") == base
    assert base.provenance is not None and base.provenance.method == "probe"


def test_states_shape_and_padding_independence(toy_base, micro_world) -> None:
    items = micro_world.forget[:5]
    one = last_token_states(toy_base, items, batch_size=1)
    batched = last_token_states(toy_base, items, batch_size=5)
    assert one.shape == (5, toy_base.n_layers + 1, toy_base.d_model)
    torch.testing.assert_close(one, batched, atol=1e-4, rtol=1e-4)  # right padding is never read


def test_candidates_are_the_attributes_first_tokens(toy_base, micro_world) -> None:
    items = micro_world.retain[:200]
    first = first_tokens(toy_base, items)
    cands = candidate_sets(items, first)
    for e in items:
        assert first[e.answer] in cands[e.meta["attribute"]]
        assert first[e.answer] == int(toy_base.encode(e).answer_ids[0])


def test_bad_input_is_refused(toy_base, micro_world) -> None:
    one_person = [e for e in micro_world.retain if e.subject == micro_world.retain[0].subject]
    with pytest.raises(InputError, match="fewer than two subjects"):
        fit_probes(toy_base, one_person, micro_world.forget[:4])
    with pytest.raises(InputError, match="no test item"):
        fit_probes(toy_base, micro_world.retain[:50], [])


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_runs_on_tiny_models_of_several_architectures(arch) -> None:
    from unpact.testing import tiny_subject

    s = tiny_subject(arch)
    train = [Example(f"t{i}", f"Where does person {i} live?", f"city {i % 3}", subject=f"p{i}") for i in range(12)]
    test = [Example(f"f{i}", f"Where does person {i} live?", f"city {i % 3}", subject=f"q{i}") for i in range(4)]
    before = ModelState.capture(s.model, with_weights=True)
    r = fit_probes(s, train, test)
    assert ModelState.capture(s.model, with_weights=True) == before
    assert r.forget_rank.shape == (s.n_layers + 1, 4) and 0 <= r.layer <= s.n_layers


def test_subject_token_probe_reads_the_last_token_of_the_name(micro_world, toy_base) -> None:
    from unpact.representations.probes import subject_token_index

    e = micro_world.forget[0]
    i = subject_token_index(toy_base, e)
    read = toy_base.tokenizer.decode(toy_base.encode(e).prompt_ids[: i + 1])
    assert read.rstrip().endswith(e.subject.split()[-1]), (read, e.subject)
    caps = Example("c", e.prompt.replace(e.subject, e.subject.upper()), e.answer, subject=e.subject)
    assert subject_token_index(toy_base, caps) >= 0  # the name in capitals is found too
    states = last_token_states(toy_base, [e, micro_world.forget[1]], position="subject")
    assert states.shape == (2, toy_base.n_layers + 1, toy_base.d_model)
    assert not torch.allclose(states[0], last_token_states(toy_base, [e])[0])
    r = fit_probes(toy_base, micro_world.retain[:60], micro_world.forget[:6], position="subject")
    assert r.provenance.args["position"] == "subject" and r.forget_rank.shape[1] == 6
    with pytest.raises(InputError, match="does not mention its subject"):
        last_token_states(toy_base, [Example("x", "Where was he born?", "Paris", subject="Ada")], position="subject")
    with pytest.raises(InputError, match="unknown position"):
        last_token_states(toy_base, [e], position="first")
