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
from typing import Any

import torch
from torch import nn

from unpact._arch import ArchSpec, config_int, get_architecture, in_features, out_features, resolve_path, softcap
from unpact._modeldir import check_loaded, check_model_dir, from_pretrained, load_tokenizer
from unpact.errors import ArchitectureError, InputError, ModelLoadError

logger = logging.getLogger(__name__)

__all__ = ["Subject", "load_model", "ModelState", "frozen", "weights_hash", "check_finite"]

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
    _hash_cache: tuple[tuple[Any, ...], str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec, model = self.spec, self.model
        fix = (
            f"fix the ArchSpec registered for {spec.model_type!r} "
            "(unpact.register_architecture(ArchSpec(...), overwrite=True)); see docs/architecture.md"
        )
        try:
            blocks = resolve_path(model, spec.blocks)
            if not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
                raise ArchitectureError(
                    f"{spec.blocks!r} must be a ModuleList of blocks, got {type(blocks).__name__}",
                    source=f"ArchSpec {spec.model_type!r}",
                    fix=fix,
                )
            self._modules = {
                "embed": resolve_path(model, spec.embed),
                "blocks": list(blocks),
                "final_norm": resolve_path(model, spec.final_norm),
                "unembed": resolve_path(model, spec.unembed),
                "attn": [resolve_path(b, spec.attn) for b in blocks],
                "attn_out_proj": [resolve_path(b, spec.attn_out_proj) for b in blocks],
                "mlp": [resolve_path(b, spec.mlp) for b in blocks],
            }
        except AttributeError as exc:
            raise ArchitectureError(
                f"{exc} ({type(model).__name__})", source=f"ArchSpec {spec.model_type!r}", fix=fix
            ) from exc
        cfg = self.config
        n_layers = config_int(cfg, spec.n_layers_attr)
        if n_layers is not None and n_layers != len(blocks):
            raise ArchitectureError(
                f"config says {n_layers} layers but {spec.blocks!r} holds {len(blocks)}",
                source=f"ArchSpec {spec.model_type!r}",
                fix=fix,
            )

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
        width = in_features(proj)
        if width % self.n_heads:
            raise ArchitectureError(
                f"attention output width {width} is not divisible by {self.n_heads} heads",
                source=f"ArchSpec {self.spec.model_type!r}",
                fix="check the ArchSpec's attn_out_proj path and n_heads_attr",
            )
        return width // self.n_heads

    @property
    def vocab_size(self) -> int:
        """Rows of the unembedding."""
        return int(out_features(self.unembed))

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
        """SHA-256 fingerprint of the weights (see :func:`weights_hash`), computed once per weights.

        The digest is cached with a key of every tensor's ``(name, data_ptr(), _version)``: an
        in-place edit (``p.add_(...)`` under ``no_grad``, an optimizer step, ``load_state_dict``)
        bumps ``_version`` and a swapped tensor moves ``data_ptr``, so either triggers a fresh hash.
        Edits through ``p.data`` bypass the version counter; call :meth:`refresh_weights_hash`
        after such an edit (tracers never make one).
        """
        key = _weights_key(self.model)
        cached = self._hash_cache
        if cached is None or cached[0] != key:
            cached = (key, weights_hash(self.model))
            self._hash_cache = cached
        return cached[1]

    def refresh_weights_hash(self) -> str:
        """Drop the cached digest and hash the weights again."""
        self._hash_cache = None
        return self.weights_hash()

    def __repr__(self) -> str:
        return (
            f"Subject({self.name!r}, {self.spec.model_type}, layers={self.n_layers}, "
            f"heads={self.n_heads}/{self.n_kv_heads} kv, d_model={self.d_model})"
        )


def _weights_key(model: nn.Module) -> tuple[Any, ...]:
    """What identifies the current weights without reading them: per tensor, name, storage and version."""
    return tuple(
        (name, t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device)
        for name, t in model.state_dict(keep_vars=True).items()
    )


def weights_hash(model: nn.Module) -> str:
    """Return a SHA-256 hex digest of a model's parameters and buffers' names, shapes and values.

    Models above 200M parameters are fingerprinted from a strided sample of each tensor (and
    the digest is prefixed ``"sampled:"``) so that hashing a 7B model takes seconds, not minutes.
    This function reads the weights on every call (use it to verify); :meth:`Subject.weights_hash`
    caches the digest until a weight changes.
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


def check_finite(subject: Subject, values: torch.Tensor, what: str = "logits") -> torch.Tensor:
    """Return ``values`` (a tracer forward's logits or activations) if they hold no NaN or inf.

    Raises:
        InputError: Naming the model and its dtype: half precision overflows are the usual cause.
    """
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        low = subject.dtype in (torch.float16, torch.bfloat16)
        raise InputError(
            f"model {subject.name!r} produced {bad} NaN/inf values in its {what} ({values.numel()} values, "
            f"{str(subject.dtype).replace('torch.', '')} weights); the results would be meaningless",
            fix="load it with dtype=torch.float32" if low else "check the model's weights and the prompt",
        )
    return values


def _torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if isinstance(dtype, str):
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(value, torch.dtype):
            raise InputError(f"unknown dtype {dtype!r}", source="dtype", fix="use float32, float16 or bfloat16")
        return value
    return dtype


def _check_device(device: str | torch.device | None) -> None:
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r} ({exc})", source="device", fix="use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r} asked for, but torch sees no CUDA device here", source="device", fix="use device='cpu'"
        )


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
        model: A local model directory (written by ``save_pretrained``; loaded with
            ``AutoModelForCausalLM``), an already-built ``*ForCausalLM`` module, or a TransformerLens
            ``TransformerBridge`` (its underlying Hugging Face model and tokenizer are used; hooks go
            through the same modules, so results match the bridge's own forward). Hub names are not
            fetched: download the model first and pass its directory.
        tokenizer: A tokenizer, or a directory to load one from; defaults to the model's own.
        device: Where to put a freshly loaded model (``"cpu"``, ``"cuda"``...). A passed module is
            left where it is unless ``device`` is given.
        dtype: Weight dtype for a freshly loaded model (e.g. ``torch.float32``).
        trust_remote_code: Allow custom model code from the checkpoint; off by default.
        name: Provenance name; defaults to the path or the model's ``name_or_path``.

    Returns:
        The :class:`Subject`.

    Raises:
        MissingFileError: Nothing at the model (or tokenizer) path.
        ModelLoadError: A path that holds no loadable causal LM (a file, no config or weights, a
            base model without its language-model head, no tokenizer), or weights with NaN/inf.
        UnknownArchitectureError: If ``config.model_type`` is not registered.
        ArchitectureError: If the registered :class:`ArchSpec` does not match the model.
        InputError: An unsupported ``model`` type, ``device`` or ``dtype``.
    """
    bridge = None
    _check_device(device)
    torch_dtype = _torch_dtype(dtype)
    if _is_bridge(model):
        bridge = model
        hf = getattr(model, "original_model", None)
        if hf is None:
            raise ModelLoadError(
                "this TransformerBridge does not expose original_model",
                source="load_model",
                fix="pass the Hugging Face model it wraps instead",
            )
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        model = hf
    if isinstance(model, (str, os.PathLike)):
        path = str(model)
        model_dir = check_model_dir(path)
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):  # cheap: before the weights
            tokenizer = load_tokenizer(str(tokenizer or model_dir), trust_remote_code)
        hf_model = from_pretrained(model_dir, path, torch_dtype, trust_remote_code)
        hf_model.eval()
        if device is not None:
            hf_model.to(device)
        name = name or path
        model = hf_model
    elif isinstance(model, nn.Module):
        if device is not None:
            model.to(device)
        if torch_dtype is not None:
            model.to(torch_dtype)
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer(str(tokenizer), trust_remote_code)
    else:
        raise InputError(
            f"load_model expects a model directory, a Hugging Face causal-LM module or a TransformerBridge, "
            f"got {type(model).__name__}",
            source="load_model",
        )
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise ModelLoadError(
            f"{type(model).__name__} has no config.model_type; is it a Hugging Face model?",
            source="load_model",
            fix="pass a transformers *ForCausalLM module or its directory",
        )
    if name is None:
        name = str(getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", "") or model_type)
    check_loaded(model, tokenizer, name)
    spec = get_architecture(model_type)
    return Subject(model=model, tokenizer=tokenizer, spec=spec, name=name, bridge=bridge)
