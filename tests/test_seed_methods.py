"""The seed papers' methods ReLearn, PALU and UniErase (its objective: tests/test_unierase.py): forgetting at
kept utility, their data and masks, and their place in the registry and the sweep."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from unpact.data import Example, encode_batch, fill_id
from unpact.errors import DataFileError, InputError, MissingFileError
from unpact.evaluate import evaluate
from unpact.models import ModelState
from unpact.unlearn import METHODS, unlearn
from unpact.unlearn._loop import _sensitive_mask, _tok_batch
from unpact.unlearn.relearn import REWRITES, augment, paraphrases_of, vague_answers


@pytest.fixture(scope="module")
def base_acc(micro_world, toy_base):
    return evaluate(toy_base, micro_world.forget).accuracy(), evaluate(toy_base, micro_world.retain[:200]).accuracy()


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,kw",
    [
        # ReLearn: the paper's loss; a heavier retain term than the default (1, which keeps ~75% of base retain
        # accuracy on the micro world) keeps its utility
        ("relearn", {"retain_weight": 3.0}),
        # PALU: k = 100 (not one of the released sweep's values, {1, 1000, 5000, 10000}) at lr 1e-4; at its
        # defaults (k = 1, lr 3e-5) the micro world keeps only ~75% of base retain accuracy (docs/unlearning.md)
        ("palu", {"top_k": 100, "lr": 1e-4}),
        # UniErase: the edit at 1.25x (at the published 1x it turns 49% of the forget questions into <unl>
        # and forgets 53%, just short of half)
        ("unierase", {"alpha": 1.25}),
    ],
)
def test_forgets_at_kept_utility(method, kw, micro_world, toy_base, base_acc):
    before = ModelState.capture(toy_base.model, with_weights=True)
    new = unlearn(toy_base, micro_world.forget, micro_world.retain, method, seed=0, progress=False, **kw)
    assert ModelState.capture(toy_base.model, with_weights=True) == before
    forget = evaluate(new, micro_world.forget).accuracy()
    retain = evaluate(new, micro_world.retain[:200]).accuracy()
    base_forget, base_retain = base_acc
    assert forget <= base_forget / 2, (method, forget, base_forget)
    assert retain >= 0.8 * base_retain, (method, retain, base_retain)
    assert new.model.config.unpact_unlearn["method"] == method


def test_registered_everywhere():
    from unpact.audit.config import DEFAULT_METHODS
    from unpact.sweep.schedule import default_schedule

    for m in ("relearn", "palu", "unierase"):
        assert m in METHODS and m in DEFAULT_METHODS
    assert default_schedule("relearn").kind == "steps" and default_schedule("palu").kind == "steps"
    assert default_schedule("unierase").kind == "alpha"
    assert not METHODS["unierase"].linear_in_alpha and METHODS["task_vector"].linear_in_alpha


def test_relearn_augmentation(micro_world, tmp_path):
    e = micro_world.forget[0]
    paras = paraphrases_of(e)
    # the toy world's other trained phrasings of the attribute, never its held-out ones, then the rewritings
    from unpact.toyworld.kb import TEMPLATES

    heldout = TEMPLATES[e.meta["attribute"]][5][0].format(name=e.subject)
    assert heldout not in paras and e.prompt not in paras
    assert REWRITES[0].format(q=e.prompt) in paras
    assert len(set(paras)) == len(paras)
    out = augment([e], random.Random(0), n_augment=2)
    assert [x.id for x in out] == [f"{e.id}~relearn{k}" for k in range(3)]
    assert out[0].prompt == e.prompt and all(x.prompt in paras for x in out[1:])
    assert all(x.answer in vague_answers(e) and e.answer not in x.answer for x in out)
    # a user's paraphrase file comes first; a generic item gets sentence answers naming its subject
    g = Example("g1", "Where did Ada Lovelace work?", "London", subject="Ada Lovelace")
    path = tmp_path / "para.json"
    path.write_text(json.dumps({"g1": ["Ada Lovelace worked where?"]}))
    assert paraphrases_of(g, {"g1": ["Ada Lovelace worked where?"]})[0] == "Ada Lovelace worked where?"
    got = augment([g], random.Random(1), n_augment=1, paraphrases=str(path))
    assert got[1].prompt == "Ada Lovelace worked where?" and "Ada Lovelace" in got[1].answer
    with pytest.raises(InputError, match="paraphrase"):
        augment([g], random.Random(0), paraphrases={"g1": "not a list"})
    for n in (-1, 2.5, True):
        with pytest.raises(InputError, match="n_augment must be a whole number"):
            augment([g], random.Random(0), n_augment=n)


def test_sensitive_mask(toy_base):
    tok = toy_base.tokenizer
    plain = Example("a", "Who wrote it?", "The Ancient Harbor")
    marked = Example("b", "Who wrote it?", "The Ancient Harbor", meta={"sensitive": ["Harbor"]})
    b = encode_batch(tok, [plain], fill=fill_id(tok))
    assert _sensitive_mask(tok, [plain], b) is None  # the whole answer: TokBatch.sensitive = answer_mask
    b = encode_batch(tok, [plain, marked], fill=fill_id(tok))
    mask = _sensitive_mask(tok, [plain, marked], b)
    answer = b.answer_mask()[:, :-1]
    assert torch.equal(mask[0], answer[0])  # items without spans: their whole answer
    assert mask[1].any() and mask[1].sum() < answer[1].sum() and not (mask[1] & ~answer[1]).any()
    enc = b.items[1]
    first = int(mask[1].nonzero()[0]) + 1  # the first sensitive token
    assert "Harbor".startswith(tok.decode(enc.input_ids[first : first + 1]).strip()[:1])
    with pytest.raises(InputError, match="not in its answer"):
        bad = Example("c", "Who?", "Ann", meta={"sensitive": ["Bob"]})
        _sensitive_mask(tok, [bad], encode_batch(tok, [bad], fill=fill_id(tok)))


@pytest.fixture(scope="module")
def unierased(micro_world, toy_base):
    return unlearn(toy_base, micro_world.forget, micro_world.retain, "unierase", alpha=1.25, progress=False)


def test_ban_unlearning_token_attack(micro_world, toy_base, unierased):
    from unpact.attacks import run_attack, unlearning_token_ids
    from unpact.metrics import lenient_match

    items = micro_world.forget[:32]
    (unl,) = unlearning_token_ids(unierased)
    assert unl == len(toy_base.tokenizer) and unlearning_token_ids(toy_base) == ()
    plain = run_attack(unierased, items, "plain", max_new_tokens=6)
    ban = run_attack(unierased, items, "ban_unl", max_new_tokens=6)
    assert sum(o.samples[0].lstrip().startswith("<unl>") for o in plain) >= len(items) // 2
    assert not any("<unl>" in o.samples[0] for o in ban)
    hits = [sum(lenient_match(o.samples[0], o.example.answer) for o in outs) for outs in (plain, ban)]
    assert hits[1] > hits[0]  # banning the token brings answers back: suppression by construction
    # a model without unlearning tokens decodes as plain
    same = run_attack(toy_base, items[:8], "ban_unl", max_new_tokens=6)
    assert [o.samples for o in same] == [o.samples for o in run_attack(toy_base, items[:8], "plain", max_new_tokens=6)]


def test_grown_vocabulary_saves_loads_and_audits(micro_world, toy_base, unierased, tmp_path):
    from unpact._io import atomic_save_model
    from unpact.audit import AuditConfig, Models, audit
    from unpact.data import check_same_tokenizer
    from unpact.models import load_model

    with pytest.raises(InputError, match="vocabulary sizes"):
        check_same_tokenizer(toy_base.tokenizer, unierased.tokenizer)
    assert check_same_tokenizer(toy_base.tokenizer, unierased.tokenizer, allow_added=True) == ("<unl>",)
    with pytest.raises(InputError, match="appended at the end of the base vocabulary"):  # only tokens added there
        check_same_tokenizer(unierased.tokenizer, toy_base.tokenizer, allow_added=True)
    atomic_save_model(unierased.model, unierased.tokenizer, tmp_path / "ue")
    loaded = load_model(str(tmp_path / "ue"))
    assert loaded.vocab_size == toy_base.vocab_size + 1 and loaded.weights_hash() == unierased.weights_hash()
    assert loaded.tokenizer.convert_tokens_to_ids("<unl>") == len(toy_base.tokenizer)
    cfg = AuditConfig(
        out=str(tmp_path / "audit"),
        **dict(max_forget=12, max_retain=12, attribution="loo", lens=False, circuits=0, progress=False, workers=1),
        **dict(relearn=False, quantize=False, probes=False, directions=False, soft_prompt=False, diff_attacks=False),
        **dict(standard_metrics=False),
    )
    models = Models(toy_base, {"unierase": str(tmp_path / "ue")}, retain_only=micro_world.load_retain_only())
    summary = audit(cfg, models, micro_world.forget, micro_world.retain)
    assert "ban_unl" in summary.models["unierase"].scores.recovery


def test_paraphrase_file_errors_name_the_file_and_line(tmp_path, caplog):
    g = Example("g1", "Where did Ada Lovelace work?", "London", subject="Ada Lovelace")
    with pytest.raises(MissingFileError, match="no paraphrase file") as err:
        augment([g], random.Random(0), paraphrases=str(tmp_path / "missing.json"))
    assert str(tmp_path / "missing.json") in str(err.value) and err.value.fix
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{\n  "g1": ["ok"],\n  "g2": [oops]\n}', encoding="utf-8")
    with pytest.raises(DataFileError, match="line 3.*not valid JSON") as err:
        augment([g], random.Random(0), paraphrases=str(bad_json))
    assert err.value.line == 3 and err.value.fix
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataFileError, match="not UTF-8"):
        augment([g], random.Random(0), paraphrases=str(binary))
    with pytest.raises(DataFileError, match="is a directory"):
        augment([g], random.Random(0), paraphrases=str(tmp_path))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"g1": "not a list"}), encoding="utf-8")
    with pytest.raises(DataFileError, match="lists of non-empty questions"):
        augment([g], random.Random(0), paraphrases=str(wrong))
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps({"g1": ["Ada Lovelace worked where?"], "nobody": ["Who?"]}), encoding="utf-8")
    with caplog.at_level("WARNING", logger="unpact.unlearn.relearn"):
        augment([g], random.Random(0), n_augment=1, paraphrases=str(stray))
    assert "match no forget item" in caplog.text and "nobody" in caplog.text and "g1" not in caplog.text


def _with_spans(items: list[Example]) -> list[Example]:
    """The items with their whole answer marked sensitive (as PALU data would carry)."""
    return [dataclasses.replace(e, meta={**e.meta, "sensitive": [e.answer]}) for e in items]


@pytest.mark.parametrize("method", ["relearn", "idk", "unierase"])
def test_methods_that_replace_the_answer_ignore_its_sensitive_spans(method, micro_world, toy_base):
    forget = _with_spans(micro_world.forget[:8])
    kw = {"alpha": 0.0} if method == "unierase" else {}
    new = unlearn(toy_base, forget, micro_world.retain[:8], method, steps=2, batch_size=4, progress=False, **kw)
    assert new.model.config.unpact_unlearn["method"] == method
    if method == "relearn":
        out = augment(forget, random.Random(0), n_augment=1)
        assert all("sensitive" not in e.meta for e in out) and all("attribute" in e.meta for e in out)


def test_only_methods_reading_spans_build_the_mask(micro_world, toy_base):
    assert METHODS["palu"].uses_sensitive_spans
    assert not any(METHODS[m].uses_sensitive_spans for m in ("relearn", "idk", "unierase", "npo_gd"))
    bad = [dataclasses.replace(micro_world.forget[0], meta={"sensitive": ["not in the answer"]})]
    assert _tok_batch(toy_base, bad, toy_base.device).sensitive_mask is None  # not asked: not checked
    with pytest.raises(InputError, match="not in its answer"):
        _tok_batch(toy_base, bad, toy_base.device, sensitive=True)
    spans = _with_spans(micro_world.forget[:4])
    assert _tok_batch(toy_base, spans, toy_base.device, sensitive=True).sensitive_mask is not None
    new = unlearn(toy_base, spans, micro_world.retain[:4], "palu", steps=1, batch_size=4, progress=False)
    assert new.model.config.unpact_unlearn["method"] == "palu"


class _Bigram(torch.nn.Module):
    """A model whose next-token logits at a position are a fixed row per current token: ``table[id]``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    lse = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - lse for x in row]


