"""The built-in text attacks: prompt rewrites ``fn(example, keywords) -> Example`` that emphasise key words."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from unpact.attacks.keywords import _present, _replace_keywords
from unpact.data import Example

__all__ = ["restate", "repeat", "quote", "capitalise", "front"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _public(fn: _F) -> _F:
    """Name ``fn`` by where users import it: ``unpact.attacks.<name>``.

    :meth:`~unpact.attacks.Attack.config` records that name, and so does the audit's argument
    hash; it stays what it was before ``unpact.attacks`` became a package.
    """
    fn.__module__ = "unpact.attacks"
    return fn


@_public
def restate(example: Example, keywords: Sequence[str]) -> Example:
    """``"Focus on: X, Y. <prompt>"``: restate the key words before the question."""
    words = _present(example, keywords)  # only key words found in the prompt
    if not words:
        return example
    return example.with_prompt(f"Focus on: {', '.join(dict.fromkeys(words))}. {example.prompt}")


@_public
def repeat(example: Example, keywords: Sequence[str]) -> Example:
    """Repeat every key word in place: ``"... X X ..."``."""
    return example.with_prompt(_replace_keywords(example.prompt, keywords, lambda w: f"{w} {w}"))


@_public
def quote(example: Example, keywords: Sequence[str]) -> Example:
    """Put every key word in double quotes."""
    return example.with_prompt(_replace_keywords(example.prompt, keywords, lambda w: f'"{w}"'))


@_public
def capitalise(example: Example, keywords: Sequence[str]) -> Example:
    """Write every key word in upper case."""
    return example.with_prompt(_replace_keywords(example.prompt, keywords, str.upper))


@_public
def front(example: Example, keywords: Sequence[str]) -> Example:
    """Move the key words to the front: ``"X, Y: <prompt>"`` (the question itself is kept)."""
    words = _present(example, keywords)  # only key words found in the prompt
    if not words:
        return example
    return example.with_prompt(f"{', '.join(dict.fromkeys(words))}: {example.prompt}")
