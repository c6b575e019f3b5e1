"""The one place that knows where things live inside each supported architecture.

Every tracer in unpact reads a model through an :class:`ArchSpec`: dotted paths (relative to the
Hugging Face ``*ForCausalLM`` module) to the token embedding, the list of transformer blocks, the
final norm and the unembedding, plus paths *relative to one block* to its attention module, the
attention output projection (whose **input** is the concatenation of the per-head outputs), the
MLP and its output projection (the matrix that weight edits change). It also declares what tracers
may assume about the family (``additive_writes``, ``accepts_4d_mask``, pre-/post-LN, parallel
residual and its norms). Nothing else in the package hard-codes a module name or tests an
architecture by name.

Add an architecture with :func:`register_architecture`. A ``config.model_type`` with no entry here is
mapped from the loaded module's structure by :mod:`unpact._arch_detect` (and verified with a few
forwards); only when that fails does :func:`unpact.load_model` raise :class:`UnknownArchitectureError`,
which says how to register one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from unpact.errors import ArchitectureError, InputError, UnknownArchitectureError

logger = logging.getLogger(__name__)

__all__ = [
    "ArchSpec",
    "UnknownArchitectureError",
    "register_architecture",
    "get_architecture",
    "supported_architectures",
    "resolve_path",
]


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts of one causal-LM family live.

    Attributes:
        model_type: The ``config.model_type`` string this spec serves (e.g. ``"gpt2"``).
        embed: Dotted path from the causal-LM module to the token embedding (``nn.Embedding``).
        blocks: Dotted path to the ``nn.ModuleList`` of transformer blocks.
        final_norm: Dotted path to the final norm applied before the unembedding.
        unembed: Dotted path to the unembedding (``lm_head``) linear layer.
        attn: Path, relative to one block, of the attention module.
        attn_out_proj: Path, relative to one block, of the attention output projection. Its input,
            of shape ``(batch, seq, n_heads * d_head)``, is the concatenation of per-head outputs.
        mlp: Path, relative to one block, of the MLP module (its output is the MLP's contribution,
            before any post-norm the architecture applies).
        mlp_out_proj: Path, relative to one block, of the MLP's output projection (the one linear layer
            that writes the MLP's ``d_model`` output: ``mlp.down_proj``, GPT-2's ``mlp.c_proj``, OPT's
            ``fc2``); weight edits (AlphaEdit, UniErase) change it. ``None``: unknown (a mixture of
            experts has no one projection), and those edits refuse the model.
        n_layers_attr, n_heads_attr, n_kv_heads_attr, d_model_attr: Config attribute names.
        d_head_attr: Config attribute holding the head size, if the family has one (else
            ``d_model // n_heads``).
        logit_softcap_attr: Config attribute of a final logit soft-cap (Gemma 2), if any.
        logit_scale_attr: Config attribute the logits are multiplied by (Cohere's ``logit_scale``), if any.
        logit_divisor_attr: Config attribute the logits are divided by (Granite's ``logits_scaling``), if any.
            :meth:`~unpact.models.Subject.decode_resid` applies the scale, then the divisor, then the soft-cap.
        parallel_residual: True when attention and MLP read the same residual (GPT-NeoX, Phi-2).
        parallel_residual_attr: Config attribute that switches the parallel residual on or off
            (GPT-NeoX's ``use_parallel_residual``); ``None``: ``parallel_residual`` always holds.
        parallel_norms: Paths, relative to one block, of the norms that attention and MLP read in a
            parallel-residual block, ``(attn_norm, mlp_norm)``. Edge attribution patching edits
            their inputs; ``None`` where unknown.
        pre_norm_attr: Config attribute that is ``False`` when the blocks normalise the residual
            *after* each sub-layer (post-LN; OPT's ``do_layer_norm_before``); ``None``: always pre-LN.
        additive_writes: Every attention and MLP output joins the residual stream unchanged (no
            norm after the sub-layer), so the writes of heads and MLPs add up. Edge attribution
            patching needs it. False for sandwich norms (Gemma 2) and, by default, for an
            architecture that does not declare it.
        accepts_4d_mask: The model's forward takes an additive float attention mask of shape
            ``(batch, 1, query, key)`` as ``attention_mask``. The ``attn_bias`` attack needs it.
            False by default.
        decode_ok: ``unembed`` with the logit transform above, applied to the final norm's output,
            reproduces the model's logits. Every pass that decodes the final-normed residual
            (:meth:`~unpact.models.Subject.decode_resid`: answer scores, attacks, the lens) needs it.
            True by default; structure detection sets it False when no transform it knows fits.
        lens_ok: The final norm reads the last block's output, so ``decode(final_norm(resid))`` of an
            earlier layer is the logit lens. True by default; the lens also needs ``decode_ok``.
        notes: Free text shown in docs and errors.
        extra: Free-form facts for user code (``{"attn_norm": ..., "mlp_norm": ...}`` is read as
            ``parallel_norms`` when that is not set). A spec found by :mod:`unpact._arch_detect` has
            ``extra["detected"] = True`` and ``extra["disabled"]``: ``{feature: reason}``.

    Capabilities (``additive_writes``, ``accepts_4d_mask``) default to False: an architecture
    registered without them gets a clear "not supported" error, never a silently wrong result.
    """

    model_type: str
    embed: str
    blocks: str
    final_norm: str
    unembed: str
    attn: str
    attn_out_proj: str
    mlp: str
    mlp_out_proj: str | None = None
    n_layers_attr: str = "num_hidden_layers"
    n_heads_attr: str = "num_attention_heads"
    n_kv_heads_attr: str | None = "num_key_value_heads"
    d_model_attr: str = "hidden_size"
    d_head_attr: str | None = "head_dim"
    logit_softcap_attr: str | None = None
    logit_scale_attr: str | None = None
    logit_divisor_attr: str | None = None
    parallel_residual: bool = False
    parallel_residual_attr: str | None = None
    parallel_norms: tuple[str, str] | None = None
    pre_norm_attr: str | None = None
    additive_writes: bool = False
    accepts_4d_mask: bool = False
    decode_ok: bool = True
    lens_ok: bool = True
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def is_parallel(self, config: Any) -> bool:
        """True if blocks built from ``config`` use a parallel residual (attention and MLP read one stream)."""
        if not self.parallel_residual:
            return False
        if self.parallel_residual_attr is None:
            return True
        return bool(getattr(config, self.parallel_residual_attr, True))

    def is_post_norm(self, config: Any) -> bool:
        """True if blocks built from ``config`` normalise the residual after each sub-layer (post-LN)."""
        if self.pre_norm_attr is None:
            return False
        return getattr(config, self.pre_norm_attr, True) is False

    @property
    def detected(self) -> bool:
        """True for a spec found from the module's structure (:mod:`unpact._arch_detect`), not registered."""
        return bool(self.extra.get("detected", False))

    def disabled_reason(self, feature: str) -> str | None:
        """Why ``feature`` (``"lens"``, ``"circuits"``, ``"attn_bias"``...) is off for this family, if it is."""
        reasons = self.extra.get("disabled")
        if isinstance(reasons, dict) and feature in reasons:
            return str(reasons[feature])
        return None

    def parallel_norm_paths(self) -> tuple[str, str] | None:
        """``(attn_norm, mlp_norm)`` paths relative to a block (from ``parallel_norms`` or ``extra``), or ``None``."""
        if self.parallel_norms is not None:
            return self.parallel_norms
        if "attn_norm" in self.extra and "mlp_norm" in self.extra:
            return str(self.extra["attn_norm"]), str(self.extra["mlp_norm"])
        return None


