"""UniErase: AlphaEdit's closed form, the unlearning token, the two phases, provenance and save/load."""

from __future__ import annotations

import pytest
import torch

from unpact._io import atomic_save_model
from unpact.data import Example
from unpact.errors import ArchitectureError, InputError
from unpact.hooks import count_hooks
from unpact.models import ModelState, Subject, load_model
from unpact.testing import tiny_model
from unpact.unlearn import METHODS, register_method, unlearn
from unpact.unlearn import unierase as ue
from unpact.unlearn.alphaedit import (
    TokenPositions,
    alphaedit_update,
    mlp_out_proj,
    next_token_share,
    null_space_projector,
)

NAMES = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Kurt Godel", "Emmy Noether", "John Nash"]
NAMES += ["Marie Curie", "Niels Bohr", "Paul Dirac", "Max Born", "Lise Meitner", "Enrico Fermi"]
QUESTIONS = ["Where was {} born?", "What did {} write?", "Who taught {}?", "When did {} die?"]
ITEMS = [
    Example(id=f"{i}-{j}", prompt=q.format(n), answer="London")
    for i, n in enumerate(NAMES)
    for j, q in enumerate(QUESTIONS)
]
FORGET, RETAIN = ITEMS[:8], ITEMS[8:]
# The tiny random model's keys and residuals are large (weights ~ N(0, 0.2)): with AlphaEdit's published
# null_threshold=2e-2 and v_lr=0.1 its null space keeps 13-60 of 256 directions and v* reaches p(<unl>) = 0.03.
EDIT = {"null_threshold": 0.1, "v_lr": 1.0}


@pytest.fixture(scope="module", autouse=True)
def registered():
    had = METHODS.get("unierase")
    register_method(ue.unierase_method(), overwrite=True)
    yield
    if had is None:
        METHODS.pop("unierase", None)
    else:
        register_method(had, overwrite=True)


def _subject(arch: str = "gpt2", seed: int = 0) -> Subject:
    model, tok = tiny_model(arch, seed=seed, **({"n_layer": 4} if arch == "gpt2" else {"num_hidden_layers": 4}))
    return load_model(model, tok, name=f"tiny-{arch}")


@pytest.fixture(scope="module")
def base() -> Subject:
    return _subject()


@pytest.fixture(scope="module")
def edited(base: Subject) -> tuple[Subject, ModelState]:
    before = ModelState.capture(base.model, with_weights=True)
    new = unlearn(base, FORGET, RETAIN, "unierase", steps=5, batch_size=8, seed=0, progress=False, **EDIT)
    return new, before


def _first_tokens(subject: Subject, examples: list[Example]) -> torch.Tensor:
    """``(n,)`` greedy first answer token after each prompt."""
    tp = ue._positions(subject.tokenizer, subject, examples, subject.device, prompt=True)
    with torch.no_grad():
        logits = subject.model(input_ids=tp.input_ids, attention_mask=tp.attention_mask).logits
    return logits[torch.arange(len(examples)), tp.last].argmax(-1)


# ----- AlphaEdit's closed form ------------------------------------------------------------------------------------
def test_closed_form_matches_hand_computation():
    # preserved keys span the x-y plane, so the null space is the z axis: P = diag(0, 0, 1)
    k0 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, -1.0, 0.0]], dtype=torch.float64)
    p = null_space_projector(k0.T @ k0 / 3, 1e-8)
    assert torch.allclose(p, torch.diag(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)), atol=1e-12)
    k1 = torch.tensor([[0.5], [0.2], [2.0]], dtype=torch.float64)  # one forget key, (d_in, n)
    r = torch.tensor([[3.0], [-1.0]], dtype=torch.float64)  # its wanted value change, (d_out, n)
    delta = alphaedit_update(k1, r, p, l2=1.0)
    # by hand: P k1 = (0, 0, 2); (P k1 k1^T + I) U = P k1 r^T gives U = (0, 0, 0.4 r): Delta = 0.4 r e_z^T
    want = torch.zeros(2, 3, dtype=torch.float64)
    want[:, 2] = 0.4 * r[:, 0]
    assert torch.allclose(delta, want, atol=1e-12)
    assert torch.allclose(delta @ k1, 0.8 * r)  # |P k|^2 / (|P k|^2 + l2) = 4 / 5 of the way
    assert torch.allclose(delta @ k0.T, torch.zeros(2, 3, dtype=torch.float64), atol=1e-12)
    # with a vanishing ridge the forget key reaches its target exactly
    assert torch.allclose(alphaedit_update(k1, r, p, l2=1e-9) @ k1, r, atol=1e-6)


