"""The recording forward of detection and what it decides from the recorded tensors.

:func:`probe` runs the model once with every candidate part recorded, then picks the attention output
projection (the linear layer whose output is the attention output), the final norm (the one the
unembedding reads) and the final logit transform (none, scale, divisor or soft-cap from the config),
and checks additive residual writes and a parallel residual (perturbing block 0's attention output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from unpact._arch import in_features
from unpact._arch_detect.find import Found, blocks_of
from unpact._arch_detect.names import DIVISOR, SCALE, SOFTCAP
from unpact._arch_detect.record import Recorder, Verdict, first_of, forward_logits, input_of, rel_err, tolerance


def _numeric_attrs(cfg: Any) -> list[tuple[str, float]]:
    """Positive numbers in the config (and its text config), known logit attributes first."""
    items: dict[str, float] = {}
    for c in (cfg, cfg.get_text_config() if hasattr(cfg, "get_text_config") else None):
        if c is None:
            continue
        values = c.to_dict() if hasattr(c, "to_dict") else dict(vars(c))
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v != 1 and k not in items:
                items[k] = float(v)
    known = (*SOFTCAP, *SCALE, *DIVISOR)
    return sorted(items.items(), key=lambda kv: (kv[0] not in known, "logit" not in kv[0], kv[0]))


def _find_transform(cfg: Any, ours: torch.Tensor, theirs: torch.Tensor, tol: float) -> tuple[dict[str, str], str]:
    """``({spec field: config attribute}, description)`` of the map ``ours -> theirs``; ``({}, why)`` if none."""
    err = rel_err(ours, theirs)
    if err <= tol:
        return {}, "unembed(final_norm(h)) as is"
    x = ours.double()
    tried: list[tuple[str, Callable[[float], torch.Tensor], str]] = [
        ("logit_scale_attr", lambda c: x * c, "* {a}"),
        ("logit_divisor_attr", lambda c: x / c, "/ {a}"),
        ("logit_softcap_attr", lambda c: c * torch.tanh(x / c), "soft-cap {a} * tanh(x / {a})"),
    ]
    for attr, value in _numeric_attrs(cfg):
        for spec_field, fn, desc in tried:
            if spec_field == "logit_softcap_attr" and "cap" not in attr:
                continue  # a soft-cap with a large unrelated number is close to the identity: only try soft-caps
            if rel_err(fn(value), theirs) <= tol:
                return {spec_field: attr}, "unembed(final_norm(h)) " + desc.format(a=f"config.{attr}")
    return {}, (
        f"unembed(final_norm(h)) differs from the model's logits by {err:.2g} (relative) and no final transform "
        "unpact knows (a config attribute as a scale, divisor or soft-cap) closes the gap"
    )


def probe(model: nn.Module, f: Found, ids: torch.Tensor, v: Verdict) -> torch.Tensor:
    """One recording forward: picks the final norm and output projection, checks the logits and additive writes.

    Returns:
        ``(batch, seq, vocab)`` logits of ``ids``.
    """
    blocks = blocks_of(model, f.found["blocks"])
    rec = Recorder()
    attn_p, mlp_p = f.found["attn"], f.found["mlp"]
    try:
        rec.inputs("unembed", model.get_submodule(f.found["unembed"]))
        rec.outputs("embed", model.get_submodule(f.found["embed"]))
        for n in f.final_norm_candidates:
            rec.inputs(f"norm_in:{n}", model.get_submodule(n))
            rec.outputs(f"norm:{n}", model.get_submodule(n))
        for i, b in enumerate(blocks):
            rec.inputs(f"x{i}", b)
            rec.outputs(f"y{i}", b)
            rec.inputs(f"attn_in{i}", b.get_submodule(attn_p))
            rec.outputs(f"a{i}", b.get_submodule(attn_p))
            rec.inputs(f"mlp_in{i}", b.get_submodule(mlp_p))
            rec.outputs(f"m{i}", b.get_submodule(mlp_p))
        for c in f.out_proj_candidates:
            rec.outputs(f"proj:{c}", blocks[0].get_submodule(c))
        for n in f.block_norms:
            rec.inputs(f"bn_in:{n}", blocks[0].get_submodule(n))
            rec.outputs(f"bn:{n}", blocks[0].get_submodule(n))
        logits = forward_logits(model, ids)
    finally:
        rec.remove()
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    tol = tolerance(dtype)
    if rec.modified_in_place("embed"):
        v.disabled["ig"] = (
            "the model changes the token-embedding output in place after the embedding module returns it (e.g. "
            "scales it), so a replaced embedding (integrated gradients) is edited by the model, and autograd may "
            "refuse it"
        )
    v.checks["embed"] = "edited in place by the model" if "ig" in v.disabled else "read as returned"
    _pick_out_proj(f, rec, v, tol)
    _check_decode(model, f, rec, v, logits, tol)
    _check_additive(f, rec, v, len(blocks), tol, model.config)
    _check_parallel(model, f, rec, v, ids, tol)
    return logits


def _pick_out_proj(f: Found, rec: Recorder, v: Verdict, tol: float) -> None:
    a = rec.out.get("a0")
    exact = [c for c in f.out_proj_candidates if a is not None and rel_err(rec.out[f"proj:{c}"], a) <= tol]
    v.out_proj = exact[0] if exact else f.out_proj_candidates[0]
    v.checks["attn_out_proj"] = (
        f"{v.out_proj}: its output is the attention output"
        if exact
        else f"{v.out_proj} (by name; the attention module changes the projection's output before returning it)"
    )
    if not exact:
        v.disabled["circuits"] = (
            f"no linear layer inside {f.found['attn']} writes the attention output, so its input is not known to "
            "be the per-head outputs (head_out)"
        )
    assert f.block0 is not None  # set with the block list
    width = in_features(f.block0.get_submodule(v.out_proj))
    if f.n_heads and width % f.n_heads:
        v.disabled["circuits"] = (
            f"the attention output projection {v.out_proj} reads {width} features, not divisible by "
            f"{f.n_heads} heads, so per-head outputs cannot be split"
        )


def _check_decode(model: nn.Module, f: Found, rec: Recorder, v: Verdict, logits: torch.Tensor, tol: float) -> None:
    head_in = rec.inp.get("unembed")
    called = [n for n in f.final_norm_candidates if f"norm:{n}" in rec.out]
    feeding = [n for n in called if head_in is not None and rel_err(rec.out[f"norm:{n}"], head_in) <= tol]
    if feeding:
        v.final_norm = feeding[0]
    elif called:
        v.final_norm = max(called, key=lambda n: rec.order.index(f"norm:{n}"))
    else:
        v.missing["final_norm"] = "no norm module outside the blocks runs in the forward"
        return
    normed = rec.out[f"norm:{v.final_norm}"]
    with torch.no_grad():
        ours = model.get_submodule(f.found["unembed"])(normed)
    v.transform, how = _find_transform(model.config, ours, logits, tol)
    v.decode_ok = not how.startswith("unembed(final_norm(h)) differs")
    v.checks["logits"] = how
    if not feeding:
        v.checks["final_norm"] = (
            f"{v.final_norm}: the last norm beside the blocks (the unembedding reads another input)"
        )
    if not v.decode_ok:
        v.disabled["lens"] = how
        v.disabled["scoring"] = f"answer scores decode the final-normed residual, and {how}"
        return
    last, norm_in = rec.out.get(f"y{f.n_blocks - 1}"), rec.inp.get(f"norm_in:{v.final_norm}")
    err = rel_err(norm_in, last) if last is not None and norm_in is not None else float("inf")
    v.lens_ok = err <= tol
    if not v.lens_ok:
        v.disabled["lens"] = (
            f"the final norm {v.final_norm} does not read the last block's output (relative difference {err:.2g}), "
            "so decoding an earlier layer through it is not the logit lens"
        )


def _classify(f: Found, rec: Recorder, v: Verdict, tol: float, cfg: Any) -> str:
    """Why block 0's writes do not add up, as well as the recorded tensors tell."""
    a, m, x, y = rec.out.get("a0"), rec.out.get("m0"), rec.inp.get("x0"), rec.out.get("y0")
    if y is not None and m is not None and rel_err(m, y) <= tol:
        return "the MLP module returns the residual sum itself, so its output is not its own write"
    proj = rec.out.get(f"proj:{v.out_proj}")
    if a is not None and x is not None and proj is not None and a.shape == x.shape:
        if rel_err(a.double() - x.double(), proj) <= tol:
            return "the attention module adds the residual to its output itself, so its output is not its own write"
    if a is not None and m is not None and x is not None and y is not None and a.numel() == m.numel() == x.numel():
        writes = a.double().reshape(x.shape) + m.double().reshape(x.shape)
        for attr, c in _numeric_attrs(cfg):
            if rel_err(x.double() + c * writes, y) <= tol:
                return f"the attention and MLP outputs are multiplied by config.{attr} before they join the residual"
    for n in f.block_norms:
        inp = rec.inp.get(f"bn_in:{n}")
        if inp is None:
            continue
        if a is not None and rel_err(inp, a) <= tol:
            return f"a norm ({n}) normalises the attention output before it joins the residual (sandwich norm)"
        if m is not None and rel_err(inp, m) <= tol:
            return f"a norm ({n}) normalises the MLP output before it joins the residual (sandwich norm)"
        if y is not None and f"bn:{n}" in rec.out and rel_err(y, rec.out[f"bn:{n}"]) <= tol:
            return f"post-LN: the block output is {n}'s output (the residual is normalised after the sub-layers)"
    return "the sub-layer outputs are scaled or transformed before they join the residual"