def test_relearn_loss_by_hand():
    from unpact.unlearn.methods import LossContext, TokBatch
    from unpact.unlearn.relearn import _relearn_loss

    pi = [[0.5, -1.0, 2.0], [1.0, 0.0, -0.5], [-2.0, 1.5, 0.3]]  # logits after token 0, 1, 2
    ref = [[0.0, 1.0, 0.5], [2.0, -1.0, 0.0], [0.7, 0.2, -1.2]]
    model, ref_model = _Bigram(torch.tensor(pi)), _Bigram(torch.tensor(ref))
    # F': tokens 0 1 2, the answer is token 2 (predicted at position 1); R: tokens 2 0 1 1, answer 1 1
    f = TokBatch(torch.tensor([[0, 1, 2]]), torch.ones(1, 3, dtype=torch.long), torch.tensor([[False, True]]))
    r = TokBatch(torch.tensor([[2, 0, 1, 1]]), torch.ones(1, 4, dtype=torch.long), torch.tensor([[False, True, True]]))
    hp = {"kl_weight": 0.5, "retain_weight": 2.0, "n_augment": 0, "paraphrases": None}
    got = _relearn_loss(LossContext(model=model, ref=ref_model, hparams=hp, subject=None), f, r).item()

    def kl(p_row: list[float], q_row: list[float]) -> float:  # KL(p || q) of two logit rows
        lp, lq = _log_softmax(p_row), _log_softmax(q_row)
        return sum(math.exp(a) * (a - b) for a, b in zip(lp, lq))

    nll_f = -_log_softmax(pi[1])[2]
    kl_ref_pi = sum(kl(ref[t], pi[t]) for t in (2, 0, 1)) / 3  # every real position of R: after 2, 0, 1
    nll_r = -(_log_softmax(pi[0])[1] + _log_softmax(pi[1])[1]) / 2
    assert got == pytest.approx(nll_f + 0.5 * kl_ref_pi + 2.0 * nll_r, rel=1e-6)
    kl_pi_ref = sum(kl(pi[t], ref[t]) for t in (2, 0, 1)) / 3  # the other direction gives another number
    assert abs(kl_pi_ref - kl_ref_pi) > 0.05
    assert got != pytest.approx(nll_f + 0.5 * kl_pi_ref + 2.0 * nll_r, rel=1e-3)
    hp0 = {**hp, "kl_weight": 0.0, "retain_weight": 0.0}
    assert _relearn_loss(LossContext(model, ref_model, hp0, None), f, r).item() == pytest.approx(nll_f, rel=1e-6)