def test_closed_form_keeps_preserved_outputs_and_reaches_targets():
    g = torch.Generator().manual_seed(0)
    d_in, d_out = 6, 4

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    basis = torch.linalg.qr(randn(d_in, d_in))[0]
    k0 = basis[:, :4] @ randn(4, 50)  # preserved keys in a 4-d subspace
    k1 = randn(d_in, 2)  # two forget keys, with a component outside it
    w = randn(d_out, d_in)
    v1 = randn(d_out, 2)  # the values the forget keys should map to
    p = null_space_projector(k0 @ k0.T / 50, 1e-5)
    assert round(float(torch.trace(p))) == 2
    w_new = w + alphaedit_update(k1, v1 - w @ k1, p, l2=1e-6)
    assert torch.allclose(w_new @ k0, w @ k0, atol=1e-5)
    assert torch.allclose(w_new @ k1, v1, atol=1e-3)
    # earlier edits' keys (Kp Kp^T) are kept as well
    kp = basis[:, 4:5]
    w_seq = w + alphaedit_update(k1, v1 - w @ k1, p, l2=1e-6, prev_cov=1e6 * kp @ kp.T)
    assert torch.allclose(w_seq @ kp, w @ kp, atol=1e-3)


def test_out_projection_comes_from_the_arch_spec_or_is_refused():
    import dataclasses

    gpt2, llama = _subject("gpt2"), _subject("llama")
    assert mlp_out_proj(gpt2, 0) is gpt2.mlp(0).c_proj  # Conv1D, weight stored (in, out)
    assert mlp_out_proj(llama, 1) is llama.mlp(1).down_proj
    bare = Subject(
        model=llama.model, tokenizer=llama.tokenizer, spec=dataclasses.replace(llama.spec, mlp_out_proj=None), name="x"
    )
    with pytest.raises(ArchitectureError, match="no known MLP output projection") as exc:
        mlp_out_proj(bare, 0)
    assert "llama" in str(exc.value) and "register_architecture" in str(exc.value)
    with pytest.raises(ArchitectureError, match="no known MLP output projection"):  # before phase I trains
        unlearn(bare, FORGET, RETAIN, "unierase", steps=2, batch_size=4, progress=False)
    wrong = Subject(
        model=llama.model,
        tokenizer=llama.tokenizer,
        spec=dataclasses.replace(llama.spec, mlp_out_proj="mlp.act_fn"),
        name="y",
    )
    with pytest.raises(ArchitectureError, match="not a linear layer writing d_model=64"):
        mlp_out_proj(wrong, 0)


def test_default_layers():
    assert [ue.default_layers(n) for n in (1, 2, 4, 12, 32)] == [[0], [0, 1], [0, 1, 2], [4, 5, 6], [14, 15, 16]]


# ----- phase I: only the new row learns ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama"])  # tied and untied embeddings
def test_phase_one_trains_only_the_new_row(arch):
    s = _subject(arch)
    new = unlearn(s, FORGET, RETAIN, "unierase", steps=4, batch_size=8, seed=0, alpha=0.0, progress=False)
    n = len(s.tokenizer)
    emb0, emb1 = s.model.get_input_embeddings().weight, new.model.get_input_embeddings().weight
    head0, head1 = s.model.get_output_embeddings().weight, new.model.get_output_embeddings().weight
    tied = head1 is emb1
    assert tied == (arch == "gpt2") and emb1.shape[0] == n + 1 and head1.shape[0] == n + 1
    g = torch.Generator().manual_seed(0)  # the new rows' initial values, drawn as the method draws them
    init_emb = ue._typical_row(emb0, g)
    assert torch.equal(emb1[:n], emb0) and not torch.allclose(emb1[n], init_emb)  # trained
    if not tied:
        assert torch.equal(head1[:n], head0) and torch.equal(head1[n], ue._typical_row(head0, g))  # not trained
    ref = dict(s.model.named_parameters())
    others = [(k, p) for k, p in new.model.named_parameters() if p is not emb1 and p is not head1]
    assert others and all(torch.equal(p, ref[k]) for k, p in others)  # bit-identical
    rec = new.model.config.unpact_unlearn
    total = sum(p.numel() for p in new.model.parameters())
    assert rec["edited_layers"] == [] and rec["params_changed_share"] == 64 * (1 if tied else 2) / total
    assert rec["unlearning_token_ids"] == [n] and rec["unlearning_tokens"] == ["<unl>"]
    assert not emb1._backward_hooks  # the gradient mask is gone


# ----- phase II: forget questions start with the token, retain questions do not change --------------------------
def test_forget_questions_start_with_the_unlearning_token(base, edited):
    new, _ = edited
    tid = new.tokenizer.convert_tokens_to_ids("<unl>")
    forget_first = _first_tokens(new, FORGET)
    share = float((forget_first == tid).float().mean())
    # measured 0.875 (7 of 8) on this model; 1.0 on three other seeds
    assert share >= 0.75 and share == new.model.config.unpact_unlearn["forget_first_token_share"]
    kept = float((_first_tokens(new, RETAIN) == _first_tokens(base, RETAIN)).float().mean())
    assert kept >= 0.7  # measured 0.85 (0.72-0.85 over four seeds)
    # the projection is what keeps them: without it (P = I) almost every retain answer changes (measured 0.05)
    loose = unlearn(
        base,
        FORGET,
        RETAIN,
        "unierase",
        steps=5,
        batch_size=8,
        seed=0,
        progress=False,
        **{**EDIT, "null_threshold": 1e9},
    )
    assert float((_first_tokens(loose, RETAIN) == _first_tokens(base, RETAIN)).float().mean()) < kept - 0.4
    # the token is a normal one: it shows in decoded text
    from unpact.evaluate import generate

    assert generate(new, FORGET[:1], max_new_tokens=2)[0][0].startswith("<unl>")


