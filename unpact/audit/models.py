"""The models of one audit: :class:`Models` (base, retain-only control, unlearned models by name)."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from unpact.audit.auditdir import BASE, RETAIN_ONLY, check_model_name
from unpact.errors import InputError, ModelLoadError
from unpact.models import Subject
from unpact.prompts import PromptFormat

logger = logging.getLogger(__name__)

__all__ = ["Models", "ModelLike"]

ModelLike = Union[Subject, str, "os.PathLike[str]"]


def _resolve(
    model: ModelLike, name: str, base: Subject | None = None, load: Mapping[str, Any] | None = None
) -> Subject:
    if isinstance(model, Subject):
        return model
    if isinstance(model, (str, os.PathLike)):
        from unpact.adapters import is_adapter_dir, load_adapter
        from unpact.models import load_model

        if base is not None and is_adapter_dir(model):  # a PEFT adapter: applied to a copy of the base
            return load_adapter(base, model, name=str(model))

        if not Path(model).exists():
            raise ModelLoadError(
                f"no model directory at {str(model)!r}",
                source=f"model {name!r}",
                fix="give the directory a Hugging Face model was saved to (save_pretrained)",
            )
        return load_model(str(model), **dict(load or {}))
    raise InputError(
        f"expected a Subject or a model directory, got {type(model).__name__}",
        source=f"model {name!r}",
        fix="load it with unpact.load_model(...) or pass its directory",
    )


@dataclass(init=False)
class Models:
    """The models an audit compares.

    Args:
        base: The model before unlearning (a :class:`~unpact.models.Subject` or a model directory).
        unlearned: Name -> unlearned model: a subject, a model directory, or a PEFT adapter directory
            (applied to a copy of the base, see :mod:`unpact.adapters`). Names are safe path components (see
            :func:`unpact.audit.auditdir.check_model_name`); ``base`` and ``retain_only`` are reserved.
        retain_only: A model trained without the forget facts: the control of every test.
        tokenizer: For model directories: a tokenizer directory (default: each model's own).
        device: For model directories: where to load them (``"cpu"``, ``"cuda"``...).
        dtype: For model directories: the weights' dtype (``"float32"``, ``"bfloat16"``...).
        trust_remote_code: For model directories: allow custom model code (off by default).
        device_map: For model directories: ``"auto"`` or ``{module: device}`` to split a model over devices
            (accelerate; see :func:`unpact.load_model` and docs/scale.md).
        max_memory: For model directories: memory per device for ``device_map="auto"`` (``{0: "20GiB", ...}``).
        offload_folder: For model directories: where ``"disk"`` entries of the device map are kept.

    Raises:
        InputError: A bad name, or a model whose tokenizer differs from the base model's.
        ModelLoadError: A path that does not hold a model.
    """

    base: Subject
    unlearned: dict[str, Subject]
    retain_only: Subject | None

    def __init__(
        self,
        base: ModelLike,
        unlearned: Mapping[str, ModelLike] | None = None,
        retain_only: ModelLike | None = None,
        *,
        tokenizer: str | os.PathLike[str] | None = None,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        device_map: str | dict[str, Any] | None = None,
        max_memory: dict[Any, Any] | str | None = None,
        offload_folder: str | None = None,
    ) -> None:
        unlearned = dict(unlearned or {})
        for n in unlearned:
            check_model_name(n)
        paths = {n: os.path.realpath(m) for n, m in unlearned.items() if isinstance(m, (str, os.PathLike))}
        if isinstance(retain_only, (str, os.PathLike)):
            ro = os.path.realpath(retain_only)
            for n, p in paths.items():
                if p == ro:
                    logger.warning(
                        "the unlearned model %r and the retain-only model are the same directory "
                        "(%s): the model is its own control",
                        n,
                        p,
                    )
        placement = {"device_map": device_map, "max_memory": max_memory, "offload_folder": offload_folder}
        load = {
            "tokenizer": tokenizer,
            "device": device,
            "dtype": dtype,
            "trust_remote_code": trust_remote_code,
            **{k: v for k, v in placement.items() if v is not None},
        }
        self.base = _resolve(base, BASE, load=load)
        self.retain_only = None if retain_only is None else _resolve(retain_only, RETAIN_ONLY, self.base, load)
        self.unlearned = {n: _resolve(m, n, self.base, load) for n, m in unlearned.items()}
        self._check_tokenizers()

    def with_format(self, fmt: PromptFormat) -> Models:
        """The same models (shared, not copied) all put to in the prompt format ``fmt``."""
        out = copy.copy(self)
        out.base = self.base.with_format(fmt)
        out.retain_only = None if self.retain_only is None else self.retain_only.with_format(fmt)
        out.unlearned = {n: m.with_format(fmt) for n, m in self.unlearned.items()}
        return out

    def _check_tokenizers(self) -> None:
        from unpact.data import check_same_tokenizer

        for n, m in self.items():
            if n != BASE:
                try:
                    check_same_tokenizer(self.base.tokenizer, m.tokenizer, allow_added=True)
                except InputError as exc:
                    raise InputError(f"model {n!r}: {exc}") from exc

    def items(self) -> Iterator[tuple[str, Subject]]:
        """``(name, model)``: the base, the retain-only model (if any), then the unlearned models."""
        yield BASE, self.base
        if self.retain_only is not None:
            yield RETAIN_ONLY, self.retain_only
        yield from self.unlearned.items()

    @property
    def names(self) -> list[str]:
        """Model names in audit order."""
        return [n for n, _ in self.items()]

    def __getitem__(self, name: str) -> Subject:
        return dict(self.items())[name]

    def role(self, name: str) -> Literal["base", "retain_only", "unlearned"]:
        """``base``, ``retain_only`` or ``unlearned``."""
        if name == BASE:
            return "base"
        return "retain_only" if name == RETAIN_ONLY else "unlearned"

    def control_for(self, name: str) -> str | None:
        """The control model of ``name``: the retain-only model for unlearned models, else ``None``."""
        return RETAIN_ONLY if self.retain_only is not None and self.role(name) == "unlearned" else None

    def weights_hashes(self) -> dict[str, str]:
        """Model name -> weights hash."""
        return {n: m.weights_hash() for n, m in self.items()}