_REGISTRY: dict[str, ArchSpec] = {}


def register_architecture(spec: ArchSpec, *, overwrite: bool = False) -> None:
    """Register how to find the parts of a model family.

    Args:
        spec: The architecture description; ``spec.model_type`` is the key.
        overwrite: Replace an existing registration of the same ``model_type``.

    Raises:
        InputError: If ``spec`` is not an :class:`ArchSpec`, or its ``model_type`` is already
            registered and ``overwrite`` is False.

    Example:
        >>> from unpact import ArchSpec, register_architecture
        >>> register_architecture(ArchSpec(
        ...     model_type="my_llama_fork", embed="model.embed_tokens", blocks="model.layers",
        ...     final_norm="model.norm", unembed="lm_head", attn="self_attn",
        ...     attn_out_proj="self_attn.o_proj", mlp="mlp", mlp_out_proj="mlp.down_proj", additive_writes=True,
        ...     accepts_4d_mask=True), overwrite=True)
    """
    if not isinstance(spec, ArchSpec):
        raise InputError(
            f"register_architecture expects an ArchSpec, got {type(spec).__name__}",
            source="register_architecture",
            fix="build one with unpact.ArchSpec(model_type=..., ...)",
        )
    if spec.model_type in _REGISTRY and not overwrite:
        raise InputError(
            f"architecture {spec.model_type!r} is already registered",
            source="register_architecture",
            fix="pass overwrite=True to replace it",
        )
    _REGISTRY[spec.model_type] = spec


