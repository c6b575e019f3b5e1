"""One base for every saved result: ``save`` / ``load`` to one bundle, exact ``==``, a kind tag.

A result is a dataclass deriving from :class:`SavedResult`; its fields say how it is stored:

* a field holding an ``np.ndarray`` goes to the bundle's arrays (lossless: values, dtype, shape);
* every other field goes to the bundle's JSON metadata: numbers, strings, ``None``, lists, tuples,
  dicts, and nested dataclasses (``Example``, ``Provenance``, ``EvalRecord``) as dicts of their fields;
* fields with ``init=False`` (derived in ``__post_init__``) are not stored; ``load`` recomputes them.

``load`` rebuilds each JSON value from the field's type annotation (``tuple[int, int]`` gives a tuple
back, ``Example`` an :class:`~unpact.data.Example`), so ``R.load(path) == r`` after ``r.save(path)``.
Field annotations must therefore resolve at run time (no names imported only under ``TYPE_CHECKING``).
The kind tag is the class name, stored in the bundle and checked by :func:`unpact._io.load_bundle`.

Example:
    >>> @dataclass
    ... class Scores(SavedResult):
    ...     names: list[str]
    ...     values: np.ndarray            # (n,) -> the bundle's arrays
    ...     provenance: Provenance | None = None
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from unpact._io import load_bundle, save_bundle
from unpact.errors import DataFileError

__all__ = ["SavedResult", "KeyedHits", "fields_dict"]

R = TypeVar("R", bound="SavedResult")


def fields_dict(obj: Any) -> dict[str, Any]:
    """A dataclass instance's fields as a JSON-ready dict: arrays as lists, objects with ``to_dict`` through it."""
    out: dict[str, Any] = {}
    for name in obj.__dataclass_fields__:
        v = getattr(obj, name)
        out[name] = v.to_dict() if hasattr(v, "to_dict") else v.tolist() if isinstance(v, np.ndarray) else v
    return out


class SavedResult:
    """Mixin for result dataclasses: :meth:`save`, :meth:`load`, ``==`` and the :attr:`kind` tag.

    ``==`` compares every field: arrays by shape, dtype and values (NaN equal to NaN), other fields
    with their own ``==``. The subclass keeps this ``__eq__`` under a plain ``@dataclass`` (it is put
    into the subclass before the decorator runs, and ``@dataclass`` never replaces an ``__eq__`` the
    class defines itself); like any mutable dataclass with ``__eq__``, results are unhashable.
    """

    kind: ClassVar[str] = "SavedResult"
    """The tag stored in every bundle: the class name."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = cls.__name__
        cls.__eq__ = SavedResult.__eq__  # type: ignore[method-assign]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to one ``.npz`` bundle, atomically (see :func:`unpact._io.save_bundle`)."""
        meta: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for f in _stored_fields(type(self)):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
            else:
                meta[f.name] = _to_json(value, f"{self.kind}.{f.name}")
        save_bundle(path, meta, arrays, kind=self.kind)

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """Inverse of :meth:`save`.

        Raises:
            FileNotFoundError: If nothing is saved at ``path``.
            WrongKindError: If the bundle holds another kind of result.
            DataFileError: If the bundle lacks a field this class needs (saved by another version).
        """
        meta, arrays = load_bundle(path, kind=cls.kind)
        hints = _hints(cls)  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        missing = []
        for f in _stored_fields(cls):
            if f.name in arrays:
                kwargs[f.name] = arrays[f.name]
            elif f.name in meta:
                kwargs[f.name] = _from_json(meta[f.name], hints[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                missing.append(f.name)
        if missing:
            raise DataFileError(
                f"the saved {cls.kind} has no {', '.join(missing)}",
                path=path,
                fix="it was saved by another version of unpact; compute it again",
            )
        return cls(**kwargs)

    def __eq__(self, other: object) -> bool:
        """Same class and every field equal (arrays: shape, dtype and values; NaN equal to NaN)."""
        if type(other) is not type(self):
            return NotImplemented
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields)


def _stored_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields a bundle stores: those ``__init__`` takes (derived ``init=False`` fields are recomputed)."""
    fields = [f for f in dataclasses.fields(cls) if f.init]
    if any(f.name == "kind" for f in fields):
        raise TypeError(f"{cls.__name__} has a field named 'kind', which the bundle reserves for its tag")
    return fields


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field annotations of a dataclass (the modules use ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def _same(x: Any, y: Any) -> bool:
    """Exact equality of two field values; arrays by shape, dtype and values, NaN equal to NaN."""
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)) or x.shape != y.shape or x.dtype != y.dtype:
            return False
        return bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return bool(x == y)


def _to_json(value: Any, where: str) -> Any:
    """A field value as JSON: dataclasses become dicts of their ``__init__`` fields, tuples lists."""
    if isinstance(value, np.generic):  # before the built-in types: np.float64 is also a float
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _to_json(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value) if f.init
        }
    if isinstance(value, Mapping):
        return {str(k): _to_json(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    kind = (
        "an array inside another value (only a field's own array is stored)"
        if isinstance(value, np.ndarray)
        else f"a {type(value).__name__}"
    )
    raise TypeError(f"cannot save {where}: it holds {kind}")


def _from_json(data: Any, hint: Any) -> Any:
    """Inverse of :func:`_to_json`, guided by the field's annotation ``hint``."""
    if data is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        return _from_json(data, arms[0]) if len(arms) == 1 else data
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = _hints(hint)
        return hint(
            **{
                f.name: _from_json(data[f.name], hints[f.name])
                for f in dataclasses.fields(hint)
                if f.init and f.name in data
            }
        )
    if origin is tuple or hint is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(x, args[0]) for x in data)
        if args:
            return tuple(_from_json(x, a) for x, a in zip(data, args))
        return tuple(data)
    if origin is list:
        return [_from_json(x, args[0]) for x in data] if args else list(data)
    return data


class KeyedHits:
    """Mixin for results that score the same items under several conditions: ``keys`` names the
    conditions, ``correct`` is ``(n_keys, n_items)`` bool (answered right under each)."""

    keys: list[str]
    correct: np.ndarray

    def hits(self, key: str) -> np.ndarray:
        """``(n_items,)`` answered right under ``key``.

        Raises:
            InputError: An unknown condition (the message lists the saved ones).
        """
        from unpact.errors import InputError

        if key not in self.keys:
            raise InputError(f"no condition {key!r}; saved: {', '.join(self.keys)}", source=type(self).__name__)
        return self.correct[self.keys.index(key)]

    def accuracy(self, key: str) -> float:
        """Share of the items answered right under ``key`` (NaN without items)."""
        x = self.hits(key)
        return float(x.mean()) if x.size else float("nan")