def _check_additive(f: Found, rec: Recorder, v: Verdict, n_blocks: int, tol: float, cfg: Any) -> None:
    worst = 0.0
    for i in range(n_blocks):
        for key in (f"a{i}", f"m{i}"):
            if rec.modified_in_place(key):
                part = "attention" if key.startswith("a") else "MLP"
                v.disabled["circuits"] = (
                    f"block {i} changes its {part} output in place after the module returns it (e.g. adds the other "
                    "sub-layer into it), so a hook's copy of it is not what joins the residual"
                )
                v.checks["additive"] = f"no: in-place edit of the {part} output in block {i}"
                return
        parts = [rec.inp.get(f"x{i}"), rec.out.get(f"a{i}"), rec.out.get(f"m{i}"), rec.out.get(f"y{i}")]
        if any(p is None for p in parts):
            v.checks["additive"] = f"unknown: block {i}'s input, output or a sub-layer output was not seen"
            v.disabled["circuits"] = v.checks["additive"]
            return
        x, a, m, y = parts
        assert x is not None and a is not None and m is not None and y is not None
        if a.numel() != y.numel() or m.numel() != y.numel():
            err = float("inf")
        else:
            err = rel_err(x.double() + a.double().reshape(x.shape) + m.double().reshape(x.shape), y)
        worst = max(worst, err)
        if err > tol:
            why = _classify(f, rec, v, tol, cfg) if i == 0 else "block writes do not add up"
            v.disabled["circuits"] = (
                f"block {i}'s output is not its input + attention output + MLP output (relative error {err:.2g}): {why}"
            )
            v.checks["additive"] = f"no ({why})"
            return
    v.additive = True
    v.checks["additive"] = f"yes (relative error {worst:.1g})"