def supported_architectures() -> list[str]:
    """Return the registered ``model_type`` names, sorted."""
    return sorted(_REGISTRY)


def get_architecture(model_type: str) -> ArchSpec:
    """Return the :class:`ArchSpec` registered for ``model_type``.

    Raises:
        UnknownArchitectureError: If nothing is registered for it; the message lists the
            supported names and shows how to register one.
    """
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise UnknownArchitectureError(
            f"unpact does not know the architecture {model_type!r} (config.model_type); "
            f"supported: {', '.join(supported_architectures())}",
            fix="register it with unpact.register_architecture(unpact.ArchSpec(model_type=..., embed=..., "
            "blocks=..., final_norm=..., unembed=..., attn=..., attn_out_proj=..., mlp=...)); see docs/architecture.md",
        ) from None


def resolve_path(root: nn.Module, path: str) -> nn.Module:
    """Follow a dotted attribute path (integers index ``ModuleList``) from ``root``.

    ``"a|b"`` tries path ``a`` then path ``b`` (module names that changed across library versions).

    Raises:
        AttributeError: Naming the first missing component and the full path.
    """
    if "|" in path:
        errors = []
        for alt in path.split("|"):
            try:
                return resolve_path(root, alt)
            except AttributeError as exc:
                errors.append(str(exc))
        raise AttributeError("; ".join(errors))
    obj: Any = root
    for part in path.split("."):
        if part.isdigit() and isinstance(obj, (nn.ModuleList, nn.Sequential, list, tuple)):
            obj = obj[int(part)]
            continue
        if not hasattr(obj, part):
            raise AttributeError(
                f"module path {path!r}: {type(obj).__name__} has no attribute {part!r}; "
                "the registered ArchSpec does not match this model"
            )
        obj = getattr(obj, part)
    if not isinstance(obj, nn.Module):
        raise AttributeError(f"module path {path!r} leads to a {type(obj).__name__}, not a module")
    return obj


def _stores_in_out(module: nn.Module) -> bool:
    """True for transformers' ``Conv1D`` (GPT-2), whose weight is ``(in, out)``; ``nn.Linear`` stores ``(out, in)``."""
    return type(module).__name__ == "Conv1D"


def weight_in_out(module: nn.Module) -> torch.Tensor:
    """The weight of a linear-like layer as ``(in_features, out_features)``, whatever its storage (or offload)."""
    from unpact._devices import param_value

    w = param_value(module, "weight")
    return w if _stores_in_out(module) else w.T


def in_features(module: nn.Module) -> int:
    """Input width of a linear-like layer (``nn.Linear`` or ``Conv1D``)."""
    m: Any = module
    if hasattr(m, "in_features"):
        return int(m.in_features)
    weight = getattr(m, "weight", None)
    if weight is None:
        raise ArchitectureError(
            f"cannot read the input width of {type(module).__name__} (no in_features or weight)",
            fix="point the ArchSpec's attn_out_proj at a linear layer",
        )
    return int(weight.shape[0] if _stores_in_out(module) else weight.shape[1])


def out_features(module: nn.Module) -> int:
    """Output width of a linear-like layer (``nn.Linear``, ``Conv1D`` or an embedding used as one)."""
    m: Any = module
    if hasattr(m, "out_features"):
        return int(m.out_features)
    if hasattr(m, "nf"):  # Conv1D
        return int(m.nf)
    return int(m.weight.shape[0])


