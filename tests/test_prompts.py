"""Prompt formats: templates, answer separators, chat templates, and the audit's format check."""

from __future__ import annotations

import json
import shutil

import pytest

from unpact.attacks import apply_text_attack, get_attack, key_positions
from unpact.data import Example, encode, load_examples
from unpact.errors import InputError
from unpact.models import ModelState
from unpact.prompts import PromptFormat
from unpact.testing import tiny_tokenizer

QA_TEMPLATE = "Question: {question}\nAnswer:"
EX = Example("a", "Where was Ada Lovelace born?", "London", keywords=("Ada", "Lovelace"))

#: A chat template that writes the same text as QA_TEMPLATE (with BOS), so a model trained on the
#: template answers under either.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% else %}Question: {{ m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\nAnswer:' }}{% endif %}"
)


# ----- PromptFormat ------------------------------------------------------------------------------
def test_render_places_the_question_and_reports_where() -> None:
    fmt = PromptFormat(template=QA_TEMPLATE)
    text, start = fmt.render(EX.prompt)
    assert text == f"Question: {EX.prompt}\nAnswer:"
    assert text[start : start + len(EX.prompt)] == EX.prompt
    assert PromptFormat().render("q?") == ("q?", 0)
    # braces other than {question} are literal text, and a question with braces is not formatted
    assert PromptFormat(template="{x} {question}").render("{y}")[0] == "{x} {y}"


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(template="Question: Answer:"), "exactly once"),
        (dict(template="{question} {question}"), "exactly once"),
        (dict(system_prompt="Be brief."), "only used with the chat template"),
        (dict(answer_sep=3), "must be text"),
    ],
)
def test_bad_formats_are_refused_with_the_fix(kw, match) -> None:
    with pytest.raises(InputError, match=match):
        PromptFormat(**kw)


def test_audit_settings_overlay_the_model_format() -> None:
    from unpact.audit import AuditConfig

    own = PromptFormat(template=QA_TEMPLATE)
    assert AuditConfig().prompt_format(own) == own
    assert AuditConfig(answer_sep="\n").prompt_format(own) == PromptFormat(template=QA_TEMPLATE, answer_sep="\n")
    assert AuditConfig(template="Q: {question}").prompt_format(own).template == "Q: {question}"


def test_chat_template_that_trims_the_message_is_followed() -> None:
    tok = _chat_tokenizer()
    tok.chat_template = "{% for m in messages %}<u>{{ m['content'] | trim }}</u>{% endfor %}"
    text, start = PromptFormat(template="Q: {question}  ", chat=True).render("Who?", tok)
    assert text == "<u>Q: Who?</u>" and text[start : start + 4] == "Who?"
    tok.chat_template = "{{ raise_exception('no system role') }}"
    with pytest.raises(InputError, match="refuses these turns"):
        PromptFormat(chat=True).render("Who?", tok)


def test_separator_and_round_trip() -> None:
    assert PromptFormat().separator("Q?", "A") == " "
    assert PromptFormat().separator("Q: ", "A") == ""
    assert PromptFormat(answer_sep="\n").separator("Q?", "A") == "\n"
    fmt = PromptFormat(template=QA_TEMPLATE, answer_sep=" ", chat=True, system_prompt="Be brief.")
    assert PromptFormat.from_dict(json.loads(json.dumps(fmt.to_dict()))) == fmt
    with pytest.raises(InputError, match="unknown prompt-format fields"):
        PromptFormat.from_dict({"templat": "x {question}"})


def test_chat_template_renders_the_turns_and_finds_the_question() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(InputError, match="has none"):
        PromptFormat(chat=True).render("q?", tok)
    tok = _chat_tokenizer()
    text, start = PromptFormat(chat=True, system_prompt="Be brief.").render(EX.prompt, tok)
    assert text == f"{tok.bos_token}Be brief.\nQuestion: {EX.prompt}\nAnswer:"
    assert text[start : start + len(EX.prompt)] == EX.prompt


def _chat_tokenizer():
    import copy

    tok = copy.deepcopy(tiny_tokenizer())
    tok.chat_template = CHAT_TEMPLATE
    return tok


