"""Unlearned models saved as PEFT adapters (LoRA and the like) on top of the base model.

Unlearning in practice is often done with LoRA: the "unlearned model" is then an adapter directory
(``adapter_config.json`` + ``adapter_model.safetensors``), not a full checkpoint. :func:`load_adapter`
applies it to a *copy* of the base model (PEFT injects its layers into the module it is given, and the
audited base must stay the base) and merges it, so the result is a plain Hugging Face model that every
tracer hooks like any other. Needs the ``peft`` package (``pip install peft``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

from unpact.errors import InputError, ModelLoadError
from unpact.models import Subject, load_model

logger = logging.getLogger(__name__)

__all__ = ["is_adapter_dir", "load_adapter"]

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding a PEFT adapter (``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_adapter(base: Subject, path: str | os.PathLike[str], *, name: str | None = None) -> Subject:
    """The base model with a PEFT adapter applied and merged, as a new :class:`~unpact.models.Subject`.

    ``base`` is deep-copied first: its weights, mode and flags are left as they are.

    Args:
        base: The base model the adapter was trained on.
        path: The adapter directory.
        name: Name of the new subject (default: the path).

    Returns:
        A subject holding the merged model and the base's tokenizer.

    Raises:
        InputError: ``peft`` is not installed.
        ModelLoadError: ``path`` holds no adapter, or PEFT cannot apply it to this base model.
    """
    path = str(path)
    if not is_adapter_dir(path):
        raise ModelLoadError(f"no {ADAPTER_CONFIG} here: not a PEFT adapter directory", source=path)
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise InputError(
            "this model is a PEFT adapter and the peft package is not installed",
            source=path,
            fix="pip install peft",
        ) from exc
    cfg: dict[str, Any] = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    logger.info(
        "applying the %s adapter %s (trained on %s) to a copy of %s",
        cfg.get("peft_type", "?"),
        path,
        cfg.get("base_model_name_or_path") or "?",
        base.name,
    )
    model = copy.deepcopy(base.model)
    try:
        merged = PeftModel.from_pretrained(model, path).merge_and_unload()
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ModelLoadError(
            f"PEFT cannot apply this adapter to the base model {base.name!r} ({exc})",
            source=path,
            fix="give the base model the adapter was trained on (--base)",
        ) from exc
    merged.eval()
    return load_model(merged, base.tokenizer, name=name or path, prompt_format=base.prompt_format)
