"""Examples, loaders and encoding with exact spans."""

from __future__ import annotations

import json

import pytest
import torch

from unpact.data import Example, InputError, check_same_tokenizer, encode, encode_batch, load_examples, save_examples
from unpact.prompts import PromptFormat
from unpact.testing import tiny_tokenizer

QA = [
    ("What is the capital of France?", "Paris"),
    ("Where was Ada Lovelace born?", "She was born in London."),
    ("Answer with one word:", " brown"),
    ("The year is ", "1815"),
]


@pytest.mark.parametrize("prompt,answer", QA)
def test_answer_span_decodes_to_answer(prompt: str, answer: str) -> None:
    tok = tiny_tokenizer()
    enc = encode(tok, Example("x", prompt, answer))
    assert tok.decode(enc.answer_ids).strip() == answer.strip()
    assert tok.decode(enc.prompt_ids) == prompt
    assert enc.answer_span[1] == len(enc.input_ids)
    assert enc.prompt_span[1] == enc.answer_span[0]


def test_boundary_merge_keeps_prompt_tokens() -> None:
    tok = tiny_tokenizer()
    # "capi" + "tal" with sep="" would merge across the join for a BPE that knows "capital".
    enc = encode(tok, Example("m", "The capi", "tal of France"), fmt=PromptFormat(answer_sep=""))
    assert tok.decode(enc.prompt_ids) == "The capi"
    assert tok.decode(enc.answer_ids) == "tal of France"


def test_hf_llama_style_tokenizer_with_bos(tmp_path) -> None:
    tok = tiny_tokenizer()
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = tok.backend_tokenizer.__class__.from_str(tok.backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)]
    )
    t2 = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    enc = encode(t2, Example("b", "Where was Ada born?", "London"))
    assert enc.input_ids[0].item() == t2.bos_token_id
    assert enc.prompt_span[0] == 1
    assert t2.decode(enc.answer_ids).strip() == "London"


def test_batch_right_pads_and_masks() -> None:
    tok = tiny_tokenizer()
    b = encode_batch(tok, [Example(str(i), p, a) for i, (p, a) in enumerate(QA)])
    assert b.input_ids.shape[0] == 4
    lengths = b.attention_mask.sum(1)
    for i, item in enumerate(b.items):
        assert lengths[i] == len(item.input_ids)
        assert torch.equal(b.input_ids[i, : lengths[i]], item.input_ids)
    m = b.answer_mask()
    for i, item in enumerate(b.items):
        assert m[i].sum() == item.answer_span[1] - item.answer_span[0]
        assert torch.equal(b.input_ids[i][1:][m[i][:-1]], item.answer_ids)


def test_errors_are_specific() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(InputError, match="prompt is empty"):
        Example("e", "  ", "x")
    with pytest.raises(InputError, match="answer is empty"):
        Example("e", "q?", "")
    with pytest.raises(InputError, match="longer than the model's context"):
        encode(tok, Example("l", "word " * 50, "x"), max_length=16)
    no_pad = tiny_tokenizer.__wrapped__(vocab_size=300)
    no_pad.pad_token = None
    with pytest.raises(InputError, match="no pad token"):
        encode_batch(no_pad, [Example("a", "short?", "x"), Example("b", "a much longer prompt here?", "y")])
    # A single example needs no padding.
    assert encode_batch(no_pad, [Example("a", "short?", "x")]).input_ids.shape[0] == 1
    with pytest.raises(InputError, match="tokenizers differ"):
        check_same_tokenizer(tok, no_pad)
    check_same_tokenizer(tok, tiny_tokenizer())
    with pytest.raises(InputError, match="has none"):
        encode(tok, Example("c", "q?", "a"), fmt=PromptFormat(chat=True))


def test_loaders_tofu_json_jsonl_and_lists(tmp_path) -> None:
    recs = [
        {"question": "Q1?", "answer": "A1", "subject": "Ann", "split": "forget"},
        {"question": "Q2?", "answer": "A2"},
    ]
    (tmp_path / "f.json").write_text(json.dumps(recs))
    (tmp_path / "f.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    a = load_examples(tmp_path / "f.json")
    b = load_examples(tmp_path / "f.jsonl")
    assert a == b and a[0].subject == "Ann" and a[0].meta["split"] == "forget" and a[1].id == "1"
    c = load_examples([("Q1?", "A1"), ("Q2?", "A2")])
    assert [e.prompt for e in c] == ["Q1?", "Q2?"]
    save_examples(a, tmp_path / "out.json")
    assert load_examples(tmp_path / "out.json") == a
    (tmp_path / "bad.json").write_text(json.dumps([{"q": 1}]))
    with pytest.raises(InputError, match="needs a prompt key"):
        load_examples(tmp_path / "bad.json")
    with pytest.raises(InputError, match="duplicate example id"):
        load_examples([{"id": 1, "question": "a", "answer": "b"}, {"id": 1, "question": "c", "answer": "d"}])
    with pytest.raises(FileNotFoundError):
        load_examples(tmp_path / "nope.json")
