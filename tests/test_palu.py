"""PALU (Prefix-Aware Localized Unlearning): prefix selection, the local-entropy term and the full loss."""

from __future__ import annotations

import copy

import pytest
import torch

from unpact.errors import InputError
from unpact.unlearn.methods import LossContext, TokBatch, nll
from unpact.unlearn.palu import (
    PALU_DEFAULTS,
    palu_forget_term,
    palu_kl_term,
    palu_loss,
    palu_method,
    prefix_mask,
)


def _mask(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row] for row in rows])


# ---------------------------------------------------------------- prefix_mask


SENS = _mask(["0111011000", "1100111100"])  # two runs per row, one run touching the row's start


@pytest.mark.parametrize(
    ("n", "want"),
    [
        (1, ["0100010000", "1000100000"]),
        (2, ["0110011000", "1100110000"]),
        (3, ["0111011000", "1100111000"]),
        (-1, ["0111011000", "1100111100"]),
    ],
)
def test_prefix_mask_keeps_first_n_of_each_run(n: int, want: list[str]) -> None:
    assert torch.equal(prefix_mask(SENS, n), _mask(want))


def test_prefix_mask_empty_and_full_rows() -> None:
    assert not prefix_mask(_mask(["0000"]), 1).any()
    assert torch.equal(prefix_mask(_mask(["1111"]), 2), _mask(["1100"]))


@pytest.mark.parametrize("n", [0, -2, 1.0, True, "1"])
def test_prefix_mask_rejects_bad_n(n: object) -> None:
    with pytest.raises(InputError, match="prefix_tokens"):
        prefix_mask(SENS, n)  # type: ignore[arg-type]


# ---------------------------------------------------------------- palu_forget_term

Z = torch.tensor([3.0, 1.0, 0.0, -1.0, 2.0])  # mean 1; descending order: 0, 4, 1, 2, 3


def _one(z: torch.Tensor) -> torch.Tensor:
    return z.view(1, 1, -1)


ONE = torch.ones(1, 1, dtype=torch.bool)


def test_k1_is_positive_on_non_uniform_logits() -> None:
    # top-1 of the reference (= the model here) is index 0: (3 - 1)^2 = 4
    got = palu_forget_term(_one(Z), _one(Z), ONE, 1)
    assert got.item() > 0
    assert got.item() == pytest.approx(4.0)


def test_k3_exact_value() -> None:
    # indices 0, 4, 1: ((3-1)^2 + (2-1)^2 + (1-1)^2) / 3
    assert palu_forget_term(_one(Z), _one(Z), ONE, 3).item() == pytest.approx(5.0 / 3.0)


def test_indices_come_from_the_reference() -> None:
    ref = torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0])  # its top-1 is index 2: (0 - 1)^2 = 1
    assert palu_forget_term(_one(Z), _one(ref), ONE, 1).item() == pytest.approx(1.0)


def test_k_above_vocab_clamps_to_the_logit_variance() -> None:
    var = ((Z - Z.mean()) ** 2).mean().item()  # (4 + 0 + 1 + 4 + 1) / 5 = 2
    assert palu_forget_term(_one(Z), _one(Z), ONE, 50).item() == pytest.approx(var) == pytest.approx(2.0)


def test_zero_on_flat_logits_and_without_targets() -> None:
    flat = torch.full((1, 1, 5), 0.7)
    for k in (1, 3, 5):
        assert palu_forget_term(flat, _one(Z), ONE, k).item() == pytest.approx(0.0, abs=1e-12)
    assert palu_forget_term(_one(Z), _one(Z), ~ONE, 1).item() == 0.0


def test_mean_over_targeted_positions_only() -> None:
    logits = torch.stack([Z, 2 * Z, 100 * Z]).view(1, 3, 5)  # k=1 values 4, 16, (ignored)
    mask = torch.tensor([[True, True, False]])
    assert palu_forget_term(logits, logits, mask, 1).item() == pytest.approx(10.0)


def test_forget_term_rejects_bad_k_and_shapes() -> None:
    for k in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="top_k"):
            palu_forget_term(_one(Z), _one(Z), ONE, k)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="shapes"):
        palu_forget_term(_one(Z), _one(Z), torch.ones(1, 2, dtype=torch.bool), 1)


def test_gradient_flows_through_the_vocabulary_mean() -> None:
    # as in the authors' code the mean is not detached: dL/dz_j = 2 (z_0 - zbar) (1[j = 0] - 1/V) for k = 1
    z = _one(Z).clone().requires_grad_(True)
    palu_forget_term(z, _one(Z), ONE, 1).backward()
    want = 2 * (3.0 - 1.0) * (torch.eye(5)[0] - 1 / 5)
    assert torch.allclose(z.grad.view(-1), want)


def _topk_entropy(z: torch.Tensor, idx: torch.Tensor) -> float:
    p = torch.softmax(z[idx], -1)
    return float(-(p * p.log()).sum())


@pytest.mark.parametrize("k", [1, 3])
def test_sgd_step_lowers_term_and_flattens(k: int) -> None:
    z = _one(Z).clone().requires_grad_(True)
    ref = _one(Z)
    before = palu_forget_term(z, ref, ONE, k)
    before.backward()
    with torch.no_grad():
        z2 = z - 0.1 * z.grad
    after = palu_forget_term(z2, ref, ONE, k)
    assert after.item() < before.item()
    idx = ref.view(-1).topk(k).indices
    if k > 1:  # entropy of the top-k part rises
        assert _topk_entropy(z2.view(-1), idx) > _topk_entropy(Z, idx)
    # the full next-token distribution flattens too, and the top token loses mass
    p0, p1 = torch.softmax(Z, -1), torch.softmax(z2.view(-1), -1)
    assert float(-(p1 * p1.log()).sum()) > float(-(p0 * p0.log()).sum())
    assert p1[0] < p0[0]


