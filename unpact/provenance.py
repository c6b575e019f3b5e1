"""Provenance recorded in every result: which model, which weights, which method and arguments."""

from __future__ import annotations

import datetime as _dt
import functools
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

__all__ = ["Provenance"]


@dataclass(frozen=True)
class Provenance:
    """Where a result came from.

    Attributes:
        model: The subject's name (path or hub-style id).
        weights_hash: :func:`unpact.models.weights_hash` of the model when the result was made.
        method: The tracer / procedure name (e.g. ``"integrated_gradients"``).
        args: Its arguments, JSON-serialisable.
        unpact_version: Package version that produced it.
        created: ISO-8601 UTC time stamp.
    """

    model: str
    weights_hash: str
    method: str
    args: dict[str, Any] = field(default_factory=dict)
    unpact_version: str = ""
    created: str = ""

    @classmethod
    def of(cls, subject: Any, method: str, **args: Any) -> Provenance:
        """Provenance for a result computed on ``subject`` (a :class:`~unpact.models.Subject`)."""
        return cls(
            model=str(subject.name),
            weights_hash=subject.weights_hash(),
            method=method,
            args={k: _jsonable(v) for k, v in args.items()},
            unpact_version=_unpact_version(),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Provenance:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


@functools.cache
def _unpact_version() -> str:
    """The installed distribution's version (from ``pyproject.toml``), ``""`` when not installed.

    Read from the package metadata rather than ``unpact.__version__``, so that no module inside the
    package imports the ``unpact`` facade.
    """
    try:
        return metadata.version("unpact")
    except metadata.PackageNotFoundError:
        return ""


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return repr(v)
