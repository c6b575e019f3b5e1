"""The unlearning direction: a shift put in by construction is found and undone; models are left as they were."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unpact.errors import InputError
from unpact.evaluate import evaluate
from unpact.hooks import count_hooks
from unpact.models import ModelState, load_model
from unpact.representations import DirectionResult, unlearning_direction
from unpact.weights import split_halves


def _shifted(base, scale: float = 40.0, seed: int = 12345):
    """The base model with a constant vector of norm ``scale`` added to block 0's output (its MLP's output bias).

    The seed differs from the random control's (0): with the same seed the "random" direction would be the shift.
    """
    model = copy.deepcopy(base.model)
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(base.d_model, generator=gen)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_proj.bias.add_(c / c.norm() * scale)
    return load_model(model, base.tokenizer, name="shifted", prompt_format=base.prompt_format)


@pytest.fixture(scope="module")
def shifted_result(micro_world, toy_base):
    shifted = _shifted(toy_base)
    a, b = split_halves(micro_world.forget, seed=0)
    before = [ModelState.capture(m.model, with_weights=True) for m in (toy_base, shifted)]
    hooks = [count_hooks(m.model) for m in (toy_base, shifted)]
    r = unlearning_direction(toy_base, shifted, a, micro_world.retain[: len(a)], b, max_new_tokens=8)
    assert [ModelState.capture(m.model, with_weights=True) for m in (toy_base, shifted)] == before
    assert [count_hooks(m.model) for m in (toy_base, shifted)] == hooks
    return toy_base, shifted, b, r


def test_a_constructed_shift_is_found_and_ablating_it_restores_the_answers(shifted_result) -> None:
    base, shifted, b, r = shifted_result
    base_acc = float(np.mean([x.lenient for x in evaluate(base, b, max_new_tokens=8).records]))
    # the shift breaks the model; it lies along one direction at block 0's output, so nearly all of the
    # activation change there is along the estimated direction
    assert r.accuracy("none") < base_acc - 0.3, (r.accuracy("none"), base_acc)
    assert r.share_explained[0] > 0.9 and r.shift_norm[0] > 30
    # projecting it out restores most answers; a random direction of the same kind does not
    assert r.accuracy("ablate/forget") > base_acc - 0.2
    assert r.accuracy("ablate/random") < r.accuracy("ablate/forget") - 0.3
    # the shift is the same on retain prompts: the retain direction undoes it as well (why it is the control)
    assert r.accuracy("ablate/retain") > base_acc - 0.2
    # adding the mean shift back (block 0's increment at its output, the later blocks' own increments at theirs)
    # restores the answers too; a random shift of the same sizes does not
    assert r.accuracy("add/forget") > base_acc - 0.2
    assert r.accuracy("add/random") < r.accuracy("add/forget") - 0.3


def test_none_is_the_unchanged_model_and_the_result_saves(shifted_result, tmp_path) -> None:
    _, shifted, b, r = shifted_result
    plain = np.array([x.lenient for x in evaluate(shifted, b, max_new_tokens=8).records])
    np.testing.assert_array_equal(r.hits("none"), plain)  # the hooks were gone outside the interventions
    assert r.keys[0] == "none" and len(r.keys) == 7 and r.correct.shape == (7, len(b))
    assert ((0 <= r.share_explained) & (r.share_explained <= 1 + 1e-6)).all()
    r.save(tmp_path / "d.npz")
    assert DirectionResult.load(tmp_path / "d.npz") == r
    with pytest.raises(InputError, match="no condition"):
        r.hits("ablate/sideways")


def test_bad_input_is_refused(micro_world, toy_base) -> None:
    a, b = split_halves(micro_world.forget, seed=0)
    with pytest.raises(InputError, match="in both the estimate and the scored items"):
        unlearning_direction(toy_base, toy_base, a, micro_world.retain[:4], a[:2])
    with pytest.raises(InputError, match="no items items given"):
        unlearning_direction(toy_base, toy_base, a, micro_world.retain[:4], [])
    deeper = SimpleNamespace(n_layers=toy_base.n_layers + 1, d_model=toy_base.d_model, name="deeper")
    with pytest.raises(InputError, match="layers of width"):
        unlearning_direction(toy_base, deeper, a, micro_world.retain[:4], b[:2])