def test_unierase_phase_one_targets_the_refusal_not_the_token(monkeypatch):
    from unpact.testing import tiny_subject
    from unpact.unlearn import unierase as ue
    from unpact.unlearn.methods import LossContext, TokBatch

    # by hand on fixed logits: tokens p p UNL a b; only the positions predicting a and b count
    unl = 3
    logits = [[0.1, 0.2, 0.3, 0.4, 0.0], [1.0, 0.0, 0.0, 2.0, 0.5], [0.0, 1.0, -1.0, 0.5, 0.2], [0.3, 0.3, 2.0, 0, 1]]
    table = torch.tensor([*logits, [0.0] * 5])
    ids = torch.tensor([[0, 1, unl, 2, 4]])
    answer = torch.tensor([[False, True, True, True]])  # the answer is "<unl> a b": position 1 predicts <unl>
    f = TokBatch(ids, torch.ones_like(ids), answer)
    ctx = LossContext(model=_Bigram(table), ref=_Bigram(table), hparams={}, subject=None, state={"unl_id": unl})
    want = -(_log_softmax(logits[unl])[2] + _log_softmax(logits[2])[4]) / 2  # after <unl>: a, then b after a
    assert ue._loss(ctx, f, None).item() == pytest.approx(want, rel=1e-6)

    # on a real encoding: the masked positions predict exactly the refusal's tokens
    s = tiny_subject("gpt2")
    hp = {**ue.UNIERASE_DEFAULTS, "seed": 0}
    ctx = LossContext(model=copy.deepcopy(s.model), ref=s.model, hparams=hp, subject=s, tokenizer=s.tokenizer)
    ctx.state.update(forget=[], retain=[])
    ue._prepare(ctx)
    items = ue._forget_data(ctx, [Example("q", "Where was Ada born?", "London")], random.Random(0))
    batch = _tok_batch(s, items, s.device, ctx.tokenizer)
    seen: list[TokBatch] = []
    monkeypatch.setattr(ue, "nll", lambda model, b: seen.append(b) or torch.zeros(()))
    ue._loss(ctx, batch, None)
    (used,) = seen
    nxt = batch.input_ids[0, 1:]
    unl_at = int((nxt == ctx.state["unl_id"]).nonzero()[0])
    assert bool(batch.answer_mask[0, unl_at]) and not bool(used.answer_mask[0, unl_at])  # <unl> is not a target
    assert bool(used.answer_mask[0, unl_at + 1 :].all())  # every refusal token is
    refusal = items[0].answer.split(" ", 1)[1]
    assert ctx.tokenizer.decode(nxt[used.answer_mask[0]]).strip() == refusal


