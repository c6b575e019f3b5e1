"""How a question becomes the text a model reads: :class:`PromptFormat`.

A model answers well only in the format it was trained with: ``"Question: {question}\\nAnswer:"``
with the answer after a space, a chat template with a system prompt, or the bare question. The
format belongs to the model (:attr:`unpact.models.Subject.prompt_format`), and every encoding goes
through it (:func:`unpact.data.encode`): tracers, attacks, evaluation, the unlearning methods and the
toy world. An :class:`~unpact.data.Example`'s ``prompt`` stays the *question*: attacks rewrite the
question, never the template around it, and attributions cover the question's tokens.

Example:
    >>> fmt = PromptFormat(template="Question: {question}\\nAnswer:")
    >>> fmt.render("Where was Ada born?")
    ('Question: Where was Ada born?\\nAnswer:', 10)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unpact.errors import InputError

__all__ = ["PromptFormat", "QUESTION_FIELD"]

#: The placeholder a template must hold exactly once.
QUESTION_FIELD = "{question}"

#: Stands in for the user message while a chat template is rendered, so the question can be found in
#: the result (private-use characters no template adds or strips).
_SENTINEL = "\ue000unpact-question\ue001"


@dataclass(frozen=True)
class PromptFormat:
    """The prompt format of a model: template, answer separator, chat template.

    Attributes:
        template: Text around the question, holding ``{question}`` once (other braces are literal).
            The default ``"{question}"`` is the bare question.
        answer_sep: Text between the prompt and the answer. ``None``: a space, unless the prompt ends or
            the answer starts with whitespace (then nothing).
        chat: Wrap the templated question as the user turn of the tokenizer's chat template, followed by
            the generation prompt; the answer is the assistant's text.
        system_prompt: A system turn before the user turn (with ``chat`` only).

    Raises:
        InputError: A template without ``{question}`` (or with it twice), a system prompt without
            ``chat``, or a separator that is not a string.
    """

    template: str = QUESTION_FIELD
    answer_sep: str | None = None
    chat: bool = False
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.template, str) or self.template.count(QUESTION_FIELD) != 1:
            raise InputError(
                f"the prompt template {self.template!r} must hold {QUESTION_FIELD} exactly once",
                source="prompt template (--template)",
                fix='e.g. --template "Question: {question}\\nAnswer:"',
            )
        if self.answer_sep is not None and not isinstance(self.answer_sep, str):
            raise InputError(
                f"the answer separator must be text, got {type(self.answer_sep).__name__}",
                source="answer separator (--answer-sep)",
            )
        if self.system_prompt is not None and not self.chat:
            raise InputError(
                "a system prompt is only used with the chat template",
                source="system prompt (--system-prompt)",
                fix="add --chat-template (chat=True), or drop the system prompt",
            )

    def replace(self, **changes: Any) -> PromptFormat:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def for_template(self, template: str | None) -> PromptFormat:
        """This format with another template (an item's own), or itself when ``template`` is ``None``."""
        return self if template is None or template == self.template else self.replace(template=template)

    def fill(self, question: str) -> tuple[str, int]:
        """The template filled with ``question``, and the question's first character in it."""
        start = self.template.index(QUESTION_FIELD)
        return self.template[:start] + question + self.template[start + len(QUESTION_FIELD) :], start

    def render(self, question: str, tokenizer: Any = None) -> tuple[str, int]:
        """The prompt text the model reads, and where the question starts in it.

        Args:
            question: The question (an :class:`~unpact.data.Example`'s ``prompt``).
            tokenizer: Needed with ``chat`` (its chat template renders the turns).

        Returns:
            ``(text, start)``: ``text[start : start + len(question)] == question``.

        Raises:
            InputError: ``chat`` with a tokenizer that has no chat template, or a chat template that
                drops or rewrites the user message.
        """
        filled, start = self.fill(question)
        if not self.chat:
            return filled, start
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise InputError(
                "the chat template is asked for, but this tokenizer has none",
                source="prompt format (--chat-template)",
                fix="give a plain template (--template) instead, or a tokenizer with a chat template",
            )
        marked = self._chat(tokenizer, _SENTINEL)
        if marked.count(_SENTINEL) != 1:
            raise InputError(
                "the tokenizer's chat template does not place the user message once, unchanged",
                source="prompt format (--chat-template)",
                fix="give a plain template (--template) that writes the chat turns yourself",
            )
        at = marked.index(_SENTINEL)
        real = self._chat(tokenizer, filled)  # what the template makes of the real message (trim, ...)
        if real == marked[:at] + filled + marked[at + len(_SENTINEL) :]:
            return real, at + start
        found = real.find(question, at)  # the template changed the message: find the question in it
        if found < 0 or real.count(question) != 1:
            raise InputError(
                f"the tokenizer's chat template changes the user message so that the question {question[:60]!r} "
                "cannot be found in it",
                source="prompt format (--chat-template)",
                fix="give a plain template (--template) that writes the chat turns yourself",
            )
        return real, found

    def _chat(self, tokenizer: Any, content: str) -> str:
        """The chat template's text for one user message (after the system turn, if any)."""
        turns = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
        turns.append({"role": "user", "content": content})
        try:
            chat = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja2's TemplateError and raise_exception(...) from the template itself
            raise InputError(
                f"the tokenizer's chat template refuses these turns ({type(exc).__name__}: {exc})",
                source="prompt format (--chat-template)",
                fix="drop --system-prompt if the template has no system role, or give a plain --template",
            ) from exc
        if not isinstance(chat, str):
            raise InputError(
                f"the tokenizer's chat template returned {type(chat).__name__}, not text",
                source="prompt format (--chat-template)",
            )
        return chat

    def separator(self, prompt_text: str, answer: str) -> str:
        """The text between a rendered prompt and its answer (see ``answer_sep``)."""
        if self.answer_sep is not None:
            return self.answer_sep
        return "" if prompt_text[-1:].isspace() or answer[:1].isspace() else " "

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PromptFormat:
        """Inverse of :meth:`to_dict` (``None``: the plain format); unknown keys are an error naming them."""
        if d is None:
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown prompt-format fields {unknown}", fix=f"valid fields: {sorted(names)}")
        return cls(**dict(d))