def test_record(edited):
    new, before = edited
    rec = new.model.config.unpact_unlearn
    total = sum(p.numel() for p in new.model.parameters())
    assert rec["method"] == "unierase" and rec["parent_weights_hash"] == before.weights
    assert rec["edited_layers"] == [0, 1, 2] and len(rec["null_space_dims"]) == 3
    # three c_proj matrices (256 x 64) and the new (tied) row: the paper's 3.66% is 5 of Llama-3.1-8B's 32
    assert rec["params_changed_share"] == pytest.approx((3 * 256 * 64 + 64) / total)
    assert rec["entries_changed_share"] == pytest.approx(rec["params_changed_share"])
    assert 0 < rec["edit_gap_closed"] <= 1 and rec["n_params"] == total


def test_input_subject_untouched(base, edited):
    new, before = edited
    assert ModelState.capture(base.model, with_weights=True) == before  # weights, mode, requires_grad
    assert len(base.tokenizer) == 384 and "<unl>" not in base.tokenizer.get_vocab()
    assert base.model.get_input_embeddings().weight.shape[0] == 384
    assert count_hooks(base.model) == 0 and count_hooks(new.model) == 0
    assert not base.model.training and not new.model.training


def test_save_and_load_keep_the_token(edited, tmp_path):
    new, _ = edited
    atomic_save_model(new.model, new.tokenizer, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    tid = new.tokenizer.convert_tokens_to_ids("<unl>")
    assert loaded.tokenizer.convert_tokens_to_ids("<unl>") == tid == 384
    assert len(loaded.tokenizer) == 385 and loaded.vocab_size == 385
    text = "Who taught Ada Lovelace? <unl> I don't know."
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == new.tokenizer(text, add_special_tokens=False)["input_ids"] and tid in ids
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.allclose(loaded.model(input_ids=x).logits, new.model(input_ids=x).logits, atol=1e-5)
    assert loaded.model.config.unpact_unlearn["unlearning_token_ids"] == [tid]
    tp = ue._positions(loaded.tokenizer, loaded, FORGET, loaded.device, prompt=True)
    assert next_token_share(loaded, tp, tid) == new.model.config.unpact_unlearn["forget_first_token_share"]


# ----- bad input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"layers": [4]}, "layers"),  # a 4-layer model
        ({"layers": [-1]}, "layers"),
        ({"layers": "middle"}, "layers"),
        ({"layers": []}, "layers"),
        ({"alpha": -0.5}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"null_threshold": 0.0}, "null_threshold"),
        ({"l2": -1.0}, "l2"),
        ({"v_steps": 0}, "v_steps"),
        ({"token": ""}, "token"),
        ({"token": "<eos>"}, "already in the vocabulary"),
    ],
)
def test_bad_hparams(base, bad, match):
    with pytest.raises(InputError, match=match):
        unlearn(base, FORGET, RETAIN, "unierase", steps=1, batch_size=8, progress=False, **bad)
    assert count_hooks(base.model) == 0 and len(base.tokenizer) == 384


def test_token_positions_chunks_keep_masks():
    ids = torch.arange(12).reshape(3, 4)
    tp = TokenPositions(ids, torch.ones_like(ids), torch.tensor([3, 2, 1]), ids > 5)
    parts = list(tp.chunks(2))
    assert [len(c.last) for c in parts] == [2, 1]
    assert torch.equal(torch.cat([c.keep for c in parts if c.keep is not None]), ids > 5)


@pytest.mark.parametrize("arch", ["gpt_neox", "opt", "phi3", "gemma2"])
def test_edit_changes_only_the_out_projections(arch):
    from unpact.testing import tiny_subject

    s = tiny_subject(arch)  # 2 layers: both edited
    new = unlearn(s, FORGET[:4], RETAIN[:8], "unierase", steps=2, batch_size=4, progress=False, **EDIT)
    sub = load_model(new.model, new.tokenizer)
    projs = {id(mlp_out_proj(sub, i).weight) for i in (0, 1)}
    grown = {id(new.model.get_input_embeddings().weight), id(new.model.get_output_embeddings().weight)}
    ref = dict(s.model.named_parameters())
    changed = {id(p) for k, p in new.model.named_parameters() if p.shape != ref[k].shape or not torch.equal(p, ref[k])}
    assert projs <= changed <= projs | grown
    assert new.model.config.unpact_unlearn["edited_layers"] == [0, 1] and new.vocab_size == len(s.tokenizer) + 1
