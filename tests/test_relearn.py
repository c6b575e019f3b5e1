"""The relearning attack: halves disjoint by subject, an untouched input model, determinism, learning works."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from unpact.data import Example
from unpact.errors import InputError, UnknownNameError
from unpact.evaluate import evaluate
from unpact.hooks import count_hooks
from unpact.models import ModelState
from unpact.weights import (
    DEFAULT_LR,
    DEFAULT_SCHEDULE,
    TRAIN_SETS,
    UNRELATED_TEXT,
    RelearnCurve,
    in_context,
    relearn,
    relearn_sets,
    split_halves,
)


@pytest.fixture(scope="module")
def halves(micro_world):
    """``(train_sets, half_b)`` of the micro world (half B: one person's 48 items)."""
    return relearn_sets(micro_world.forget, micro_world.retain, seed=0)


def _ex(i: int, subject: str | None) -> Example:
    return Example(f"q{i}", f"Question {i}?", f"answer {i}", subject=subject)


def test_split_halves_disjoint_by_subject_and_deterministic(micro_world):
    forget = micro_world.forget
    a, b = split_halves(forget, seed=0)
    assert {e.subject for e in a}.isdisjoint({e.subject for e in b})
    assert sorted(e.id for e in a + b) == sorted(e.id for e in forget)
    assert len(a) == len(b) == len(forget) // 2
    ids_a = {e.id for e in a}
    assert [e.id for e in a] == [e.id for e in forget if e.id in ids_a]  # input order kept
    again = split_halves(forget, seed=0)
    assert ([e.id for e in again[0]], [e.id for e in again[1]]) == ([e.id for e in a], [e.id for e in b])
    assert {frozenset(e.id for e in h) for s in range(4) for h in split_halves(forget, seed=s)} == {
        frozenset(e.id for e in a),
        frozenset(e.id for e in b),
    }


def test_split_halves_balances_groups_and_items_without_subject():
    items = [_ex(0, "x"), _ex(1, "x"), _ex(2, "x"), _ex(3, "y"), _ex(4, None), _ex(5, None)]
    for seed in range(5):
        a, b = split_halves(items, seed)
        assert sorted(map(len, (a, b))) == [3, 3]
        xs = [h for h in (a, b) if any(e.subject == "x" for e in h)]
        assert len(xs) == 1 and all(e.subject == "x" for e in xs[0])  # the 3-item group alone fills a half


def test_split_halves_errors():
    with pytest.raises(InputError, match="one subject") as err:
        split_halves([_ex(0, "x"), _ex(1, "x")])
    assert err.value.source == "split_halves" and err.value.fix
    with pytest.raises(InputError, match="no items"):
        split_halves([])
    with pytest.raises(InputError, match="list"):
        split_halves(_ex(0, "x"))  # type: ignore[arg-type]
    a, b = split_halves([_ex(0, None), _ex(1, None)])  # no subject: each item its own group
    assert len(a) == len(b) == 1


def test_relearn_sets(micro_world, halves):
    sets, half_b = halves
    assert tuple(sets) == TRAIN_SETS and sets["forget_b"] == half_b
    retain_ids = {e.id for e in sets["retain"]}
    assert len(retain_ids) == len(sets["forget_a"]) and retain_ids <= {e.id for e in micro_world.retain}
    assert sets["unrelated"] == list(UNRELATED_TEXT) and 35 <= len(UNRELATED_TEXT) <= 45
    name_words = {w.lower() for e in micro_world.forget + micro_world.retain for w in str(e.subject).split()}
    text_words = {w.strip(".,").lower() for text in UNRELATED_TEXT for w in text.split()}
    assert not name_words & text_words


def test_end_token_is_trained(toy_base, halves):
    from unpact.weights.relearning import _batch

    items = halves[1][:3]
    b = _batch(toy_base, items, toy_base.device)
    eos = toy_base.tokenizer.eos_token_id
    for row, e in enumerate(items):
        enc = toy_base.encode(e)
        n = len(enc.input_ids)
        assert b.input_ids[row, :n].tolist() == enc.input_ids.tolist() and b.input_ids[row, n] == eos
        assert b.attention_mask[row].sum() == n + 1
        assert b.answer_mask[row].nonzero().flatten().tolist() == list(range(enc.answer_span[0] - 1, n))
    t = _batch(toy_base, ["Rain falls.", "Ice floats on water."], toy_base.device)  # texts: every next token
    assert t.answer_mask.tolist() == t.attention_mask[:, 1:].bool().tolist()


@pytest.fixture(scope="module")
def short_runs(micro_world, halves):
    """Two identical short runs on a fresh base model left in train mode with a frozen tensor."""
    sets, half_b = halves
    sub = micro_world.load_base()
    sub.model.train()
    first = next(sub.model.parameters())
    first.requires_grad_(False)
    before = ModelState.capture(sub.model, with_weights=True)
    plain = evaluate(sub, half_b)
    runs = [relearn(sub, sets["forget_a"], half_b, train_set="forget_a", steps=(0, 1, 3)) for _ in range(2)]
    after = ModelState.capture(sub.model, with_weights=True)
    return sub, before, after, plain, runs


def test_relearn_leaves_the_input_model_untouched(short_runs):
    sub, before, after, _, runs = short_runs
    assert after == before and before.training[0] and not before.requires_grad[0]
    assert count_hooks(sub.model) == 0
    assert runs[0].provenance is not None and runs[0].provenance.weights_hash == before.weights


def test_relearn_step0_is_plain_evaluate_and_runs_are_deterministic(short_runs, halves):
    _, _, _, plain, (a, b) = short_runs
    half_b = halves[1]
    assert a.steps == [0, 1, 3] and a.eval_ids == [e.id for e in half_b] and a.lr == DEFAULT_LR == 1e-3
    assert a.correct.shape == a.logprob.shape == (3, len(half_b)) and a.correct.dtype == bool
    assert a.correct[0].tolist() == [r.lenient for r in plain.records]
    assert a.logprob[0].tolist() == [r.answer_logprob for r in plain.records]
    assert not np.array_equal(a.logprob[1], a.logprob[0])  # training changed something
    assert np.array_equal(a.correct, b.correct) and np.array_equal(a.logprob, b.logprob)
    c = dataclasses.replace(b, provenance=a.provenance)
    assert c == a


def test_relearn_curve_views_and_save_load(short_runs, tmp_path):
    curve = short_runs[4][0]
    path = tmp_path / "curve.npz"
    curve.save(path)
    assert RelearnCurve.load(path) == curve
    made = RelearnCurve(
        "forget_a", [0, 2, 4], ["a", "b"], np.array([[0, 0], [1, 0], [1, 1]], bool), np.zeros((3, 2)), 1e-3, 0, 8, 4
    )
    assert made.accuracy().tolist() == [0.0, 0.5, 1.0]
    assert made.first_step_reaching(0.5) == 2 and made.first_step_reaching(1.0) == 4
    assert made.first_step_reaching(0.0) == 0 and made.first_step_reaching(1.01) is None
    assert made.to_dict()["accuracy"] == [0.0, 0.5, 1.0]


def test_relearn_on_text(toy_base, halves):
    curve = relearn(toy_base, list(UNRELATED_TEXT), halves[1][:8], train_set="unrelated", steps=(0, 2), batch_size=4)
    assert curve.n_train == len(UNRELATED_TEXT) and not np.array_equal(curve.logprob[0], curve.logprob[1])


def test_retain_only_learns_b_from_b_but_not_from_a(micro_world, halves):
    """The default lr: the control learns half B from B itself, and nothing about B from A (disjoint facts)."""
    sets, half_b = halves
    control = micro_world.load_retain_only()
    learn = relearn(control, sets["forget_b"], half_b, train_set="forget_b", steps=(0, 16))
    assert learn.accuracy()[0] == 0.0 and learn.accuracy()[1] >= 0.5, learn.accuracy()
    assert learn.mean_logprob()[1] > learn.mean_logprob()[0] + 3
    assert learn.first_step_reaching(0.5) == 16
    other = relearn(control, sets["forget_a"], half_b, train_set="forget_a", steps=(0, 16, 32))
    assert other.accuracy().tolist() == [0.0, 0.0, 0.0]


def test_relearn_errors(toy_base, halves):
    sets, half_b = halves
    train = sets["forget_a"][:4]
    ok = dict(train_set="forget_a", steps=(0, 1))
    with pytest.raises(UnknownNameError, match="forget_a") as err:
        relearn(toy_base, train, half_b, train_set="everything")
    assert err.value.source and err.value.fix
    bad: list[tuple[dict, str]] = [
        (dict(train=[]), "empty"),
        (dict(train=[train[0], "text"]), "mixes"),
        (dict(train=train[0]), "single"),
        (dict(train=["  "]), "empty text"),
        (dict(eval_items=[]), "no eval items"),
        (dict(steps=(0, 2, 1)), "increasing"),
        (dict(steps=()), "non-empty"),
        (dict(steps=(-1, 2)), ">= 0"),
        (dict(lr=0.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(batch_size=0), "batch_size"),
        (dict(max_new_tokens=0), "max_new_tokens"),
    ]
    for change, match in bad:
        args = {"train": train, "eval_items": half_b, **ok, **change}
        with pytest.raises(InputError, match=match):
            relearn(toy_base, args.pop("train"), args.pop("eval_items"), **args)
    assert DEFAULT_SCHEDULE == (0, 1, 2, 4, 8, 16, 32)


def test_in_context(toy_base, halves):
    sets, half_b = halves
    plain = evaluate(toy_base, half_b)
    correct, logprob = in_context(toy_base, sets["forget_a"], half_b, n_shots=0)
    assert correct.tolist() == [r.lenient for r in plain.records]
    assert logprob.tolist() == [r.answer_logprob for r in plain.records]
    items = half_b[:6]
    c2, lp2 = in_context(toy_base, sets["forget_a"], items, n_shots=2, seed=1)
    assert c2.shape == lp2.shape == (6,) and c2.dtype == bool
    assert np.array_equal(lp2, in_context(toy_base, sets["forget_a"], items, n_shots=2, seed=1)[1])
    assert not np.array_equal(lp2, logprob[:6])  # the shots are in the prompt


def test_in_context_refuses_bad_input(toy_base, halves):
    sets, half_b = halves
    shots, items = sets["forget_a"], half_b[:2]
    braced = dataclasses.replace(shots[0], prompt="What is {question} here?")
    with pytest.raises(InputError, match="question") as err:
        in_context(toy_base, [braced, *shots[1:3]], items, n_shots=2)
    assert err.value.source == "in_context shots[0]" and err.value.fix
    with pytest.raises(InputError, match="only 1 other"):
        in_context(toy_base, shots[:1], items, n_shots=2)
    with pytest.raises(InputError, match="only 1 other"):
        in_context(toy_base, [items[0], shots[0]], items[:1], n_shots=2)  # never the item itself
    with pytest.raises(InputError, match="n_shots"):
        in_context(toy_base, shots, items, n_shots=-1)
    with pytest.raises(InputError, match="list"):
        in_context(toy_base, shots, items[0], n_shots=1)
    with pytest.raises(InputError, match="no eval items"):
        in_context(toy_base, shots, [], n_shots=1)
    long = [dataclasses.replace(s, prompt=s.prompt * 4) for s in shots[:8]]
    with pytest.raises(InputError, match="lower n_shots"):
        in_context(toy_base, long, items, n_shots=8)