def _check_parallel(model: nn.Module, f: Found, rec: Recorder, v: Verdict, ids: torch.Tensor, tol: float) -> None:
    """Perturb block 0's attention output: an MLP input that does not move means a parallel residual."""
    before = rec.inp.get("mlp_in0")
    block = blocks_of(model, f.found["blocks"])[0]
    if before is None:
        v.checks["parallel"] = "unknown (the MLP input was not seen); assumed sequential"
        return
    after: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(1)

    def perturb(mod: nn.Module, args: Any, output: Any) -> Any:
        t = first_of(output)
        noise = torch.randn(t.shape, generator=gen).to(t) * (t.float().std() + 1.0).to(t.dtype)
        return (t + noise, *output[1:]) if isinstance(output, tuple) else t + noise

    def read(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        t = input_of(args, kwargs)
        if t is not None:
            after["mlp_in"] = t.detach().clone()

    handles = [
        block.get_submodule(f.found["attn"]).register_forward_hook(perturb),
        block.get_submodule(f.found["mlp"]).register_forward_pre_hook(read, with_kwargs=True),
    ]
    try:
        forward_logits(model, ids)
    finally:
        for h in handles:
            h.remove()
    if "mlp_in" not in after or rel_err(after["mlp_in"], before) > tol:
        v.checks["parallel"] = "no"
        return
    v.parallel = True
    reads: dict[str, list[str]] = {}
    for role, key in (("attn", "attn_in0"), ("mlp", "mlp_in0")):
        norms = [n for n in f.block_norms if rec.fed(f"bn:{n}", key, tol)[1] and _reads_block_input(rec, n, tol)]
        same = [n for n in norms if rec.fed(f"bn:{n}", key, tol)[0]]
        reads[role] = same or norms
    if reads["attn"] and reads["mlp"] and reads["attn"][0] != reads["mlp"][0]:
        v.parallel_norms = (reads["attn"][0], reads["mlp"][0])
        v.checks["parallel"] = f"yes: attention reads {reads['attn'][0]}, MLP reads {reads['mlp'][0]}"
        return
    shared = reads["attn"][0] if reads["attn"] and reads["attn"] == reads["mlp"] else None
    why = (
        f"attention and MLP read one shared norm ({shared})"
        if shared
        else "the norms attention and MLP read were not found"
    )
    v.checks["parallel"] = f"yes: {why}"
    v.disabled.setdefault(
        "circuits", f"parallel residual where {why}: edge patching cannot give attention and MLP separate inputs"
    )


def _reads_block_input(rec: Recorder, norm: str, tol: float) -> bool:
    x, inp = rec.inp.get("x0"), rec.inp.get(f"bn_in:{norm}")
    return x is not None and inp is not None and rel_err(inp, x) <= tol
