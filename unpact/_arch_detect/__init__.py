"""Find the architecture map of a causal LM from its module structure, and verify it with forwards.

:func:`unpact.load_model` uses the :class:`~unpact._arch.ArchSpec` registered for ``config.model_type``
when there is one; for any other family it calls :func:`detect_architecture`, which

1. **finds the parts by structure, name patterns and shapes**: the token embedding
   (``get_input_embeddings()``), the unembedding (``get_output_embeddings()``), the block list (the
   ``nn.ModuleList`` of ``config.num_hidden_layers`` blocks of one class, each holding an attention
   module), in each block the attention module (``self_attn``, ``attention``, ``attn``,
   ``self_attention``... or a class named ``*Attention*``), its output projection (a linear layer
   inside it that writes ``d_model`` features: ``o_proj``, ``out_proj``, ``dense``, ``c_proj``...) and
   the MLP (``mlp``, ``feed_forward``, ``ffn``... or, as in OPT, the last linear layer outside the
   attention that writes ``d_model`` features), and the final norm (a norm module outside the blocks,
   preferably a sibling of the block list);
2. **verifies the guess with a few forwards** on random token ids (the model is left as it was found,
   no hook stays):

   * the final norm is the norm whose output the unembedding reads, and
     ``unembed(final_norm(h))`` reproduces the model's logits under one of the final transforms it
     knows (none, ``* config.logit_scale``, ``/ config.logits_scaling``, a soft-cap
     ``c * tanh(x / c)`` with ``config.final_logit_softcapping``; any numeric config attribute is
     tried). Otherwise ``lens_ok=False``: decoding the final-normed residual (the logit lens, and the
     scoring passes that decode it) is refused with the reason;
   * the attention output projection is the linear layer whose output *is* the attention output,
     and its input width divides by ``num_attention_heads`` (the ``head_out`` site reshapes it);
   * parallel residual: the MLP input does not change when the attention output is perturbed (the
     norms that attention and MLP read are found by comparing tensors, not names);
   * ``additive_writes``: every block's output equals its input + the attention output + the MLP
     output (relative tolerance ``1e-4``, wider for half precision) and no sub-layer output is
     changed in place after its hook saw it. A sandwich or post-norm, a residual multiplier or a
     sub-layer that adds the residual itself makes it False, with the reason;
   * ``accepts_4d_mask``: the logits with a ``(batch, 1, query, key)`` additive float mask (causal +
     left padding) equal those with the 2-D mask;
   * the hook sites (``embed``, ``resid_pre/post``, ``attn_out``, ``head_out``, ``mlp_out``, ``final``)
     attach through :func:`unpact.hooks.hooked` and give the same numbers.

The result is a :class:`Detection`: the :class:`ArchSpec` (``extra["detected"] = True``), the paths
found, the parts missing and the features disabled (``{feature: reason}``). Missing parts that every
tracer needs (embedding, blocks, final norm, unembedding, attention, its output projection, MLP, the
config's head count and width) make :meth:`Detection.raise_if_unusable` raise
:class:`~unpact.errors.UnknownArchitectureError`, which lists them and shows the
:func:`~unpact._arch.register_architecture` call to write instead (the registry always wins).

Architecture knowledge lives in :mod:`unpact._arch` (the registry) and in this package's
:mod:`~unpact._arch_detect.names` (the name patterns); nothing else tests a model by name.

The package: this module holds the entry points (:func:`detect_architecture`,
:func:`detect_from_config`) and :class:`Detection`; :mod:`~unpact._arch_detect.find` locates the parts
by structure and names, :mod:`~unpact._arch_detect.record` records forwards and compares tensors,
:mod:`~unpact._arch_detect.probe` runs the recording forward (output projection, final norm, logit
transform, additive writes, parallel residual) and :mod:`~unpact._arch_detect.verify` the other checks
(causality, left padding, 4-D mask, hook sites) and builds the spec.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from unpact._arch import ArchSpec, supported_architectures
from unpact._arch_detect.find import find_structure
from unpact._arch_detect.names import FEATURES, PATH_PARTS, SEQ
from unpact._arch_detect.probe import probe
from unpact._arch_detect.record import Verdict, tolerance
from unpact._arch_detect.verify import build_spec, check_causal, check_masks, check_sites
from unpact.errors import UnknownArchitectureError
from unpact.modelstate import frozen

logger = logging.getLogger(__name__)

__all__ = ["Detection", "detect_architecture", "detect_from_config", "FEATURES", "PATH_PARTS"]


@dataclass(frozen=True)
class Detection:
    """What :func:`detect_architecture` found in one model.

    Attributes:
        model_type: The model's ``config.model_type`` (``"?"`` without one).
        spec: The detected :class:`ArchSpec`, or ``None`` when an essential part is missing.
        found: ``{part: path}`` for every part found (``"blocks"`` paths are from the model, the
            per-block ones relative to a block), plus the config attributes used.
        missing: ``{part: why}`` for every part not found (any makes the model unusable).
        disabled: ``{feature: reason}`` for features of :data:`FEATURES` the checks switched off.
        checks: ``{check: outcome}``, one line each, for logs and docs.
        verified: The forwards ran (False for a structure-only detection, e.g. on the meta device).
    """

    model_type: str
    spec: ArchSpec | None
    found: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    disabled: dict[str, str] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    verified: bool = True

    @property
    def ok(self) -> bool:
        """True when every essential part was found (the model can be wrapped in a ``Subject``)."""
        return self.spec is not None and not self.missing

    def capabilities(self) -> dict[str, bool]:
        """``{feature: works}`` for each of :data:`FEATURES` (all False when not :attr:`ok`)."""
        return {f: self.ok and f not in self.disabled for f in FEATURES}

    def summary(self) -> str:
        """One paragraph: paths found, logit transform, parallel residual, features off."""
        if not self.ok:
            return f"{self.model_type}: not usable; missing " + "; ".join(f"{k} ({v})" for k, v in self.missing.items())
        spec = self.spec
        assert spec is not None  # ok implies a spec
        paths = ", ".join(f"{p}={self.found[p]}" for p in PATH_PARTS)
        caps = ", ".join(f"{f} {'on' if on else 'off'}" for f, on in self.capabilities().items())
        return (
            f"architecture detected from the module's structure: {paths}; logits: {self.checks.get('logits', '?')}; "
            f"parallel residual: {self.checks.get('parallel', '?')}; {caps}"
        )

    def registration(self) -> str:
        """The ``register_architecture`` call that pins this map (``"?"`` where a part is missing)."""
        parts = ", ".join(f"{p}={self.found.get(p, '?')!r}" for p in PATH_PARTS)
        if "mlp_out_proj" in self.found:  # optional (weight edits need it)
            parts += f", mlp_out_proj={self.found['mlp_out_proj']!r}"
        return f"unpact.register_architecture(unpact.ArchSpec(model_type={self.model_type!r}, {parts}, ...))"

    def raise_if_unusable(self) -> ArchSpec:
        """The detected spec, or raise when an essential part is missing.

        Returns:
            :attr:`spec`.

        Raises:
            UnknownArchitectureError: Naming the model type and each missing part with why, listing the
                registered families and showing the ``register_architecture`` call to write.
        """
        if self.spec is not None and self.ok:
            return self.spec
        missing = "; ".join(f"{k}: {v}" for k, v in self.missing.items()) or "no ArchSpec could be built"
        raise UnknownArchitectureError(
            f"unpact has no ArchSpec registered for {self.model_type!r} (registered: "
            f"{', '.join(supported_architectures())}) and could not map it from the module's structure: {missing}",
            source=f"detect_architecture ({self.model_type})",
            fix=f"register it with {self.registration()} filling in the parts marked '?' (paths from the "
            "*ForCausalLM module; attn, attn_out_proj and mlp relative to one block); see docs/models.md",
        )


def detect_architecture(model: nn.Module, *, verify: bool = True, seed: int = 0) -> Detection:
    """Map a causal LM's parts from its structure and check the map with a few forwards.

    Args:
        model: A Hugging Face ``*ForCausalLM`` module (any ``nn.Module`` with a ``config``).
        verify: Run the checking forwards (see the module docstring). Without them (or on the meta
            device) the spec holds the structural guess with every capability off except the lens.
        seed: Seed of the random probe token ids.

    Returns:
        The :class:`Detection`; call :meth:`Detection.raise_if_unusable` before using ``.spec``.
        Weights, train/eval mode and ``requires_grad`` flags are left as they were; no hook remains.

    Example:
        >>> from unpact._arch_detect import detect_architecture
        >>> d = detect_architecture(model)  # doctest: +SKIP
        >>> d.spec.blocks, d.capabilities()  # doctest: +SKIP
        ('model.layers', {'lens': True, 'scoring': True, 'attn_bias': True, 'circuits': True})
    """
    f = find_structure(model)
    if f.missing or not isinstance(model, nn.Module):
        return Detection(f.model_type, None, dict(f.found), dict(f.missing), verified=False)
    params = list(model.parameters())
    on_meta = any(p.is_meta for p in params)
    v = Verdict()
    if not verify or on_meta:
        v.lens_ok = v.decode_ok = not _logit_transform_in(model)
        if not v.decode_ok:
            v.disabled["lens"] = "the config names a final logit transform that only a verified load can place"
        v.checks["verified"] = "no (structure only)"
        v.disabled.update(circuits="not verified (structure only)", attn_bias="not verified (structure only)")
        return Detection(f.model_type, build_spec(f, v), dict(f.found), {}, dict(v.disabled), v.checks, False)
    dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    embed = model.get_submodule(f.found["embed"])
    vocab = int(getattr(embed, "num_embeddings", 0) or f.vocab)
    dev = params[0].device if params else torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(3, vocab - 1), vocab, (2, SEQ), generator=gen).to(dev)
    with frozen(model), torch.no_grad():
        try:
            logits = probe(model, f, ids, v)
            check_causal(model, ids, logits, v, tolerance(dtype))
            check_masks(model, ids, v, tolerance(dtype), dtype)
            if not v.missing:
                check_sites(model, build_spec(f, v), ids, v, tolerance(dtype))
        except (RuntimeError, TypeError, ValueError, IndexError, AttributeError) as exc:
            # the model's own forward refused the checking passes: no usable map, with the reason
            v.missing["forward"] = f"the checking forward failed ({type(exc).__name__}: {exc})"
    if v.missing:
        missing = {**f.missing, **v.missing}
        return Detection(f.model_type, None, dict(f.found), missing, dict(v.disabled), v.checks, True)
    spec = build_spec(f, v)
    found = {**f.found, "final_norm": spec.final_norm, "attn_out_proj": spec.attn_out_proj}
    return Detection(f.model_type, spec, found, {}, dict(spec.extra["disabled"]), v.checks, True)


def _logit_transform_in(model: Any) -> bool:
    """True if the config names a final logit transform (soft-cap, scale, divisor) by a known name."""
    cfg = getattr(model, "config", None)
    names = ("final_logit_softcapping", "logit_scale", "logits_scaling")
    return any(getattr(cfg, n, None) not in (None, 0, 1, 1.0) for n in names)


def detect_from_config(config: Any) -> Detection:
    """Structure-only detection from a config (a ``PretrainedConfig`` or a ``config.json`` dict), no weights read.

    The model is built on the meta device, so this is cheap; use it to refuse a directory before
    loading its weights. The capabilities are not verified (see :func:`detect_architecture`).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type = str(config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", "?"))
    try:
        if isinstance(config, dict):
            kw = {k: val for k, val in config.items() if k != "model_type"}
            config = AutoConfig.for_model(model_type, **kw)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # transformers cannot build it: say so
        why = f"transformers cannot build a causal LM from this config ({type(exc).__name__}: {str(exc)[:200]})"
        return Detection(model_type, None, {}, {"model": why}, verified=False)
    return detect_architecture(model, verify=False)
