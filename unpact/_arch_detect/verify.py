"""The checking forwards after the probe, and the spec they yield.

:func:`check_causal` (changing the last token leaves earlier logits alone), :func:`check_masks` (left
padding with a 2-D mask and position ids; a 4-D additive mask), :func:`check_sites` (the hook sites
attach through :func:`unpact.hooks.hooked` and give the same numbers) and :func:`build_spec` (the
:class:`~unpact._arch.ArchSpec` from the parts found and the :class:`Verdict`).

:func:`check_sites` imports :mod:`unpact.hooks` and :mod:`unpact.models` inside the function: both
import (or lead to) :mod:`unpact.models`, which imports this package.
"""

from __future__ import annotations

import torch
from torch import nn

from unpact._arch import ArchSpec
from unpact._arch_detect.find import Found
from unpact._arch_detect.names import FEATURES, PAD
from unpact._arch_detect.record import Verdict, forward_logits, rel_err
from unpact.errors import ArchitectureError


def _padded_batch(ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Row 1 left-padded by ``PAD``: ``(ids, mask2d, position_ids, mask4d)``, ``mask4d`` additive ``(2, 1, S, S)``."""
    mask = torch.ones_like(ids)
    mask[1, :PAD] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0) * mask
    s = ids.shape[1]
    q = torch.arange(s)[:, None]
    k = torch.arange(s)[None, :]
    allowed = (k <= q)[None] & mask.bool()[:, None, :].cpu()
    allowed |= (k == q)[None]  # a padding query sees itself (its output is never read)
    mask4 = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
    return ids, mask, pos, mask4.to(ids.device)


def check_masks(model: nn.Module, ids: torch.Tensor, v: Verdict, tol: float, dtype: torch.dtype) -> None:
    ids, mask, pos, mask4 = _padded_batch(ids, dtype)
    try:
        two_d = forward_logits(model, ids, attention_mask=mask, position_ids=pos)
    except Exception as exc:  # any failure of the model's own forward is a finding
        v.checks["left_padding"] = f"the forward with a 2-D mask and position ids fails: {type(exc).__name__}: {exc}"
        v.missing["left_padding"] = v.checks["left_padding"] + " (every batched pass sends both)"
        return
    single = forward_logits(model, ids[1:, PAD:], position_ids=pos[1:, PAD:])
    err = rel_err(two_d[1, PAD:], single[0])
    if err <= tol:
        v.checks["left_padding"] = f"yes (relative error {err:.1g})"
    else:
        v.checks["left_padding"] = f"no: a left-padded row's logits differ from the unpadded row's by {err:.2g}"
        v.missing["left_padding"] = (
            f"with left padding (a 2-D attention mask and position ids, as every batched pass sends) a row's logits "
            f"differ from the same row's alone by {err:.2g} (relative)"
        )
    try:
        four_d = forward_logits(model, ids, attention_mask=mask4, position_ids=pos)
    except Exception as exc:  # the model refusing a 4-D mask is what this checks
        v.checks["accepts_4d_mask"] = f"no: the forward raises {type(exc).__name__} ({str(exc)[:160]})"
        v.disabled["attn_bias"] = f"the model's forward refuses a 4-D additive attention mask ({type(exc).__name__})"
        return
    real = mask.bool()
    err = rel_err(four_d[real], two_d[real]) if four_d.shape == two_d.shape else float("inf")
    if err <= tol:
        v.accepts_4d_mask = True
        v.checks["accepts_4d_mask"] = f"yes (relative error {err:.1g})"
    else:
        v.checks["accepts_4d_mask"] = f"no: logits with the 4-D mask differ by {err:.2g} (relative)"
        v.disabled["attn_bias"] = "the model ignores or reinterprets a 4-D additive attention mask " + (
            f"(logits differ by {err:.2g})"
        )


def check_causal(model: nn.Module, ids: torch.Tensor, logits: torch.Tensor, v: Verdict, tol: float) -> None:
    """Changing the last token must leave every earlier position's logits as they were (teacher forcing needs it)."""
    changed = ids.clone()
    changed[:, -1] = torch.where(ids[:, -1] == ids[0, 0], ids[0, 1], ids[0, 0])
    err = rel_err(forward_logits(model, changed)[:, :-1], logits[:, :-1])
    if err <= tol:
        v.checks["causal"] = "yes"
    else:
        v.checks["causal"] = f"no (earlier logits moved by {err:.2g})"
        v.missing["causal"] = (
            f"the model is not causal: changing the last token moves earlier positions' logits by {err:.2g} "
            "(relative); teacher-forced scoring would see the answer"
        )


def check_sites(model: nn.Module, spec: ArchSpec, ids: torch.Tensor, v: Verdict, tol: float) -> None:
    """The hook sites tracers use attach, and give back the logits (and the additive writes) the probe saw."""
    from unpact.hooks import hooked
    from unpact.models import Subject

    try:
        subject = Subject(model=model, tokenizer=None, spec=spec, name=f"detect:{spec.model_type}")
    except ArchitectureError as exc:
        v.missing["sites"] = f"the detected map does not resolve: {exc}"
        return
    n = subject.n_layers
    core = ["embed", "final", *[f"resid_pre.{i}" for i in range(n)], *[f"resid_post.{i}" for i in range(n)]]
    try:
        with hooked(subject, cache=core) as cache:
            logits = forward_logits(model, ids)
    except Exception as exc:  # a hook site that cannot attach makes the model unusable
        v.missing["sites"] = f"the hook sites do not attach: {type(exc).__name__}: {exc}"
        return
    if spec.decode_ok:
        err = rel_err(subject.decode_resid(cache["final"]), logits)
        if err > tol:
            v.missing["sites"] = f"Subject.decode_resid at the 'final' site is {err:.2g} off the model's logits"
            return
    layer_sites = [f"{k}.{i}" for k in ("attn_out", "mlp_out", "head_out") for i in range(n)]
    try:
        with hooked(subject, cache=core + layer_sites) as cache:
            forward_logits(model, ids)
    except Exception as exc:  # these sites serve circuits only
        v.disabled["circuits"] = f"the attn_out / mlp_out / head_out sites do not attach: {type(exc).__name__}: {exc}"
        return
    if spec.additive_writes:
        for i in range(n):
            total = cache[f"resid_pre.{i}"].double() + cache[f"attn_out.{i}"].double() + cache[f"mlp_out.{i}"].double()
            err = rel_err(total, cache[f"resid_post.{i}"])
            if err > tol:
                v.disabled["circuits"] = (
                    f"at the hook sites resid_post.{i} != resid_pre + attn_out + mlp_out ({err:.2g})"
                )
                v.additive = False
                return


def build_spec(f: Found, v: Verdict) -> ArchSpec:
    disabled = {k: r for k, r in v.disabled.items() if k in FEATURES}
    notes = ["Detected from the module's structure (unpact._arch_detect)", *f.notes]
    if "circuits" in disabled:
        notes.append(disabled["circuits"])
    return ArchSpec(
        model_type=f.model_type,
        embed=f.found["embed"],
        blocks=f.found["blocks"],
        final_norm=v.final_norm or f.found["final_norm"],
        unembed=f.found["unembed"],
        attn=f.found["attn"],
        attn_out_proj=v.out_proj or f.found["attn_out_proj"],
        mlp=f.found["mlp"],
        mlp_out_proj=f.found.get("mlp_out_proj"),
        n_layers_attr=f.attrs.get("n_layers") or "num_hidden_layers",
        n_heads_attr=f.attrs.get("n_heads") or "num_attention_heads",
        n_kv_heads_attr=f.attrs.get("n_kv_heads"),
        d_model_attr=f.attrs.get("d_model") or "hidden_size",
        d_head_attr=f.attrs.get("d_head"),
        logit_softcap_attr=v.transform.get("logit_softcap_attr"),
        logit_scale_attr=v.transform.get("logit_scale_attr"),
        logit_divisor_attr=v.transform.get("logit_divisor_attr"),
        parallel_residual=v.parallel,
        parallel_norms=v.parallel_norms,
        additive_writes=v.additive and "circuits" not in disabled,
        accepts_4d_mask=v.accepts_4d_mask,
        decode_ok=v.decode_ok,
        lens_ok=v.lens_ok,
        notes="; ".join(notes) + ".",
        extra={"detected": True, "disabled": disabled, "checks": dict(v.checks)},
    )
