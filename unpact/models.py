"""Loading a model into a :class:`Subject`: the model, its tokenizer and its architecture map.

A :class:`Subject` is what every tracer takes. It resolves, once, the modules named by the
registered :class:`~unpact._arch.ArchSpec` (embedding, blocks, final norm, unembedding, per-block
attention / output projection / MLP) and the sizes (layers, heads, kv-heads, d_model, d_head).

Loading is safe by default: safetensors weights are preferred, ``.bin`` checkpoints are read with
``weights_only=True`` (transformers' own default), and ``trust_remote_code`` is off unless asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unpact._arch import ArchSpec, config_int, get_architecture, resolve_path, softcap

logger = logging.getLogger(__name__)

__all__ = ["Subject", "load_model", "ModelState", "frozen", "weights_hash"]

# Above this many parameters the weights hash samples each tensor instead of reading all of it.
_FULL_HASH_MAX_PARAMS = 200_000_000


@dataclass
class Subject:
    """A causal LM ready for tracing: model + tokenizer + resolved architecture map.

    Build it with :func:`load_model`. Attributes are read-only in spirit: tracers never change
    the model's weights, train/eval mode or ``requires_grad`` flags.

    Attributes:
        model: The Hugging Face ``*ForCausalLM`` module.
        tokenizer: Its tokenizer (``None`` only for tokenizer-free use of the hooks).
        spec: The :class:`ArchSpec` used to find the parts.
        name: A human-readable identifier (path or hub-style name) recorded in provenance.
        bridge: The TransformerLens ``TransformerBridge`` the subject was built from, if any.
    """

    model: nn.Module
    tokenizer: Any
    spec: ArchSpec
    name: str
    bridge: Any = None
    _modules: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        spec, model = self.spec, self.model
        blocks = resolve_path(model, spec.blocks)
        if not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
            raise TypeError(f"{spec.blocks!r} must be a ModuleList of blocks, got {type(blocks).__name__}")
        self._modules = {
            "embed": resolve_path(model, spec.embed),
            "blocks": list(blocks),
            "final_norm": resolve_path(model, spec.final_norm),
            "unembed": resolve_path(model, spec.unembed),
            "attn": [resolve_path(b, spec.attn) for b in blocks],
            "attn_out_proj": [resolve_path(b, spec.attn_out_proj) for b in blocks],
            "mlp": [resolve_path(b, spec.mlp) for b in blocks],
        }
        cfg = self.config
        n_layers = config_int(cfg, spec.n_layers_attr)
        if n_layers is not None and n_layers != len(blocks):
            raise ValueError(f"config says {n_layers} layers but {spec.blocks!r} holds {len(blocks)}")

    # ----- parts -------------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        """The model's Hugging Face config."""
        return self.model.config

    @property
    def embed(self) -> nn.Module:
        """Token embedding module; output ``(batch, seq, d_model)``."""
        return self._modules["embed"]

    @property
    def blocks(self) -> list[nn.Module]:
        """The transformer blocks, in order."""
        return self._modules["blocks"]

    @property
    def final_norm(self) -> nn.Module:
        """Final norm; output ``(batch, seq, d_model)`` is what the unembedding reads."""
        return self._modules["final_norm"]

    @property
    def unembed(self) -> nn.Module:
        """Unembedding (``lm_head``): ``(..., d_model) -> (..., vocab)``."""
        return self._modules["unembed"]

    def attn(self, layer: int) -> nn.Module:
        """Attention module of block ``layer``."""
        return self._modules["attn"][layer]

    def attn_out_proj(self, layer: int) -> nn.Module:
        """Attention output projection of block ``layer``; input ``(batch, seq, n_heads*d_head)``."""
        return self._modules["attn_out_proj"][layer]

    def mlp(self, layer: int) -> nn.Module:
        """MLP module of block ``layer`` (for OPT, its ``fc2``)."""
        return self._modules["mlp"][layer]

    # ----- sizes -------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        """Residual stream width."""
        return int(config_int(self.config, self.spec.d_model_attr))  # type: ignore[arg-type]

    @property
    def n_heads(self) -> int:
        """Number of query heads per layer."""
        return int(config_int(self.config, self.spec.n_heads_attr))  # type: ignore[arg-type]

    @property
    def n_kv_heads(self) -> int:
        """Number of key/value heads (``< n_heads`` under grouped-query attention)."""
        return int(config_int(self.config, self.spec.n_kv_heads_attr, self.n_heads) or self.n_heads)

    @property
    def d_head(self) -> int:
        """Per-head size, read from the attention output projection's input width."""
        proj = self.attn_out_proj(0)
        width = _in_features(proj)
        if width % self.n_heads:
            raise ValueError(f"attention output width {width} is not divisible by {self.n_heads} heads")
        return width // self.n_heads

    @property
    def vocab_size(self) -> int:
        """Rows of the unembedding."""
        return int(_out_features(self.unembed))

    @property
    def n_ctx(self) -> int | None:
        """Maximum context length from the config, if it states one."""
        for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(self.config, attr, None)
            if value:
                return int(value)
        return None

    @property
    def device(self) -> torch.device:
        """Device of the embedding weights."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the embedding weights."""
        return next(self.model.parameters()).dtype

    @property
    def logit_softcap(self) -> float | None:
        """Final logit soft-cap (Gemma 2) or ``None``."""
        attr = self.spec.logit_softcap_attr
        value = getattr(self.config, attr, None) if attr else None
        return float(value) if value else None

    # ----- helpers -----------------------------------------------------------------------------
    def decode_resid(self, normed: torch.Tensor) -> torch.Tensor:
        """Map a final-normed residual to logits, as the model's own head does.

        Args:
            normed: ``(..., d_model)`` output of the final norm (or of it applied to any layer).

        Returns:
            ``(..., vocab)`` logits, soft-capped where the architecture does so.
        """
        return softcap(self.unembed(normed), self.logit_softcap)

    def weights_hash(self) -> str:
        """SHA-256 fingerprint of the parameters (see :func:`weights_hash`)."""
        return weights_hash(self.model)

    def hooks(self, *args: Any, **kwargs: Any) -> Any:
        """Shortcut for :func:`unpact.hooks.hooked` on this subject."""
        from unpact.hooks import hooked

        return hooked(self, *args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"Subject({self.name!r}, {self.spec.model_type}, layers={self.n_layers}, "
            f"heads={self.n_heads}/{self.n_kv_heads} kv, d_model={self.d_model})"
        )