def test_palu_clamps_top_k_to_the_vocabulary_with_a_warning_and_records_it(caplog):
    from unpact.testing import tiny_subject

    s = tiny_subject("gpt2")
    items = [Example(f"e{i}", f"Where was person {i} born?", "London") for i in range(4)]
    with caplog.at_level("WARNING", logger="unpact.unlearn.palu"):
        new = unlearn(s, items[:2], items[2:], "palu", top_k=10**6, steps=1, batch_size=2, progress=False)
    rec = new.model.config.unpact_unlearn
    assert f"using top_k={s.vocab_size}" in caplog.text
    assert rec["hparams"]["top_k"] == s.vocab_size and rec["top_k_requested"] == 10**6
    with pytest.raises(InputError, match="kl_weight must be a finite number >= 0.*kl_weight=1.0"):
        unlearn(s, items[:2], items[2:], "palu", kl_weight=-1.0, steps=1, batch_size=2, progress=False)


def test_sweep_refuses_unlearn_kw_that_sets_the_swept_strength(micro_world, toy_base, tmp_path):
    from unpact.sweep import sweep

    with pytest.raises(InputError, match="unlearn_kw sets alpha, which the sweep sets itself for 'unierase'"):
        sweep(
            toy_base, micro_world.forget, micro_world.retain, ["unierase"], out=tmp_path / "s", unlearn_kw={"alpha": 2}
        )
    with pytest.raises(InputError, match="unlearn_kw sets steps"):
        sweep(
            toy_base, micro_world.forget, micro_world.retain, ["relearn"], out=tmp_path / "s", unlearn_kw={"steps": 3}
        )
    assert not (tmp_path / "s").exists()  # refused before any work
