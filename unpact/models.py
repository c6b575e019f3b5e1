"""Loading a model into a :class:`Subject`: the model, its tokenizer and its architecture map.

A :class:`Subject` is what every tracer takes. It resolves, once, the modules named by the
registered :class:`~unpact._arch.ArchSpec` (or, for a family with no entry, the one
:mod:`unpact._arch_detect` finds from the module's structure) (embedding, blocks, final norm, unembedding, per-block
attention / output projection / MLP) and the sizes (layers, heads, kv-heads, d_model, d_head).

Loading is safe by default: safetensors weights are preferred, ``.bin`` checkpoints are read with
``weights_only=True`` (transformers' own default), and ``trust_remote_code`` is off unless asked.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from unpact._arch import (
    ArchSpec,
    config_int,
    get_architecture,
    in_features,
    out_features,
    resolve_path,
    softcap,
    supported_architectures,
)
from unpact._devices import check_placement, dispatch, module_device, torch_dtype
from unpact._modeldir import check_loaded, check_model_dir, from_pretrained, load_tokenizer
from unpact.data import Encoded, Example, encode
from unpact.errors import ArchitectureError, InputError, ModelLoadError
from unpact.modelstate import ModelState, _weights_key, frozen, weights_hash
from unpact.prompts import PromptFormat

logger = logging.getLogger(__name__)

__all__ = ["Subject", "load_model", "ModelState", "frozen", "weights_hash", "check_finite"]


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
        prompt_format: How questions are put to this model (template, answer separator, chat
            template): every encoding of an item for this model goes through :meth:`encode`.
    """

    model: nn.Module
    tokenizer: Any
    spec: ArchSpec
    name: str
    bridge: Any = None
    prompt_format: PromptFormat = field(default_factory=PromptFormat)
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
                "mlp_out_proj": [resolve_path(b, spec.mlp_out_proj) for b in blocks] if spec.mlp_out_proj else None,
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

    def mlp_out_proj(self, layer: int) -> nn.Module:
        """The MLP output projection of block ``layer`` (:attr:`ArchSpec.mlp_out_proj`): writes ``d_model`` features.

        Raises:
            ArchitectureError: If the architecture's spec names no MLP output projection.
        """
        projs = self._modules["mlp_out_proj"]
        if projs is None:
            spec = self.spec
            raise ArchitectureError(
                f"the architecture {spec.model_type!r} has no known MLP output projection (ArchSpec.mlp_out_proj "
                "is None: not registered, or detection found no single linear layer writing the MLP's output)",
                source=f"ArchSpec {spec.model_type!r}",
                fix="name it: unpact.register_architecture(dataclasses.replace(subject.spec, "
                "mlp_out_proj='mlp.down_proj'), overwrite=True), the path relative to one block "
                "(a mixture-of-experts MLP has none); see docs/architecture.md",
            )
        return projs[layer]

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
        """Device the embedding runs on, where inputs go (:func:`unpact._devices.module_device`)."""
        return module_device(self.embed)

    @property
    def output_device(self) -> torch.device:
        """Device the unembedding runs on, where logits come out (blocks may be elsewhere)."""
        return module_device(self.unembed)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the embedding weights."""
        return next(self.model.parameters()).dtype

    def _config_float(self, attr: str | None) -> float | None:
        value = getattr(self.config, attr, None) if attr else None
        if value is None and attr and hasattr(self.config, "get_text_config"):
            value = getattr(self.config.get_text_config(), attr, None)
        return float(value) if value else None

    @property
    def logit_softcap(self) -> float | None:
        """Final logit soft-cap (Gemma 2) or ``None``."""
        return self._config_float(self.spec.logit_softcap_attr)

    @property
    def logit_scale(self) -> float | None:
        """Factor the model multiplies its logits by (Cohere's ``logit_scale``) or ``None``."""
        return self._config_float(self.spec.logit_scale_attr)

    @property
    def logit_divisor(self) -> float | None:
        """Number the model divides its logits by (Granite's ``logits_scaling``) or ``None``."""
        return self._config_float(self.spec.logit_divisor_attr)

    @property
    def detected(self) -> bool:
        """True when the architecture map was found from the module's structure, not the registry."""
        return self.spec.detected

    # ----- prompts -----------------------------------------------------------------------------
    def encode(self, example: Example) -> Encoded:
        """``example`` tokenized in this model's prompt format, with exact spans (:func:`unpact.data.encode`).

        Raises:
            InputError: The sequence is longer than the model's context, or the format cannot be rendered.
        """
        return encode(self.tokenizer, example, fmt=self.prompt_format, max_length=self.n_ctx)

    def with_format(self, fmt: PromptFormat | None) -> Subject:
        """The same model (shared, not copied) put to in another prompt format; ``None``: this subject."""
        if fmt is None or fmt == self.prompt_format:
            return self
        if not isinstance(fmt, PromptFormat):
            raise InputError(
                f"expected a PromptFormat, got {type(fmt).__name__}",
                source="prompt format",
                fix='build one with unpact.PromptFormat(template="Question: {question}\\nAnswer:")',
            )
        fmt.render("?", self.tokenizer)  # a chat format needs the tokenizer's chat template: fail here
        return dataclasses.replace(self, prompt_format=fmt, _hash_cache=self._hash_cache)

    # ----- helpers -----------------------------------------------------------------------------
    def decode_resid(self, normed: torch.Tensor) -> torch.Tensor:
        """Map a final-normed residual to logits, as the model's own head does.

        The one place that applies the architecture's final logit transform: the unembedding, then
        the scale (``logit_scale_attr``), the divisor (``logit_divisor_attr``) and the soft-cap
        (``logit_softcap_attr``) the :class:`ArchSpec` names.

        Args:
            normed: ``(..., d_model)`` output of the final norm (or of it applied to any layer).

        Returns:
            ``(..., vocab)`` logits, scaled and soft-capped where the architecture does so.

        Raises:
            ArchitectureError: The spec says the logits cannot be reproduced from the final norm
                (``ArchSpec.decode_ok=False``), so decoded numbers would be wrong.
        """
        if not self.spec.decode_ok:
            why = self.spec.disabled_reason("scoring") or "ArchSpec.decode_ok=False"
            raise ArchitectureError(
                f"cannot decode the final-normed residual of {self.spec.model_type} into its logits: {why}",
                source=f"ArchSpec {self.spec.model_type!r}",
                fix="register an ArchSpec whose final_norm, unembed and logit_*_attr reproduce the model's logits "
                "(unpact.register_architecture(ArchSpec(...), overwrite=True)); see docs/models.md",
            )
        logits = self.unembed(normed.to(self.output_device))
        scale, divisor = self.logit_scale, self.logit_divisor
        if scale is not None:
            logits = logits * scale
        if divisor is not None:
            logits = logits / divisor
        return softcap(logits, self.logit_softcap)

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


def load_model(
    model: str | os.PathLike[str] | nn.Module | Any,
    tokenizer: Any = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    name: str | None = None,
    prompt_format: PromptFormat | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: str | dict[Any, str] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
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
        prompt_format: How questions are put to the model (:class:`~unpact.prompts.PromptFormat`);
            default the bare question.
        device_map: Spread the model over devices (accelerate): ``"auto"`` (or ``"balanced"``,
            ``"sequential"``...), ``{module name: device}`` (devices ``0``, ``"cuda:1"``, ``"cpu"``,
            ``"disk"``), or a JSON file / inline JSON of that dict. Not with ``device``.
        max_memory: Per-device limits for a ``device_map`` strategy: ``{0: "20GiB", "cpu": "60GiB"}``
            or ``"0=20GiB,cpu=60GiB"``.
        offload_folder: Where ``"disk"`` entries of the device map are written (gradient methods
            refuse a model with disk-offloaded modules).

    Returns:
        The :class:`Subject`.

    Raises:
        MissingFileError: Nothing at the model (or tokenizer) path.
        ModelLoadError: A path that holds no loadable causal LM (a file, no config or weights, a
            base model without its language-model head, no tokenizer), or weights with NaN/inf.
        UnknownArchitectureError: If ``config.model_type`` is not registered and its parts cannot be
            found from the module's structure (:func:`unpact._arch_detect.detect_architecture`; the
            message lists what is missing and shows how to register an :class:`ArchSpec`).
        ArchitectureError: If the registered :class:`ArchSpec` does not match the model.
        InputError: An unsupported ``model`` type, ``device``, ``dtype`` or placement option.
    """
    bridge = None
    dmap, memory = check_placement(device, device_map, max_memory)
    w_dtype = torch_dtype(dtype)
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
        placement = {"device_map": dmap, "max_memory": memory, "offload_folder": offload_folder} if dmap else {}
        hf_model = from_pretrained(model_dir, path, w_dtype, trust_remote_code, **placement)
        hf_model.eval()
        if device is not None:
            hf_model.to(device)
        name = name or path
        model = hf_model
    elif isinstance(model, nn.Module):
        if device is not None:
            model.to(device)
        if w_dtype is not None:
            model.to(w_dtype)
        if dmap is not None:
            dispatch(model, dmap, memory, offload_folder)
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
    spec = _spec_for(model, model_type, name)
    subject = Subject(model=model, tokenizer=tokenizer, spec=spec, name=name, bridge=bridge)
    return subject.with_format(prompt_format)


def _spec_for(model: nn.Module, model_type: str, name: str) -> ArchSpec:
    """The registered :class:`ArchSpec` of ``model_type``, else one detected from the module's structure.

    Raises:
        UnknownArchitectureError: Nothing registered and the essential parts cannot be found.
    """
    if model_type in supported_architectures():
        return get_architecture(model_type)
    from unpact._arch_detect import detect_architecture

    detection = detect_architecture(model)
    spec = detection.raise_if_unusable()
    logger.info("model %r (%s): %s", name, model_type, detection.summary())
    for feature, why in detection.disabled.items():
        logger.info("model %r: %s is off: %s", name, feature, why)
    return spec
