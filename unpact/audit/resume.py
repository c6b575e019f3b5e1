"""The audit's resume key: what an output directory's records depend on, its hash and how two keys differ."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from unpact.audit.config import RECORDS_SCHEMA

if TYPE_CHECKING:
    from unpact.audit.config import AuditConfig

__all__ = ["resume_key", "key_hash", "key_differences", "content_hash"]


def content_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (keys sorted; other objects by ``str``): what saved work depends on."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resume_key(
    config: AuditConfig,
    model_hashes: Mapping[str, str],
    forget: Sequence[Any],
    retain: Sequence[Any],
    *,
    attacks: Sequence[Any],
    max_new_tokens: int,
    prompt_format: Mapping[str, Any] | None = None,
    probe_train: Sequence[Any] = (),
) -> dict[str, Any]:
    """What an output directory's records depend on: settings, models, data and the records' schema.

    Args:
        config: The settings (only :meth:`AuditConfig.resume_settings` count).
        model_hashes: Model name -> weights hash.
        forget, retain: The audited items (their full content is hashed, not only their ids).
        attacks: The resolved attacks' configurations.
        max_new_tokens: The resolved number of decoded tokens.
        prompt_format: The prompt format the models are put to (:meth:`unpact.prompts.PromptFormat.to_dict`).
        probe_train: The retain items the probes are fit on (hashed when there are any).

    Returns:
        A JSON-ready dict; :func:`key_hash` gives its hash.
    """
    from unpact.keytokens import stop_list

    return {
        "schema": RECORDS_SCHEMA,
        "settings": {
            **config.resume_settings(),
            "attacks": list(attacks),
            "max_new_tokens": max_new_tokens,
            "prompt_format": dict(prompt_format or {}),
            "stop_list": content_hash(sorted(stop_list(config.stop_words))),  # a file's words, not only its path
        },
        "models": dict(model_hashes),
        "data": {
            "forget": content_hash([e.to_dict() for e in forget]),
            "retain": content_hash([e.to_dict() for e in retain]),
            **({"probe_train": content_hash([e.to_dict() for e in probe_train])} if probe_train else {}),
        },
    }


def key_hash(key: Mapping[str, Any]) -> str:
    """A short stable hash of a :func:`resume_key`."""
    return content_hash(key)


def key_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the entries in which two resume keys differ."""
    out: list[str] = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += key_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out
