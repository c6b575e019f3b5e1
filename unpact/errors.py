"""Every error a user can cause, in one hierarchy.

An :class:`UnpactError` says what is wrong (naming the bad value), where it came from (an argument, a
file and line) and how to fix it. The command line prints it as one line and exits with status 2; any
other exception is a bug in unpact and surfaces with its traceback.

Each class also derives from the built-in exception a Python caller would expect (``ValueError``,
``KeyError``, ``FileNotFoundError``), so ``except ValueError`` around a call keeps working.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

_T = TypeVar("_T")

__all__ = [
    "check_disjoint_subjects",
    "UnpactError",
    "InputError",
    "PromptFormatError",
    "UnknownNameError",
    "DataFileError",
    "MissingFileError",
    "ArchitectureError",
    "UnknownArchitectureError",
    "ModelLoadError",
    "AuditDirError",
    "AuditConfigMismatch",
    "WrongKindError",
    "ShardError",
    "UnsupportedFeatureError",
    "check_positive",
    "check_count",
    "check_items",
]


class UnpactError(Exception):
    """Base class: an error the user caused and can fix.

    Args:
        message: What is wrong, naming the bad value.
        source: Where the value came from (``"--max-forget"``, ``"forget.jsonl line 3"``), if known.
        fix: What to do about it, if not obvious from the message.
    """

    def __init__(self, message: str, *, source: str | None = None, fix: str | None = None) -> None:
        self.message = message
        self.source = source
        self.fix = fix
        super().__init__(message)

    def __str__(self) -> str:
        text = f"{self.source}: {self.message}" if self.source else self.message
        if self.fix:
            text = f"{text.rstrip('.')}; {self.fix}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt without calling __init__, so subclasses with keyword-only arguments (path=...) survive
        # pickling: an error raised in a worker process reaches the parent whole
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


def _rebuild_error(cls: type[UnpactError], args: tuple[Any, ...], state: dict[str, Any]) -> UnpactError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class InputError(UnpactError, ValueError):
    """An argument or data value the computation cannot use (empty prompt, bad count, wrong type...)."""


class PromptFormatError(InputError):
    """The base model answers too few items right under the prompt format: most likely the wrong template."""


class UnknownNameError(InputError, KeyError):
    """A name that is not registered (attack, unlearning method, preset, split...); the message lists the valid ones.

    Also a ``KeyError``, like a failed lookup in the registry it names.
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return UnpactError.__str__(self)


class DataFileError(InputError):
    """A data, records or config file that cannot be read: names the file and, where known, the line."""

    def __init__(
        self, message: str, *, path: str | os.PathLike[str], line: int | None = None, fix: str | None = None
    ) -> None:
        self.path = str(path)
        self.line = line
        source = self.path if line is None else f"{self.path} line {line}"
        super().__init__(message, source=source, fix=fix)


class MissingFileError(UnpactError, FileNotFoundError):
    """A file or directory the user named does not exist (also a ``FileNotFoundError``)."""

    def __init__(self, message: str, *, path: str | os.PathLike[str], fix: str | None = None) -> None:
        self.path = str(path)
        super().__init__(message, source=self.path, fix=fix)


class ArchitectureError(UnpactError, ValueError):
    """A model whose architecture unpact cannot hook (or a feature it does not support)."""


class UnknownArchitectureError(ArchitectureError, KeyError):
    """No architecture entry for a ``model_type``; the message says how to register one."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return UnpactError.__str__(self)


class UnsupportedFeatureError(ArchitectureError, NotImplementedError):
    """A known architecture that one technique cannot handle (e.g. edge patching on sandwich norms).

    Also a ``NotImplementedError``: the technique could support it, it does not yet.
    """


class ModelLoadError(UnpactError, ValueError):
    """A model path that does not hold a loadable causal LM (missing, a file, no LM head...)."""


class AuditDirError(UnpactError, ValueError):
    """The audit output directory cannot be used (a file, unwritable, another audit's files, corrupt)."""


class AuditConfigMismatch(AuditDirError):
    """The output directory holds an audit run with other settings, data or models."""


class WrongKindError(UnpactError, ValueError):
    """A saved bundle holds another kind of result than the one asked for."""


class ShardError(UnpactError, RuntimeError):
    """Another rank of a split audit (``torchrun``) stopped or did not answer in time."""


def _int_value(name: str, value: Any, minimum: int, where: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {type(value).__name__} {value!r}", source=where)
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}", source=where)
    return int(value)


def check_positive(name: str, value: Any, *, where: str | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1 (a batch size, a step count...).

    Args:
        name: The argument's name, shown in the error (``"batch_size"``).
        value: What the caller passed.
        where: The function or option it was passed to, shown as the error's source.

    Raises:
        InputError: Naming the argument and the bad value (``bool`` and ``float`` are refused too).
    """
    return _int_value(name, value, 1, where)


def check_count(name: str, value: Any, *, where: str | None = None) -> int:
    """Like :func:`check_positive`, but 0 is allowed (a number of items to keep, ``top_k(0)``)."""
    return _int_value(name, value, 0, where)


def check_items(
    name: str, value: Any, item_type: type[_T], *, where: str | None = None, fix: str | None = None
) -> list[_T]:
    """Return ``value`` as a list of ``item_type`` (examples, prompts...).

    One item where a list is expected (a single ``Example``, a string) and items of another type are
    refused, naming the argument and the offending index.

    Raises:
        InputError: Saying what was given and how to pass a list (``fix`` replaces the default hint).
    """
    kind = item_type.__name__
    if isinstance(value, (item_type, str, bytes)) or not isinstance(value, Iterable):
        raise InputError(
            f"{name} must be a list of {kind} objects, got a single {type(value).__name__}",
            source=where,
            fix=fix or f"wrap it in a list: [{name.rstrip('s')}]",
        )
    items = list(value)
    for i, item in enumerate(items):
        if not isinstance(item, item_type):
            raise InputError(f"{name}[{i}] is {type(item).__name__}, not {kind}", source=where, fix=fix)
    return items


def check_disjoint_subjects(where: str, chosen: Sequence[Any], scored: Sequence[Any]) -> None:
    """Refuse items scored about a subject that the attack (or estimate) was also chosen on.

    Args:
        where: The function checking, for the message.
        chosen: Items the attack is learned, chosen or estimated on (half A).
        scored: Items it is scored on (half B).

    Raises:
        InputError: A subject in both, named, with the fix.
    """
    shared = {e.subject for e in chosen if e.subject} & {e.subject for e in scored if e.subject}
    if shared:
        raise InputError(
            f"{where}: {len(shared)} subject(s) in both the estimate and the scored items, e.g. {sorted(shared)[0]!r}",
            fix="split the forget items by subject (unpact.weights.split_halves)",
        )