def _in_features(module: nn.Module) -> int:
    if hasattr(module, "in_features"):
        return int(module.in_features)
    weight = getattr(module, "weight", None)
    if weight is None:
        raise TypeError(f"cannot read the input width of {type(module).__name__}")
    # transformers' Conv1D stores (in, out); nn.Linear stores (out, in).
    return int(weight.shape[0] if type(module).__name__ == "Conv1D" else weight.shape[1])


def _out_features(module: nn.Module) -> int:
    if hasattr(module, "out_features"):
        return int(module.out_features)
    return int(module.weight.shape[0])


def weights_hash(model: nn.Module) -> str:
    """Return a SHA-256 hex digest of a model's parameters and buffers' names, shapes and values.

    Models above 200M parameters are fingerprinted from a strided sample of each tensor (and
    the digest is prefixed ``"sampled:"``) so that hashing a 7B model takes seconds, not minutes.
    """
    params = list(model.state_dict().items())
    total = sum(t.numel() for _, t in params)
    sampled = total > _FULL_HASH_MAX_PARAMS
    h = hashlib.sha256()
    for name, tensor in params:
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(str(tensor.dtype).encode())
        flat = tensor.detach().reshape(-1)
        if sampled and flat.numel() > 4096:
            flat = flat[:: max(1, flat.numel() // 4096)]
        h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return ("sampled:" if sampled else "") + h.hexdigest()


@dataclass(frozen=True)
class ModelState:
    """Snapshot of what tracers promise not to change: mode and grad flags (and optionally weights).

    Use :meth:`capture` before and compare with ``==`` after.
    """

    training: tuple[bool, ...]
    requires_grad: tuple[bool, ...]
    weights: str | None = None

    @classmethod
    def capture(cls, model: nn.Module, *, with_weights: bool = False) -> ModelState:
        """Record every module's ``training`` flag and every parameter's ``requires_grad``."""
        return cls(
            training=tuple(m.training for m in model.modules()),
            requires_grad=tuple(p.requires_grad for p in model.parameters()),
            weights=weights_hash(model) if with_weights else None,
        )


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put ``model`` in eval mode with no parameter gradients; restore on exit.

    Tracers run inside this so autograd only tracks what they ask for (e.g. input embeddings),
    and the caller's mode and flags come back exactly, also when the body raises.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def _is_bridge(obj: Any) -> bool:
    return type(obj).__name__ == "TransformerBridge" or type(obj).__module__.startswith("transformer_lens")


def load_model(
    model: str | os.PathLike[str] | nn.Module | Any,
    tokenizer: Any = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    name: str | None = None,
) -> Subject:
    """Load (or wrap) a causal LM and return a :class:`Subject`.

    Args:
        model: A local directory or hub-style name (loaded with ``AutoModelForCausalLM``),
            an already-built ``*ForCausalLM`` module, or a TransformerLens ``TransformerBridge``
            (its underlying Hugging Face model and tokenizer are used; hooks go through the same
            modules, so results match the bridge's own forward).
        tokenizer: A tokenizer, or a path to load one from; defaults to the model's own.
        device: Where to put a freshly loaded model (``"cpu"``, ``"cuda"``...). A passed module is
            left where it is unless ``device`` is given.
        dtype: Weight dtype for a freshly loaded model (e.g. ``torch.float32``).
        trust_remote_code: Allow custom model code from the checkpoint; off by default.
        name: Provenance name; defaults to the path or the model's ``name_or_path``.

    Returns:
        The :class:`Subject`.

    Raises:
        UnknownArchitectureError: If ``config.model_type`` is not registered.
        FileNotFoundError: If a local path does not exist.
        TypeError: If ``model`` is of an unsupported type.
    """
    bridge = None
    if _is_bridge(model):
        bridge = model
        hf = getattr(model, "original_model", None)
        if hf is None:
            raise TypeError("this TransformerBridge does not expose original_model; pass the HF model instead")
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        model = hf
    if isinstance(model, (str, os.PathLike)):
        path = str(model)
        if (path.startswith((".", "/", "~")) or os.sep in path and os.path.exists(path)) and not Path(path).expanduser().exists():
            raise FileNotFoundError(f"no model directory at {path!r}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        logger.info("loading %s", path)
        hf_model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=_prefers_safetensors(path),
        )
        hf_model.eval()
        if device is not None:
            hf_model.to(device)
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(
                str(tokenizer or path), trust_remote_code=trust_remote_code
            )
        name = name or path
        model = hf_model
    elif isinstance(model, nn.Module):
        if device is not None:
            model.to(device)
        if dtype is not None:
            model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), trust_remote_code=trust_remote_code)
    else:
        raise TypeError(
            f"load_model expects a path, a Hugging Face causal-LM module or a TransformerBridge, "
            f"got {type(model).__name__}"
        )
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise TypeError(f"{type(model).__name__} has no config.model_type; is it a Hugging Face model?")
    spec = get_architecture(model_type)
    if name is None:
        name = str(getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", "") or model_type)
    return Subject(model=model, tokenizer=tokenizer, spec=spec, name=name, bridge=bridge)


def _prefers_safetensors(path: str) -> bool | None:
    """True if a local dir has safetensors weights (then ``.bin`` files are never read)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return True if any(p.glob("*.safetensors")) else None
    return None
