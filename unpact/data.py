"""Question/answer examples and their encoding with exact prompt and answer token spans.

The unit of analysis in unpact is an :class:`Example`: a prompt (question), the answer the model
should give, and optional metadata (the subject it is about, known keywords). :func:`encode`
tokenizes ``prompt + separator + answer`` and returns the *exact* spans: the answer tokens are the
ones the model would generate after the prompt tokens, so teacher-forced scores and generation
agree. :func:`encode_batch` right-pads many examples into one tensor.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from unpact.errors import DataFileError, InputError, MissingFileError
from unpact.prompts import PromptFormat
from unpact.tokenizer_check import check_same_tokenizer

logger = logging.getLogger(__name__)

__all__ = [
    "Example",
    "Encoded",
    "Batch",
    "load_examples",
    "save_examples",
    "encode",
    "encode_batch",
    "check_same_tokenizer",
    "InputError",
]


@dataclass(frozen=True)
class Example:
    """One question/answer pair.

    Attributes:
        id: Stable identifier (used to resume audits and to pair results).
        prompt: The question or prompt text, as the model sees it.
        answer: The gold answer text (what the model should continue with).
        subject: The entity the fact is about, if known (e.g. a person's name).
        keywords: Words in the prompt known to carry the fact (optional).
        meta: Free metadata (split, attribute, ...); JSON-serialisable.
        template: This item's own prompt template (``"Q: {question}\\nA:"``), overriding the model's
            (:class:`unpact.prompts.PromptFormat`); ``None``: the model's format. A data file gives it
            per item (a ``template`` field) or for the whole file (``{"template": ..., "data": [...]}``).
    """

    id: str
    prompt: str
    answer: str
    subject: str | None = None
    keywords: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    template: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InputError(f"example {self.id!r}: the prompt is empty; give the question text")
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise InputError(f"example {self.id!r}: the answer is empty; give the gold answer text")
        if isinstance(self.keywords, str):  # one keyword, not its characters
            object.__setattr__(self, "keywords", (self.keywords,))
        elif not isinstance(self.keywords, tuple):
            object.__setattr__(self, "keywords", tuple(self.keywords))
        if self.template is not None:
            try:
                PromptFormat(template=self.template)
            except InputError as exc:
                raise InputError(f"example {self.id!r}: {exc.message}", fix=exc.fix) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (TOFU-style ``question``/``answer`` keys plus unpact's extras)."""
        d = asdict(self)
        d["question"] = d.pop("prompt")
        d["keywords"] = list(self.keywords)
        d["meta"] = dict(self.meta)
        if self.template is None:
            del d["template"]
        return d

    def with_prompt(self, prompt: str, **meta: Any) -> Example:
        """A copy with another prompt (used by attacks); ``meta`` entries are added."""
        return dataclasses.replace(self, prompt=prompt, meta={**self.meta, **meta})


_PROMPT_KEYS = ("question", "prompt", "input", "query")
_ANSWER_KEYS = ("answer", "target", "output", "response")


def _from_record(rec: Any, index: int, where: str, id_prefix: str, template: str | None = None) -> Example:
    """One record -> :class:`Example`; ``where`` names the record in errors (file and line).

    ``template`` is the file's prompt template, for records without their own.
    """
    if isinstance(rec, Example):
        return rec if rec.template is not None or template is None else dataclasses.replace(rec, template=template)
    if isinstance(rec, (tuple, list)) and len(rec) == 2:
        return Example(f"{id_prefix}{index}", str(rec[0]), str(rec[1]), template=template)
    if not isinstance(rec, Mapping):
        raise InputError(
            f"expected a dict with 'question'/'answer' keys or a (prompt, answer) pair, got {type(rec).__name__}",
            source=where,
        )
    prompts = [k for k in _PROMPT_KEYS if k in rec]
    answers = [k for k in _ANSWER_KEYS if k in rec]
    if not prompts or not answers:
        raise InputError(
            f"needs a prompt key (one of {list(_PROMPT_KEYS)}) and an answer key (one of "
            f"{list(_ANSWER_KEYS)}); found keys {sorted(rec)}",
            source=where,
        )
    for kind, keys in (("prompt", prompts), ("answer", answers)):
        if len(keys) > 1:
            raise InputError(
                f"has several {kind} keys {keys}; unpact would not know which to use",
                source=where,
                fix="keep one of them (or rename the others, which then go to meta)",
            )
    prompt, answer = rec[prompts[0]], rec[answers[0]]
    for key, value in ((prompts[0], prompt), (answers[0], answer)):
        if not isinstance(value, str):
            hint = (
                " (several gold answers: give one per record, or keep the others in another field such as "
                "'paraphrased_answer')"
                if isinstance(value, (list, tuple))
                else ""
            )
            raise InputError(
                f"{key!r} must be a string, got {type(value).__name__} {str(value)[:60]!r}{hint}", source=where
            )
    known = set(_PROMPT_KEYS) | set(_ANSWER_KEYS) | {"id", "subject", "keywords", "meta", "template"}
    own = rec.get("template")
    if own is not None and not isinstance(own, str):
        raise InputError(f"'template' must be a string holding {{question}}, got {own!r}", source=where)
    meta = dict(rec.get("meta") or {})
    meta.update({k: v for k, v in rec.items() if k not in known})
    raw = rec.get("keywords") or ()
    keywords = (raw,) if isinstance(raw, str) else raw
    if not isinstance(keywords, (list, tuple)) or not all(isinstance(k, str) for k in keywords):
        raise InputError(f"'keywords' must be a list of strings, got {raw!r}", source=where)
    try:
        return Example(
            id=str(rec["id"]) if "id" in rec else f"{id_prefix}{index}",
            prompt=prompt,
            answer=answer,
            subject=rec.get("subject"),
            keywords=tuple(keywords),
            meta=meta,
            template=own if own is not None else template,
        )
    except InputError as exc:
        raise InputError(str(exc), source=where) from exc


def load_examples(
    source: str | os.PathLike[str] | Iterable[Any], *, id_prefix: str = "", template: str | None = None
) -> list[Example]:
    """Load examples from a JSON / JSONL file (TOFU style) or a list of dicts / pairs / Examples.

    A JSON file may hold a list of records or ``{"data": [...]}``, with a prompt template for all its
    records as ``{"template": "Question: {question}\\nAnswer:", "data": [...]}``; a record may give its
    own ``template``. Records need one prompt key
    (``question``, ``prompt``, ``input`` or ``query``) and one answer key (``answer``, ``target``,
    ``output`` or ``response``), both strings; other keys go to ``meta``. A record without an ``id``
    gets ``id_prefix`` + its index (TOFU files have no ids: load the forget and retain files with
    different prefixes, e.g. ``"forget-"`` and ``"retain-"``, so their ids do not collide).
    TOFU / open-unlearning files load as they are: their extra fields (``paraphrased_answer``,
    ``perturbed_answer``, ...) go to ``meta``.

    Args:
        source: A file path, or records.
        id_prefix: Prefix of the ids given to records without one.
        template: Prompt template for records that name none (a file's own ``template`` wins).

    Raises:
        DataFileError: A missing, unreadable or malformed file (names the file and line), or a
            directory given as a data file.
        InputError: For malformed records or duplicate ids (naming the record).
    """
    where: list[str]
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise MissingFileError("no such file", path=path, fix="give the path of a JSON or JSONL file of items")
        if path.is_dir():
            raise DataFileError(
                "is a directory, not a data file", path=path, fix="give the path of a JSON or JSONL file of items"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataFileError(
                "is not UTF-8 text (a model file?)", path=path, fix="give a JSON or JSONL file of items"
            ) from exc
        if path.suffix == ".jsonl":
            records: Any = []
            where = []
            for no, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataFileError(
                        f"not valid JSON ({exc.msg})", path=path, line=no, fix="one JSON object per line"
                    ) from exc
                where.append(f"{path} line {no}")
        else:
            try:
                records = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataFileError(
                    f"not valid JSON ({exc.msg})", path=path, line=exc.lineno, fix="use .jsonl for one record per line"
                ) from exc
            if isinstance(records, Mapping):
                file_template = records.get("template")
                if file_template is not None and not isinstance(file_template, str):
                    raise DataFileError(f"'template' must be a string, got {file_template!r}", path=path)
                template = file_template if file_template is not None else template
                records = records.get("data", records.get("examples"))
            if not isinstance(records, list):
                raise DataFileError("expected a list of records or {'data': [...]}", path=path)
            where = [f"{path} record {i}" for i in range(len(records))]
    else:
        if isinstance(source, (Mapping, bytes)):
            raise InputError(
                f"expected a path or a list of records, got {type(source).__name__}", source="load_examples"
            )
        records = list(source)
        where = [f"record {i}" for i in range(len(records))]
    examples = [_from_record(r, i, w, id_prefix, template) for i, (r, w) in enumerate(zip(records, where))]
    seen: dict[str, str] = {}
    for ex, w in zip(examples, where):
        if ex.id in seen:
            raise InputError(
                f"duplicate example id {ex.id!r} (first at {seen[ex.id]})", source=w, fix="ids must be unique"
            )
        seen[ex.id] = w
    return examples


def save_examples(examples: Sequence[Example], path: str | os.PathLike[str]) -> None:
    """Write examples as a TOFU-style JSON list (round-trips through :func:`load_examples`)."""
    Path(path).write_text(json.dumps([e.to_dict() for e in examples], indent=1, ensure_ascii=False), encoding="utf-8")


@dataclass(frozen=True)
class Encoded:
    """One example tokenized with exact spans.

    Attributes:
        input_ids: ``(seq,)`` prompt ids followed by answer ids.
        prompt_span: ``(start, stop)`` of the question's tokens in the prompt (after BOS and the template's
            opening text; ``stop`` is the prompt's end unless the template adds text after the question).
        answer_span: ``(start, stop)`` of the answer tokens; ``stop == len(input_ids)``.
        boundary_merged: True if tokenizing the joined text merged prompt and answer tokens, so
            the answer was tokenized on its own to keep the prompt tokens intact.
        prompt_text: The prompt as the model reads it (the question in its template and chat turns).
        question_chars: Per prompt token, its ``(start, stop)`` characters in the *question*
            (``example.prompt``); ``(0, 0)`` for BOS, template and chat tokens.
    """

    input_ids: torch.Tensor
    prompt_span: tuple[int, int]
    answer_span: tuple[int, int]
    boundary_merged: bool = False
    prompt_text: str = ""
    question_chars: tuple[tuple[int, int], ...] = ()

    @property
    def prompt_ids(self) -> torch.Tensor:
        """``(n_prompt,)`` ids the model reads before answering (including BOS if any)."""
        return self.input_ids[: self.answer_span[0]]

    @property
    def answer_ids(self) -> torch.Tensor:
        """``(n_answer,)`` answer ids."""
        return self.input_ids[self.answer_span[0] : self.answer_span[1]]

    def positions_of(self, spans: Sequence[tuple[Any, ...]], question: str) -> list[int]:
        """Prompt token indices that cover part of the given character spans of the question.

        Args:
            spans: ``(start, stop, ...)`` character spans in ``question`` (extra fields ignored).
            question: The example's question (``example.prompt``); a token counts only where it shares
                more than whitespace with a span.

        Returns:
            Sorted indices into :attr:`prompt_ids` (BOS and template tokens never count).
        """
        out = []
        for i, (a, b) in enumerate(self.question_chars):
            if b > a and any(
                a < sp[1] and b > sp[0] and question[max(a, sp[0]) : min(b, sp[1])].strip() for sp in spans
            ):
                out.append(i)
        return out


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _prompt(tokenizer: Any, question: str, fmt: PromptFormat) -> tuple[str, int, list[int]]:
    """``(text, question_start, ids)`` of a question rendered in ``fmt`` (no EOS at the end)."""
    text, q0 = fmt.render(question, tokenizer)
    ids = _ids(tokenizer, text, not fmt.chat)  # a rendered chat template already holds its special tokens
    eos = getattr(tokenizer, "eos_token_id", None)
    if ids[-1:] == [eos] and not text.endswith(str(tokenizer.eos_token)):
        ids = ids[:-1]  # tokenizers that append EOS: the answer follows the prompt, not EOS
    return text, q0, ids


def encode_prompt(tokenizer: Any, question: str, *, fmt: PromptFormat | None = None) -> torch.Tensor:
    """``(n_prompt,)`` ids of a question in a prompt format, exactly as :func:`encode` puts it before an answer."""
    return torch.tensor(_prompt(tokenizer, question, fmt if fmt is not None else PromptFormat())[2], dtype=torch.long)


def encode(
    tokenizer: Any,
    example: Example,
    *,
    fmt: PromptFormat | None = None,
    max_length: int | None = None,
) -> Encoded:
    """Tokenize one example in a prompt format, with exact prompt, question and answer spans.

    The prompt is the example's question rendered by ``fmt`` (its template, then its chat template
    if asked), tokenized as a whole; the answer follows after ``fmt``'s separator. ``prompt_span`` is
    the span of the *question's* tokens inside the prompt: what attributions cover and attacks may
    touch. Use :meth:`unpact.models.Subject.encode`, which passes the model's own format.

    Args:
        tokenizer: A Hugging Face tokenizer.
        example: The example; its ``template`` (if set) replaces ``fmt``'s.
        fmt: The prompt format (default: the bare question, :class:`~unpact.prompts.PromptFormat`).
        max_length: The model's context length; longer sequences raise.

    Returns:
        The :class:`Encoded` example.

    Raises:
        InputError: If the sequence exceeds ``max_length``, the format asks for a chat template the
            tokenizer lacks, or the answer tokenizes to nothing.
    """
    from unpact.words import token_char_spans

    fmt = (fmt if fmt is not None else PromptFormat()).for_template(example.template)
    text, q0, prompt_ids = _prompt(tokenizer, example.prompt, fmt)
    special = not fmt.chat
    eos = getattr(tokenizer, "eos_token_id", None)
    sep = fmt.separator(text, example.answer)
    full = _ids(tokenizer, text + sep + example.answer, special)
    merged = full[: len(prompt_ids)] != prompt_ids
    if not merged:
        answer_ids = full[len(prompt_ids) :]
        if full[-1:] == [eos] and not example.answer.endswith(str(tokenizer.eos_token)):
            answer_ids = answer_ids[:-1]  # tokenizers that append EOS: the answer is not the EOS.
    else:
        answer_ids = _ids(tokenizer, sep + example.answer, special=False)
        logger.debug("example %s: prompt/answer tokens merge at the join; answer tokenized alone", example.id)
    if not answer_ids:
        raise InputError(f"example {example.id!r}: the answer {example.answer!r} tokenizes to no tokens")
    ids = prompt_ids + answer_ids
    if max_length is not None and len(ids) > max_length:
        raise InputError(
            f"example {example.id!r} is {len(ids)} tokens, longer than the model's context ({max_length}); "
            "shorten the prompt or answer"
        )
    q1 = q0 + len(example.prompt)
    chars = token_char_spans(tokenizer, text, prompt_ids, special=special)
    question_chars = tuple(
        (max(a, q0) - q0, min(b, q1) - q0) if b > a and a < q1 and b > q0 else (0, 0) for a, b in chars
    )
    inside = [i for i, (a, b) in enumerate(question_chars) if b > a]
    if not inside:
        raise InputError(f"example {example.id!r}: no prompt token covers the question {example.prompt!r}")
    return Encoded(
        input_ids=torch.tensor(ids, dtype=torch.long),
        prompt_span=(inside[0], inside[-1] + 1),
        answer_span=(len(prompt_ids), len(ids)),
        boundary_merged=merged,
        prompt_text=text,
        question_chars=question_chars,
    )


@dataclass(frozen=True)
class Batch:
    """Many encoded examples right-padded into one tensor.

    Attributes:
        input_ids: ``(batch, seq)`` ids, right-padded with the pad token.
        attention_mask: ``(batch, seq)``; 1 on real tokens.
        items: The per-example :class:`Encoded` (spans index into each row).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    items: tuple[Encoded, ...]

    def answer_mask(self) -> torch.Tensor:
        """``(batch, seq)`` bool, True at positions whose *next* token is an answer token.

        Position ``t`` predicts token ``t + 1``: the mask marks ``answer_start - 1 .. answer_stop - 2``.
        """
        mask = torch.zeros(self.input_ids.shape, dtype=torch.bool)
        for i, e in enumerate(self.items):
            mask[i, e.answer_span[0] - 1 : e.answer_span[1] - 1] = True
        return mask


def fill_id(tokenizer: Any) -> int:
    """An id to right-pad with where the padding is masked out: pad, else eos, else 0 (any id will do)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, or a clear error if batching needs one and it has none."""
    pid = getattr(tokenizer, "pad_token_id", None)
    if pid is None:
        raise InputError(
            "the tokenizer has no pad token but several examples must be batched; set one, e.g. "
            "tokenizer.pad_token = tokenizer.eos_token"
        )
    return int(pid)


def encode_batch(
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    fmt: PromptFormat | None = None,
    max_length: int | None = None,
    fill: int | None = None,
) -> Batch:
    """Encode and right-pad examples (see :func:`encode`).

    Args:
        fill: Id to pad with. Default: the tokenizer's pad token, and an :class:`InputError` if it has
            none and the examples differ in length. Internal callers whose padding is masked pass
            :func:`fill_id` so that tokenizers without a pad token (GPT-2, Llama) work.
    """
    if not examples:
        raise InputError("no examples given")
    items = tuple(encode(tokenizer, e, fmt=fmt, max_length=max_length) for e in examples)
    width = max(len(e.input_ids) for e in items)
    if fill is None:
        fill = pad_id(tokenizer) if len({len(e.input_ids) for e in items}) > 1 else 0
    ids = torch.full((len(items), width), fill, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, e in enumerate(items):
        ids[i, : len(e.input_ids)] = e.input_ids
        mask[i, : len(e.input_ids)] = 1
    return Batch(ids, mask, items)