# ----- encoding ----------------------------------------------------------------------------------
def test_templated_encoding_spans_the_question_only() -> None:
    tok = tiny_tokenizer()
    plain = encode(tok, EX)
    enc = encode(tok, EX, fmt=PromptFormat(template=QA_TEMPLATE))
    assert enc.prompt_text == f"Question: {EX.prompt}\nAnswer:"
    assert tok.decode(enc.prompt_ids) == enc.prompt_text
    assert tok.decode(enc.answer_ids).strip() == "London"
    p0, p1 = enc.prompt_span
    assert tok.decode(enc.input_ids[p0:p1]).strip() == EX.prompt  # template tokens lie outside the span
    assert p0 > 0 and p1 < enc.answer_span[0]
    # the question's tokens carry their characters in the question; template tokens carry none
    assert all(enc.question_chars[i] == (0, 0) for i in range(p0))
    covered = "".join(EX.prompt[a:b] for a, b in enc.question_chars[p0:p1])
    assert covered.replace(" ", "") == EX.prompt.replace(" ", "")
    # the bare question encodes as before: the span is every prompt token
    assert plain.prompt_span == (0, plain.answer_span[0]) and plain.prompt_text == EX.prompt


def test_item_template_overrides_the_model_format() -> None:
    tok = tiny_tokenizer()
    own = Example("b", EX.prompt, "London", template="Q: {question}\nA:")
    enc = encode(tok, own, fmt=PromptFormat(template=QA_TEMPLATE))
    assert enc.prompt_text == f"Q: {EX.prompt}\nA:"


def test_chat_encoding_adds_no_second_bos() -> None:
    tok = _chat_tokenizer()
    enc = encode(tok, EX, fmt=PromptFormat(chat=True))
    ids = enc.prompt_ids.tolist()
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id  # the template's, once
    assert tok.decode(ids[enc.prompt_span[0] : enc.prompt_span[1]]).strip() == EX.prompt


def test_key_positions_and_rewrites_act_on_the_question_inside_the_template(tiny) -> None:
    s = tiny.with_format(PromptFormat(template="Lovelace asks: {question}\nAnswer:"))
    assert s.model is tiny.model and tiny.prompt_format == PromptFormat()  # shared model, original untouched
    enc = s.encode(EX)
    pos = key_positions(enc, EX.prompt, ["Lovelace"])
    assert pos and min(pos) >= enc.prompt_span[0]  # the template's "Lovelace" is not a key position
    repeated = apply_text_attack(get_attack("repeat"), EX, ["Lovelace"])
    text = s.encode(repeated).prompt_text
    assert text.startswith("Lovelace asks: ") and text.endswith("\nAnswer:")
    assert text.count("Lovelace") == 3  # the template's once, the question's twice (repeated)


def test_attribution_covers_the_question_tokens(tiny) -> None:
    from unpact.attribution import attribute

    s = tiny.with_format(PromptFormat(template=QA_TEMPLATE))
    before = ModelState.capture(s.model, with_weights=True)
    a = attribute(s, EX, method="loo")
    enc = s.encode(EX)
    assert len(a.token_scores) == enc.prompt_span[1] - enc.prompt_span[0]
    assert " ".join(a.words) == "Where was Ada Lovelace born ?"
    assert ModelState.capture(s.model, with_weights=True) == before


# ----- data files --------------------------------------------------------------------------------
def test_data_files_carry_templates_per_file_and_per_item(tmp_path) -> None:
    path = tmp_path / "f.json"
    path.write_text(
        json.dumps(
            {
                "template": QA_TEMPLATE,
                "data": [
                    {"question": "Q1?", "answer": "A1"},
                    {"question": "Q2?", "answer": "A2", "template": "Q: {question}\nA:"},
                ],
            }
        )
    )
    a, b = load_examples(path)
    assert a.template == QA_TEMPLATE and b.template == "Q: {question}\nA:"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "answer": "A", "template": "no field"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl line 1.*exactly once"):
        load_examples(bad)


