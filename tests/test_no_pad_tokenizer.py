"""Real tokenizers often have no pad token and no BOS (GPT-2) or append EOS: the tracers still work."""

from __future__ import annotations

import numpy as np
import pytest

from unpact.attribution import integrated_gradients, leave_one_out
from unpact.data import Example, InputError, encode, encode_batch, load_examples
from unpact.evaluate import answer_logprob, evaluate
from unpact.models import load_model
from unpact.testing import tiny_model, tiny_tokenizer

EXAMPLES = [
    Example("a", "Where was Ada Lovelace born?", "London"),
    Example("b", "What is the capital of France?", "Paris"),
]


@pytest.fixture
def no_pad_subject():
    model, _ = tiny_model("gpt2")
    tok = tiny_tokenizer.__wrapped__()  # a private copy: no pad token, like GPT-2's
    tok.pad_token = None
    assert tok.pad_token_id is None
    return load_model(model, tok, name="no-pad")


def test_ig_default_baseline_falls_back_and_batches(no_pad_subject) -> None:
    attrs = integrated_gradients(no_pad_subject, EXAMPLES, n_steps=32)
    assert len(attrs) == 2
    for a in attrs:
        assert (
            a.completeness_error is not None
            and abs(a.completeness_error) < 0.05 * abs(a.value - a.baseline_value) + 1e-6
        )
        assert np.isclose(a.word_scores.sum(), a.token_scores.sum(), atol=1e-6)
    # The fallback used the eos embedding: F(baseline) equals F on an all-eos prompt.
    eos_attr = integrated_gradients(no_pad_subject, EXAMPLES[:1], baseline="eos", n_steps=32)[0]
    assert np.isclose(attrs[0].baseline_value, eos_attr.baseline_value)
    # A baseline the tokenizer lacks, asked for by name, is an error naming it.
    with pytest.raises(ValueError, match="no mask token"):
        integrated_gradients(no_pad_subject, EXAMPLES, baseline="mask", n_steps=4)


def test_evaluate_and_logprob_without_pad_token(no_pad_subject) -> None:
    r = evaluate(no_pad_subject, EXAMPLES, max_new_tokens=3)
    assert len(r.records) == 2
    batched = answer_logprob(no_pad_subject, EXAMPLES)
    single = np.concatenate([answer_logprob(no_pad_subject, [e]) for e in EXAMPLES])
    assert np.allclose(batched, single, atol=1e-5)
    # The strict batch encoder still names the missing pad token.
    with pytest.raises(InputError, match="no pad token"):
        encode_batch(no_pad_subject.tokenizer, EXAMPLES)


def test_leave_one_out_single_token_prompt_is_a_clear_error(no_pad_subject) -> None:
    with pytest.raises(InputError, match="single token"):
        leave_one_out(no_pad_subject, [Example("s", "W", "London")])


def test_string_keywords_are_one_keyword() -> None:
    assert Example("k", "q?", "a", keywords="France").keywords == ("France",)
    assert load_examples([{"question": "q?", "answer": "a", "keywords": "France"}])[0].keywords == ("France",)


def test_eos_appending_tokenizer_keeps_answer_after_prompt() -> None:
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    base = tiny_tokenizer()
    backend = base.backend_tokenizer.__class__.from_str(base.backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single="$A <eos>", special_tokens=[("<eos>", base.eos_token_id)]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")
    enc = encode(tok, Example("e", "Where was Ada born?", "London"))
    assert tok.eos_token_id not in enc.input_ids.tolist()
    assert tok.decode(enc.answer_ids).strip() == "London"