def _llama_like(model_type: str, **kw: Any) -> ArchSpec:
    base: dict[str, Any] = dict(
        model_type=model_type,
        embed="model.embed_tokens",
        blocks="model.layers",
        final_norm="model.norm",
        unembed="lm_head",
        attn="self_attn",
        attn_out_proj="self_attn.o_proj",
        mlp="mlp",
        mlp_out_proj="mlp.down_proj",
        additive_writes=True,
        accepts_4d_mask=True,
    )
    base.update(kw)
    return ArchSpec(**base)


def _register_builtins() -> None:
    builtins = [
        ArchSpec(
            model_type="gpt2",
            embed="transformer.wte",
            blocks="transformer.h",
            final_norm="transformer.ln_f",
            unembed="lm_head",
            attn="attn",
            attn_out_proj="attn.c_proj",
            mlp="mlp",
            mlp_out_proj="mlp.c_proj",
            n_layers_attr="n_layer",
            n_heads_attr="n_head",
            n_kv_heads_attr=None,
            d_model_attr="n_embd",
            d_head_attr=None,
            additive_writes=True,
            accepts_4d_mask=True,
            notes="Learned absolute position embeddings (transformer.wpe) are added to the input.",
        ),
        ArchSpec(
            model_type="gpt_neox",
            embed="gpt_neox.embed_in",
            blocks="gpt_neox.layers",
            final_norm="gpt_neox.final_layer_norm",
            unembed="lm_head|embed_out",
            attn="attention",
            attn_out_proj="attention.dense",
            mlp="mlp",
            mlp_out_proj="mlp.dense_4h_to_h",
            n_kv_heads_attr=None,
            d_head_attr=None,
            parallel_residual=True,
            parallel_residual_attr="use_parallel_residual",
            parallel_norms=("input_layernorm", "post_attention_layernorm"),
            additive_writes=True,
            accepts_4d_mask=True,
            notes="Parallel residual when config.use_parallel_residual (Pythia default).",
        ),
        _llama_like("llama"),
        _llama_like("mistral"),
        _llama_like("qwen2"),
        _llama_like("qwen3"),
        _llama_like("gemma", notes="Embeddings are scaled by sqrt(d_model) inside the model."),
        _llama_like(
            "gemma2",
            logit_softcap_attr="final_logit_softcapping",
            additive_writes=False,
            notes="Sandwich norms: attention and MLP outputs pass a post-norm before the residual.",
        ),
        _llama_like("phi3", notes="Fused qkv_proj and gate_up_proj."),
        ArchSpec(
            model_type="opt",
            embed="model.decoder.embed_tokens",
            blocks="model.decoder.layers",
            final_norm="model.decoder.final_layer_norm",
            unembed="lm_head",
            attn="self_attn",
            attn_out_proj="self_attn.out_proj",
            mlp="fc2",
            mlp_out_proj="fc2",
            n_kv_heads_attr=None,
            d_head_attr=None,
            pre_norm_attr="do_layer_norm_before",
            additive_writes=True,
            accepts_4d_mask=False,
            notes=(
                "OPT has no MLP submodule: the MLP site is fc2's output. Models with "
                "word_embed_proj_dim != hidden_size (project_in/out) are not supported."
            ),
        ),
    ]
    for spec in builtins:
        register_architecture(spec, overwrite=True)


_register_builtins()


def config_int(config: Any, attr: str | None, default: int | None = None) -> int | None:
    """Read an integer attribute from a (possibly nested text) config, or ``default``."""
    if attr is None:
        return default
    value = getattr(config, attr, None)
    if value is None and hasattr(config, "get_text_config"):
        value = getattr(config.get_text_config(), attr, None)
    return int(value) if value is not None else default


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Apply ``cap * tanh(logits / cap)`` when ``cap`` is set (Gemma 2), else return as is."""
    if cap is None or cap <= 0:
        return logits
    return cap * torch.tanh(logits / cap)


def sliding_window(config: Any) -> int | None:
    """The attention window of a model whose layers (some or all) attend to a sliding window, else ``None``.

    Reads ``config.layer_types`` (``"sliding_attention"``) where the config has it, else
    ``use_sliding_window`` (Qwen2 keeps a ``sliding_window`` value with the window off) and
    ``sliding_window`` (Mistral, Gemma 2).
    """
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return window if any("sliding" in str(t) for t in layer_types) else None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return window