# ---------------------------------------------------------------- palu_loss on a tiny model


@pytest.fixture
def setup():
    from unpact.data import Example, encode_batch, fill_id
    from unpact.models import load_model
    from unpact.testing import tiny_model

    model, tok = tiny_model("gpt2")
    sub = load_model(model, tok, name="tiny-gpt2")
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.requires_grad_(False)
    with torch.no_grad():  # the trained copy has drifted a little, so the KL is nonzero
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    model.eval()  # no dropout: the hand computations must see the same logits (gradients still flow)

    def batch(pairs: list[tuple[str, str]]) -> TokBatch:
        ex = [Example(f"e{i}", q, a) for i, (q, a) in enumerate(pairs)]
        b = encode_batch(tok, ex, fmt=sub.prompt_format, fill=fill_id(tok))
        return TokBatch(b.input_ids, b.attention_mask, b.answer_mask()[:, :-1])

    f = batch([("Where was Ada Lovelace born?", "She was born in London in 1815."), ("Capital of France?", "Paris.")])
    r = batch([("Who wrote the book?", "The author wrote it near the river.")])
    return model, ref, sub, f, r


def _ctx(model, ref, sub, **hp) -> LossContext:
    return LossContext(model=model, ref=ref, hparams={**PALU_DEFAULTS, **hp}, subject=sub)


def _logits(m, b: TokBatch) -> torch.Tensor:
    return m(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1].float()


def _hand_forget(z: torch.Tensor, zr: torch.Tensor, mask: torch.Tensor, k: int) -> float:
    vals = []
    for b, t in mask.nonzero().tolist():
        row, order = z[b, t].tolist(), sorted(range(z.shape[-1]), key=lambda i: -zr[b, t, i].item())[:k]
        mean = sum(row) / len(row)
        vals.append(sum((row[i] - mean) ** 2 for i in order) / k)
    return sum(vals) / len(vals)


@pytest.mark.parametrize(("k", "n"), [(1, -1), (3, 2)])
def test_loss_without_weights_is_the_forget_term_by_hand(setup, k: int, n: int) -> None:
    model, ref, sub, f, r = setup
    loss = palu_loss(_ctx(model, ref, sub, top_k=k, prefix_tokens=n, kl_weight=0.0, retain_weight=0.0), f, r)
    with torch.no_grad():
        z, zr = _logits(model, f), _logits(ref, f)
    want = _hand_forget(z, zr, prefix_mask(f.answer_mask, n), k)
    assert torch.isfinite(loss) and loss.item() > 0
    assert loss.item() == pytest.approx(want, rel=1e-5)


def test_full_loss_adds_kl_on_non_sensitive_answer_tokens_and_retain_nll(setup) -> None:
    model, ref, sub, f, r = setup
    sens = torch.zeros_like(f.answer_mask)
    first = f.answer_mask[0].nonzero().view(-1)
    sens[0, first[2:5]] = True  # one sensitive span inside row 0's answer; row 1 has none
    fs = TokBatch(f.input_ids, f.attention_mask, f.answer_mask, sens)
    loss = palu_loss(_ctx(model, ref, sub, top_k=2, prefix_tokens=1, kl_weight=0.5, retain_weight=2.0), fs, r)
    with torch.no_grad():
        z, zr = _logits(model, f), _logits(ref, f)
        other = f.answer_mask & ~sens
        lp, lr = torch.log_softmax(z, -1), torch.log_softmax(zr, -1)
        kl = (lp.exp() * (lp - lr)).sum(-1)[other].mean().item()
        retain = nll(model, r).item()
    target = torch.zeros_like(sens)
    target[0, first[2]] = True
    want = _hand_forget(z, zr, target, 2) + 0.5 * kl + 2.0 * retain
    assert kl > 0
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert palu_kl_term(z, zr, other).item() == pytest.approx(kl, rel=1e-6)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None for p in ref.parameters())


def test_whole_answer_sensitive_has_no_kl_term(setup) -> None:
    model, ref, sub, f, r = setup
    a = palu_loss(_ctx(model, ref, sub, kl_weight=0.0, retain_weight=0.0), f, r)
    b = palu_loss(_ctx(model, ref, sub, kl_weight=5.0, retain_weight=0.0), f, r)
    assert a.item() == pytest.approx(b.item())


def test_loss_needs_retain_and_valid_hparams(setup) -> None:
    model, ref, sub, f, r = setup
    with pytest.raises(InputError, match="retain"):
        palu_loss(_ctx(model, ref, sub), f, None)
    for bad in ({"top_k": 0}, {"top_k": 2.5}, {"prefix_tokens": 0}, {"prefix_tokens": -3}, {"kl_weight": -1.0}):
        with pytest.raises(InputError):
            palu_loss(_ctx(model, ref, sub, **bad), f, r)
    huge = palu_loss(_ctx(model, ref, sub, top_k=10**9, kl_weight=0.0, retain_weight=0.0), f, r)
    assert torch.isfinite(huge)  # clamped to the vocabulary


def test_palu_method() -> None:
    m = palu_method()
    assert (m.name, m.loss, m.uses_retain) == ("palu", palu_loss, True)
    assert m.defaults == PALU_DEFAULTS == {"top_k": 1, "prefix_tokens": -1, "kl_weight": 1.0, "retain_weight": 1.0}
    assert m.defaults is not PALU_DEFAULTS
