"""The seed papers' methods ReLearn, PALU and UniErase (its objective: tests/test_unierase.py): forgetting at
kept utility, their data and masks, and their place in the registry and the sweep."""

from __future__ import annotations

import json
import random

import pytest
import torch

from unpact.data import Example, encode_batch, fill_id
from unpact.errors import InputError
from unpact.evaluate import evaluate
from unpact.models import ModelState
from unpact.unlearn import METHODS, unlearn
from unpact.unlearn._loop import _sensitive_mask
from unpact.unlearn.relearn import REWRITES, augment, paraphrases_of, vague_answers


@pytest.fixture(scope="module")
def base_acc(micro_world, toy_base):
    return evaluate(toy_base, micro_world.forget).accuracy(), evaluate(toy_base, micro_world.retain[:200]).accuracy()


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,kw",
    [
        # ReLearn: the paper's loss; a heavier retain term than the default keeps the micro world's utility
        ("relearn", {"retain_weight": 3.0}),
        # PALU: k = 100 of the paper's top-k sweep (its k = 1 default forgets only at a retain cost here)
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
    for bad in ({"g1": "not a list"}, str(tmp_path / "missing.json")):
        with pytest.raises(InputError, match="paraphrase"):
            augment([g], random.Random(0), paraphrases=bad)
    with pytest.raises(InputError, match="n_augment"):
        augment([g], random.Random(0), n_augment=-1)


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
    with pytest.raises(InputError):  # only tokens added at the end are accepted
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
