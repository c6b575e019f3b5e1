"""Attacks from the circuit and lens diffs: a lock put in by construction is located and undone; models unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unpact.attacks.tracer_diffs import DiffAttackResult, diff_attacks, head_shares
from unpact.errors import InputError
from unpact.evaluate import evaluate
from unpact.hooks import count_hooks
from unpact.models import ModelState, load_model
from unpact.weights import split_halves


def _forget_rows(base, forget, model) -> dict[str, list[bool]]:
    """Flags, per row of every forward pass of ``model``, whether its prompt holds a forget question (a pre-hook)."""
    needles = []
    for e in forget:  # every forget question's tokens, exactly as the model reads them
        enc = base.encode(e)
        needles.append(enc.prompt_ids[enc.prompt_span[0] : enc.prompt_span[1]].tolist())
    rows: dict[str, list[bool]] = {}

    def has(row: list[int], n: list[int]) -> bool:
        return any(row[i : i + len(n)] == n for i in range(len(row) - len(n) + 1))

    def pre(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and (ids.shape[1] > 1 or len(rows.get("r", [])) != ids.shape[0]):
            rows["r"] = [any(has(r, n) for n in needles) for r in ids.tolist()]

    model.register_forward_pre_hook(pre, with_kwargs=True)
    return rows


def _locked(base, forget, scale: float = 40.0, seed: int = 7, block: int = 0):
    """The base model with a constant vector of norm ``scale`` added to a block's output, only in rows that ask a
    forget question: the answer is there up to that block and lost after it, for forget people only."""
    model = copy.deepcopy(base.model)
    rows = _forget_rows(base, forget, model)
    c = torch.randn(base.d_model, generator=torch.Generator().manual_seed(seed))
    c = c / c.norm() * scale

    def post(module, args, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h + torch.tensor(rows["r"], dtype=h.dtype)[:, None, None] * c.to(h)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    model.transformer.h[block].register_forward_hook(post)
    return load_model(model, base.tokenizer, name="locked", prompt_format=base.prompt_format)


def _damped(base, forget, layer: int, head: int):
    """The base model with one attention head silenced in rows that ask a forget question."""
    model = copy.deepcopy(base.model)
    rows = _forget_rows(base, forget, model)
    d_head = base.d_model // base.n_heads

    def pre(module, args):
        x = args[0].clone()
        keep = 1.0 - torch.tensor(rows["r"], dtype=x.dtype)[:, None, None]
        x[..., head * d_head : (head + 1) * d_head] *= keep
        return (x, *args[1:])

    model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(pre)
    return load_model(model, base.tokenizer, name="damped", prompt_format=base.prompt_format)


@pytest.fixture(scope="module")
def locked_result(micro_world, toy_base):
    locked = _locked(toy_base, micro_world.forget)
    a, b = split_halves(micro_world.forget, seed=0)
    retain = micro_world.retain[: len(a)]
    before = [ModelState.capture(m.model, with_weights=True) for m in (toy_base, locked)]
    hooks = [count_hooks(m.model) for m in (toy_base, locked)]
    r = diff_attacks(toy_base, locked, a, retain, b, max_new_tokens=8)
    assert [ModelState.capture(m.model, with_weights=True) for m in (toy_base, locked)] == before
    assert [count_hooks(m.model) for m in (toy_base, locked)] == hooks
    return toy_base, locked, b, r


def test_the_lens_diff_finds_the_layer_where_the_answer_is_lost_and_undoes_the_lock(locked_result) -> None:
    base, _, b, r = locked_result
    base_acc = float(np.mean([x.lenient for x in evaluate(base, b, max_new_tokens=8).records]))
    assert r.accuracy("none") < base_acc - 0.3, (r.accuracy("none"), base_acc)
    # the lock is added at block 0's output: the gap to the base opens at lens row 1 (after block 0)
    assert r.layer == 1 and r.rank_gap[1] - r.rank_gap[0] > 1.0, r.rank_gap
    # the model's change in the forget-vs-retain contrast (minus the base's) is the lock itself: subtracting it there
    # gives the base's answers back
    assert r.accuracy("lens") >= base_acc - 0.05, (r.accuracy("lens"), base_acc)
    assert r.keys == ["none", "circuit", "lens"] and len(r.heads) <= 3


def test_a_lock_after_a_later_block_is_located_there(micro_world, toy_base) -> None:
    locked = _locked(toy_base, micro_world.forget, block=1)
    a, b = split_halves(micro_world.forget, seed=0)
    r = diff_attacks(toy_base, locked, a, micro_world.retain[: len(a)], b, max_new_tokens=8)
    assert r.layer == 2, r.rank_gap  # after block 1
    assert r.accuracy("lens") > r.accuracy("none")


def test_head_shares_sum_to_one_and_the_result_saves(locked_result, micro_world, tmp_path) -> None:
    base, _, _, r = locked_result
    shares = head_shares(base, micro_world.forget[:3])
    assert len(shares) == base.n_layers * base.n_heads and sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    r.save(tmp_path / "d.npz")
    assert DiffAttackResult.load(tmp_path / "d.npz") == r
    with pytest.raises(InputError, match="no condition"):
        r.hits("soft")


def test_halves_sharing_a_subject_are_refused(micro_world, toy_base) -> None:
    a, _ = split_halves(micro_world.forget, seed=0)
    with pytest.raises(InputError, match="subject"):
        diff_attacks(toy_base, toy_base, a, micro_world.retain[:4], a[:2])


def test_the_circuit_diff_picks_the_head_silenced_on_forget_prompts(micro_world, toy_base) -> None:
    a, b = split_halves(micro_world.forget, seed=0)
    shares = head_shares(toy_base, a)
    ranked = sorted(shares, key=lambda h: -shares[h])
    third = ranked[2]  # a head below the top two: picking it first needs the drop, not the base share
    layer, head = (int(x) for x in third[1:].split(".h"))
    damped = _damped(toy_base, micro_world.forget, layer, head)
    r = diff_attacks(toy_base, damped, a, micro_world.retain[: len(a)], b, max_new_tokens=8)
    assert r.heads[0] == third, (r.heads, ranked[:4])
    assert r.share_drop[0] > max(0.0, *r.share_drop[1:])
    # amplifying the chosen heads changes the forward pass
    assert not np.allclose(r.logprob[r.keys.index("circuit")], r.logprob[r.keys.index("none")])


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_runs_on_tiny_models_of_several_architectures(arch) -> None:
    from unpact.data import Example
    from unpact.testing import tiny_subject

    base = tiny_subject(arch)
    other = tiny_subject(arch, seed=1)  # another random model of the same shape, as if unlearned
    a = [Example(f"a{i}", f"Where does person {i} live?", f"city {i % 3}", subject=f"person {i}") for i in range(4)]
    b = [
        Example(f"b{i}", f"Where does person {i + 9} live?", f"city {i % 3}", subject=f"person {i + 9}")
        for i in range(3)
    ]
    retain = [Example(f"r{i}", f"What does person {i + 20} do?", "a job", subject=f"person {i + 20}") for i in range(4)]
    states = [ModelState.capture(m.model, with_weights=True) for m in (base, other)]
    r = diff_attacks(base, other, a, retain, b, max_new_tokens=3, batch_size=4)
    assert [ModelState.capture(m.model, with_weights=True) for m in (base, other)] == states
    assert r.keys[0] == "none" and "lens" in r.keys and r.correct.shape == (len(r.keys), 3)
    assert 1 <= r.layer <= base.n_layers and np.isfinite(r.logprob).all()
