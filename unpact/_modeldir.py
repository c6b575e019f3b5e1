"""What a model directory must hold, checked before transformers reads it, and the checks of a loaded model.

:func:`unpact.models.load_model` calls these so that a wrong path fails with a :class:`~unpact.errors.ModelLoadError`
saying what it found and what it expected, before any weights are read: nothing at the path, a file (a
``config.json``, a data file), a directory without a model config or weights, a base model saved without its
language-model head (transformers would fill the head with random values), a missing or empty tokenizer, and
weights holding NaN or inf.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unpact._arch import supported_architectures
from unpact.errors import MissingFileError, ModelLoadError

logger = logging.getLogger(__name__)

__all__ = ["check_model_dir", "from_pretrained", "load_tokenizer", "check_loaded", "causal_lm_class"]

_LOCAL_ONLY = (
    "unpact loads local models: pass the directory a causal LM was saved to with save_pretrained "
    "(config.json + *.safetensors + tokenizer files); download a hub model first "
    "(huggingface-cli download ORG/NAME --local-dir DIR)"
)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.txt",
)


def check_model_dir(path: str) -> Path:
    """The model directory ``path`` names, after checking it holds a config and weights (before any loading).

    Raises:
        MissingFileError: Nothing at ``path``.
        ModelLoadError: A file, or a directory without a model config or weights (saying what it holds).
        UnknownArchitectureError: The config's ``model_type`` is not registered.
    """
    p = Path(path).expanduser()
    if not p.exists():
        where = f" (looked at {p.resolve()})" if str(p.resolve()) != path else ""
        fix = _LOCAL_ONLY
        if re.fullmatch(r"[\w.-]+/[\w.-]+", path) and not path.startswith("."):
            fix = fix.replace("ORG/NAME", path)  # looks like a hub id: show the exact download command
        raise MissingFileError(f"no model directory{where}", path=path, fix=fix)
    if p.is_file():
        if p.name == "config.json":
            raise ModelLoadError(
                "this is a model's config.json file, not its directory",
                source=path,
                fix=f"pass the directory that holds it: {str(p.parent)!r}",
            )
        what = {
            ".json": "a JSON file (question/answer data?)",
            ".jsonl": "a JSONL file (question/answer data?)",
            ".safetensors": "a weights file",
            ".bin": "a weights file",
        }.get(p.suffix, "a file")
        raise ModelLoadError(f"this is {what}, not a model directory", source=path, fix=_LOCAL_ONLY)
    cfg_path = p / "config.json"
    if not cfg_path.exists() and (p / "adapter_config.json").exists():
        raise ModelLoadError(
            "this is a PEFT adapter, not a full model: it needs the base model it was trained on",
            source=path,
            fix="audit it with --base BASE_DIR --unlearned NAME="
            + path
            + " (in Python: unpact.adapters.load_adapter(base_subject, path))",
        )
    world_fix = f"this looks like a toy world: pass {str(p / 'base')!r} or {str(p / 'retain_only')!r}"
    if not cfg_path.is_file():
        found = sorted(x.name + ("/" if x.is_dir() else "") for x in p.iterdir())
        shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
        world = (p / "base" / "config.json").is_file()
        raise ModelLoadError(
            f"no config.json in this directory (it holds: {shown or 'nothing'})",
            source=path,
            fix=world_fix if world else _LOCAL_ONLY,
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"config.json cannot be read ({exc})", source=str(cfg_path), fix=_LOCAL_ONLY) from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
        world = isinstance(cfg, dict) and "preset" in cfg and (p / "base").is_dir()
        raise ModelLoadError(
            "this config.json is not a Hugging Face model config (it has no model_type)",
            source=str(cfg_path),
            fix=world_fix if world else _LOCAL_ONLY,
        )
    # an unusable architecture fails before the weights load; remote code (auto_map) is checked after loading
    if cfg["model_type"] not in supported_architectures() and "auto_map" not in cfg:
        from unpact._arch_detect import detect_from_config

        detect_from_config(cfg).raise_if_unusable()
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise ModelLoadError(
            "config.json but no weights (*.safetensors or *.bin) in this directory",
            source=path,
            fix="save the model there with model.save_pretrained(DIR)",
        )
    return p


def causal_lm_class(model_type: str | None) -> str:
    """Name of transformers' causal-LM class for ``model_type`` (``"LlamaForCausalLM"``), or a pattern."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover - moved in some transformers version
        return "*ForCausalLM"
    return str(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type or "", "*ForCausalLM"))


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers' per-load progress bars off for the body (an audit loads six models; the log names each)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def from_pretrained(
    p: Path, path: str, dtype: torch.dtype | None, trust_remote_code: bool, **placement: Any
) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` of a checked directory; refuses randomly initialised weights.

    ``placement``: ``device_map``, ``max_memory`` and ``offload_folder``, passed on (accelerate).
    """
    from safetensors import SafetensorError  # a transformers dependency
    from transformers import AutoModelForCausalLM

    logger.info("loading %s", path)
    try:
        with _quiet_loading():
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                str(p),
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                use_safetensors=_prefers_safetensors(str(p)),
                output_loading_info=True,
                **placement,
            )
    except (OSError, SafetensorError) as exc:  # unreadable or truncated weight files
        raise ModelLoadError(
            f"transformers cannot read the checkpoint ({exc})",
            source=path,
            fix="save the model again with save_pretrained (a weights file is damaged or incomplete)",
        ) from exc
    model, info = loaded  # (model, {"missing_keys": [...], ...}) with output_loading_info
    missing = list(info.get("missing_keys") or [])
    if missing:
        saved = ", ".join(getattr(model.config, "architectures", None) or ["?"])
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ModelLoadError(
            f"the checkpoint has no weights for {shown} (config.json says it is a {saved}); loading it as a causal "
            "LM would fill them with random values",
            source=path,
            fix=f"save the causal LM ({causal_lm_class(model.config.model_type)}, from AutoModelForCausalLM) "
            "with save_pretrained, not the base model",
        )
    return model


def load_tokenizer(src: str, trust_remote_code: bool) -> Any:
    """The tokenizer saved in directory ``src``."""
    from transformers import AutoTokenizer

    p = Path(src).expanduser()
    if not p.exists():
        raise MissingFileError(
            "no tokenizer directory", path=src, fix="pass the directory it was saved to with tokenizer.save_pretrained"
        )
    fix = "save it there with tokenizer.save_pretrained(DIR), or pass tokenizer= (a tokenizer or its directory)"
    if p.is_dir() and not any((p / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"no tokenizer files in this directory (expected one of {', '.join(_TOKENIZER_FILES)})", source=src, fix=fix
        )
    try:
        return AutoTokenizer.from_pretrained(str(p), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"transformers cannot load a tokenizer from here ({exc})", source=src, fix=fix) from exc


def check_loaded(model: nn.Module, tokenizer: Any, name: str) -> None:
    """A language-model head, finite weights and a tokenizer that fits the embedding."""
    get_head = getattr(model, "get_output_embeddings", None)
    if callable(get_head) and get_head() is None:
        cls = type(model).__name__
        causal = causal_lm_class(getattr(getattr(model, "config", None), "model_type", None))
        raise ModelLoadError(
            f"{cls} has no language-model head (get_output_embeddings() is None); unpact traces causal LMs that "
            "predict tokens",
            source=name,
            fix=f"load it with transformers.AutoModelForCausalLM ({causal}), not AutoModel",
        )
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.is_floating_point() and not p.is_meta and not bool(torch.isfinite(p).all()):
                bad = int((~torch.isfinite(p)).sum())
                raise ModelLoadError(
                    f"parameter {pname} holds {bad} NaN/inf values (of {p.numel()})",
                    source=name,
                    fix="the checkpoint is broken (or overflowed when cast to a smaller dtype); load an intact one",
                )
    if tokenizer is not None and hasattr(tokenizer, "__len__"):
        n_tok = len(tokenizer)
        n_emb = getattr(getattr(model, "get_input_embeddings", lambda: None)(), "num_embeddings", None)
        if n_tok < 2:
            raise ModelLoadError(
                f"the tokenizer is empty ({n_tok} tokens)",
                source=name,
                fix="save the model's tokenizer next to it, or pass tokenizer=",
            )
        if n_emb is not None and n_tok > n_emb:
            raise ModelLoadError(
                f"the tokenizer has {n_tok} tokens but the model's embedding only {n_emb} rows; they do not belong "
                "together",
                source=name,
                fix="pass the tokenizer the model was trained with",
            )


def _prefers_safetensors(path: str) -> bool | None:
    """True if a local dir has safetensors weights (then ``.bin`` files are never read)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return True if any(p.glob("*.safetensors")) else None
    return None