def test_tofu_files_load_as_they_are(tmp_path) -> None:
    # open-unlearning's TOFU layout: no ids, paraphrased and perturbed answers
    rec = {
        "question": "Where was Basil Mahfouz Al-Kuwaiti born?",
        "answer": "He was born in Kuwait City.",
        "paraphrased_answer": "Kuwait City is his birthplace.",
        "perturbed_answer": ["He was born in Cairo.", "He was born in Doha."],
        "paraphrased_question": "What is his birthplace?",
    }
    path = tmp_path / "forget10_perturbed.json"
    path.write_text("\n".join(json.dumps(rec) for _ in range(2)))
    path = path.rename(tmp_path / "forget10_perturbed.jsonl")
    ex = load_examples(path, id_prefix="forget-")
    assert [e.id for e in ex] == ["forget-0", "forget-1"]
    assert ex[0].meta["perturbed_answer"] == rec["perturbed_answer"]
    assert ex[0].meta["paraphrased_answer"] == rec["paraphrased_answer"]


# ----- end to end: a model trained on templated data -------------------------------------------
@pytest.fixture(scope="module")
def templated_world(tmp_path_factory):
    """The micro world trained on ``Question: ...\\nAnswer:`` prompts (built once per module)."""
    import os

    from unpact.toyworld import build_toyworld

    cache = os.environ.get("UNPACT_TEST_CACHE") or str(tmp_path_factory.mktemp("templated-cache"))
    return build_toyworld("micro", cache_dir=cache, progress=False, overrides={"template": QA_TEMPLATE})


def _audit_args(world, out, *extra):
    return [
        "audit",
        "--base",
        str(world.base_path),
        "--unlearned",
        f"never={world.retain_only_path}",
        "--retain-only",
        str(world.retain_only_path),
        "--forget",
        str(world.root / "data" / "forget10.json"),
        "--retain",
        str(world.root / "data" / "retain90.json"),
        "--out",
        str(out),
        "--attacks",
        "restate",
        "--attribution",
        "loo",
        "--max-forget",
        "16",
        "--max-retain",
        "16",
        "--n-retain-attacked",
        "4",
        "--circuits",
        "0",
        "--no-lens",
        "--no-progress",
        "--workers",
        "1",
        *extra,
    ]


def _summary(out):
    from unpact.audit import AuditSummary

    return AuditSummary.from_dict(json.loads((out / "summary.json").read_text()))


@pytest.mark.slow
def test_templated_model_is_audited_right_only_with_its_template(templated_world, tmp_path, capsys) -> None:
    from unpact.cli import main

    world = templated_world
    assert world.prompt_format == PromptFormat(template=QA_TEMPLATE)
    # without the template: the audit stops before its work, with the figures and the format that works
    assert main(_audit_args(world, tmp_path / "right")) == 2
    err = capsys.readouterr().err
    assert "prompt format check" in err and "Question: {question}" in err and "--template" in err
    assert not (tmp_path / "right" / "summary.json").exists()
    # the rerun the message asks for, into the same directory: the check passes and the base model knows its facts
    assert main(_audit_args(world, tmp_path / "right", "--template", "Question: {question}\\nAnswer:")) == 0
    right = _summary(tmp_path / "right")
    check = right.prompt_format["base_accuracy"]
    assert check["passed"] and check["forget"] >= 0.8 and check["retain"] >= 0.8
    assert right.prompt_format["template"] == QA_TEMPLATE
    assert right.models["retain_only"].scores.retain_acc.rate >= 0.8
    # --force audits anyway and the summary says the check failed; the retain accuracy shows why
    assert main(_audit_args(world, tmp_path / "forced", "--force")) == 0
    forced = _summary(tmp_path / "forced")
    assert not forced.prompt_format["base_accuracy"]["passed"]
    assert (
        forced.models["retain_only"].scores.retain_acc.rate < right.models["retain_only"].scores.retain_acc.rate - 0.3
    )


@pytest.mark.slow
def test_chat_template_path_end_to_end(templated_world, tmp_path) -> None:
    from unpact.cli import main

    tok_dir = tmp_path / "tokenizer"
    shutil.copytree(templated_world.base_path, tok_dir, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(tok_dir)
    args = _audit_args(templated_world, tmp_path / "chat", "--chat-template", "--tokenizer", str(tok_dir))
    assert main(args) == 0
    s = _summary(tmp_path / "chat")
    assert s.prompt_format["chat"] and s.prompt_format["base_accuracy"]["passed"]
    assert s.prompt_format["example"].startswith(tok.bos_token + "Question: ")
    assert s.models["base"].scores.forget_acc.rate >= 0.8
