"""Locate a causal LM's parts from its module structure, names and shapes (no forward runs).

:func:`find_structure` finds the token embedding and unembedding (``get_input/output_embeddings()``),
the block list (the ``nn.ModuleList`` of ``config.num_hidden_layers`` blocks of one class holding an
attention module), in block 0 the attention module, its output-projection candidates, the MLP, the MLP's
output projection (when there is a single one) and the block's norms, the final-norm candidates beside the
block list, and the config attributes for the sizes.
The result is a :class:`Found`; the forwards in :mod:`unpact._arch_detect.probe` and
:mod:`unpact._arch_detect.verify` pick among the candidates and check the guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from unpact._arch import config_int, out_features
from unpact._arch_detect.names import (
    ATTN_NAMES,
    D_MODEL,
    FINAL_NORM_NAMES,
    MLP_NAMES,
    MLP_OUT_NAMES,
    N_HEADS,
    N_KV_HEADS,
    N_LAYERS,
    OUT_PROJ_NAMES,
)


# ----- module predicates -------------------------------------------------------------------------------------------
def _is_linear(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D":
        return True
    w = getattr(m, "weight", None)
    return hasattr(m, "in_features") and hasattr(m, "out_features") and isinstance(w, torch.Tensor) and w.dim() == 2


def _is_norm(m: nn.Module) -> bool:
    if isinstance(m, (nn.LayerNorm, nn.GroupNorm)) or type(m).__name__ == "RMSNorm":
        return True
    name = type(m).__name__.lower()
    return "norm" in name and not _is_linear(m) and not any(True for _ in m.children())


def _is_plumbing(m: nn.Module) -> bool:
    """Leaf helpers that are never a sub-layer: linear, norm, dropout, embedding, activation, rotary."""
    name = type(m).__name__.lower()
    return (
        _is_linear(m)
        or _is_norm(m)
        or isinstance(m, (nn.Dropout, nn.Embedding, nn.Identity))
        or "rotary" in name
        or "embedding" in name
        or not any(True for _ in m.parameters())
    )


def _last(path: str) -> str:
    return path.rsplit(".", 1)[-1].lower()


def _rank(path: str, names: tuple[str, ...]) -> int:
    last = _last(path)
    return names.index(last) if last in names else len(names)


def _inside(path: str, parent: str) -> bool:
    return bool(parent) and (path == parent or path.startswith(parent + "."))


def _config_attr(cfg: Any, names: tuple[str, ...], want: int | None = None) -> str | None:
    """The first of ``names`` that the config holds as an integer (equal to ``want`` when given)."""
    for name in names:
        try:
            value = config_int(cfg, name)
        except (TypeError, ValueError):
            continue
        if value is not None and (want is None or value == want):
            return name
    return None


# ----- structure -------------------------------------------------------------------------------------------------
def _find_attn(block: nn.Module) -> str | None:
    best: tuple[tuple[int, int, int], str] | None = None
    for rel, m in block.named_modules():
        if not rel or _is_plumbing(m) or "norm" in _last(rel):
            continue
        cls = type(m).__name__.lower()
        named = _last(rel) in ATTN_NAMES
        if not (named or "attention" in cls or "attn" in cls):
            continue
        if not any(_is_linear(x) for x in m.modules()):
            continue
        key = (rel.count("."), 0 if named else 1, _rank(rel, ATTN_NAMES))
        if best is None or key < best[0]:
            best = (key, rel)
    return best[1] if best else None


def _find_mlp(block: nn.Module, attn: str, d_model: int) -> tuple[str | None, str]:
    """``(path, how)`` of the MLP in ``block``: a named sub-module, else the last linear writing ``d_model``."""
    best: tuple[tuple[int, int, int], str] | None = None
    for rel, m in block.named_modules():
        if not rel or _inside(rel, attn) or _is_plumbing(m) or "norm" in _last(rel):
            continue
        cls = type(m).__name__.lower()
        named = _last(rel) in MLP_NAMES
        if not (named or re.search(r"mlp|feedforward|feed_forward|ffn|moe", cls)):
            continue
        key = (rel.count("."), 0 if named else 1, _rank(rel, MLP_NAMES))
        if best is None or key < best[0]:
            best = (key, rel)
    if best is not None:
        return best[1], "module"
    linears = [
        (rel, i)
        for i, (rel, m) in enumerate(block.named_modules())
        if rel and not _inside(rel, attn) and _is_linear(m) and out_features(m) == d_model
    ]
    if not linears:
        return None, "no MLP module and no linear layer outside the attention writes d_model features"
    rel = min(linears, key=lambda t: (_rank(t[0], MLP_OUT_NAMES), -t[1]))[0]
    return rel, f"no MLP module: the MLP site is the output of {rel}"


def _find_mlp_out(block: nn.Module, mlp: str, d_model: int) -> tuple[str | None, str]:
    """``(path, why)`` of the MLP's output projection in ``block``: the MLP itself when it is one linear
    layer (OPT's ``fc2``), else its one linear layer writing ``d_model`` features (several: the one named
    as in :data:`MLP_OUT_NAMES`); ``None`` when there is no single one (a mixture of experts)."""
    module = block.get_submodule(mlp)
    if _is_linear(module):
        return mlp, "the MLP is a linear layer"
    if any(p.dim() > 2 for p in module.parameters()) or any(
        "expert" in rel.lower() for rel, _ in module.named_modules()
    ):
        return None, f"{mlp} is a mixture of experts (no one matrix writes its output)"
    cands = [rel for rel, m in module.named_modules() if rel and _is_linear(m) and out_features(m) == d_model]
    if len(cands) > 1:
        cands = [rel for rel in cands if _last(rel) in MLP_OUT_NAMES]
    if len(cands) == 1:
        return f"{mlp}.{cands[0]}", "the MLP's one linear layer writing d_model features"
    what = "no linear layer" if not cands else f"{len(cands)} linear layers"
    return None, f"{mlp} has {what} writing d_model={d_model} features"


def _out_proj_candidates(attn: nn.Module, d_model: int) -> list[str]:
    """Linear layers inside the attention that write ``d_model`` features, best-named then last-registered first."""
    found = [
        (rel, i) for i, (rel, m) in enumerate(attn.named_modules()) if _is_linear(m) and out_features(m) == d_model
    ]
    return [rel for rel, _ in sorted(found, key=lambda t: (_rank(t[0], OUT_PROJ_NAMES), -t[1]))]


def _find_blocks(model: nn.Module, n_layers: int | None) -> tuple[str | None, list[str]]:
    """Path of the block list (most parameters among the fitting ones) and the lists seen (for errors)."""
    seen: list[str] = []
    best: tuple[int, str] | None = None
    for name, m in model.named_modules():
        if not isinstance(m, (nn.ModuleList, nn.Sequential)) or len(m) == 0 or not name:
            continue
        seen.append(f"{name} ({len(m)} x {type(m[0]).__name__})")
        if len({type(b) for b in m}) != 1 or (n_layers is not None and len(m) != n_layers):
            continue
        if _find_attn(m[0]) is None:
            continue
        size = sum(p.numel() for p in m.parameters())
        if best is None or size > best[0]:
            best = (size, name)
    return (best[1] if best else None), seen


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _norms_outside(model: nn.Module, skip: list[str]) -> list[str]:
    return [n for n, m in model.named_modules() if n and _is_norm(m) and not any(_inside(n, s) for s in skip)]


@dataclass
class Found:
    """Parts found by structure (paths, candidates, config attributes), before any forward."""

    model_type: str
    found: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    out_proj_candidates: list[str] = field(default_factory=list)
    final_norm_candidates: list[str] = field(default_factory=list)
    block_norms: list[str] = field(default_factory=list)
    attrs: dict[str, str | None] = field(default_factory=dict)
    d_model: int = 0
    n_heads: int = 0
    block0: nn.Module | None = None
    vocab: int = 0
    n_blocks: int = 0


def find_structure(model: nn.Module) -> Found:
    cfg = getattr(model, "config", None)
    f = Found(str(getattr(cfg, "model_type", None) or "?"))
    if cfg is None:
        f.missing["config"] = f"{type(model).__name__} has no Hugging Face config"
    names = {id(m): n for n, m in model.named_modules()}
    for part, getter in (("embed", "get_input_embeddings"), ("unembed", "get_output_embeddings")):
        try:
            mod = getattr(model, getter)()
        except (AttributeError, NotImplementedError, TypeError):
            mod = None
        if isinstance(mod, nn.Module) and names.get(id(mod)):
            f.found[part] = names[id(mod)]
        else:
            f.missing[part] = f"model.{getter}() gives no module of the model"
    embed = model.get_submodule(f.found["embed"]) if "embed" in f.found else None
    weight = getattr(embed, "weight", None)
    f.d_model = int(weight.shape[-1]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else 0
    f.vocab = int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else 0
    n_layers_attr = _config_attr(cfg, N_LAYERS)
    n_layers = config_int(cfg, n_layers_attr) if n_layers_attr else None
    blocks_path, seen = _find_blocks(model, n_layers)
    if blocks_path is None:
        want = f"{n_layers} " if n_layers else ""
        f.missing["blocks"] = (
            f"no nn.ModuleList of {want}blocks of one class holding an attention module; lists seen: "
            + (", ".join(seen[:6]) or "none")
        )
    else:
        f.found["blocks"] = blocks_path
    f.attrs["n_layers"] = n_layers_attr
    d_attr = _config_attr(cfg, D_MODEL, f.d_model) if f.d_model else None
    if f.d_model and d_attr is None:
        f.missing["d_model"] = f"no config attribute ({', '.join(D_MODEL)}) equals the embedding width {f.d_model}"
    f.attrs["d_model"] = d_attr
    heads_attr = _config_attr(cfg, N_HEADS)
    if heads_attr is None:
        f.missing["n_heads"] = f"no config attribute for the number of heads ({', '.join(N_HEADS)})"
    else:
        f.n_heads = int(config_int(cfg, heads_attr) or 0)
    f.attrs["n_heads"] = heads_attr
    f.attrs["n_kv_heads"] = _config_attr(cfg, N_KV_HEADS)
    f.attrs["d_head"] = "head_dim" if isinstance(getattr(cfg, "head_dim", None), int) else None
    if blocks_path is not None:
        _find_block_parts(model, f, blocks_path)
    skip = [p for p in (blocks_path, f.found.get("embed"), f.found.get("unembed")) if p]
    parent = blocks_path.rsplit(".", 1)[0] if blocks_path and "." in blocks_path else ""
    # the final norm sits beside the block list (or at the top of the model), not inside another head
    norms = [n for n in _norms_outside(model, skip) if blocks_path is None or _parent(n) in (parent, "")]
    order = {n: i for i, n in enumerate(norms)}
    f.final_norm_candidates = sorted(norms, key=lambda n: (_parent(n) != parent, _rank(n, FINAL_NORM_NAMES), -order[n]))
    if f.final_norm_candidates:
        f.found["final_norm"] = f.final_norm_candidates[0]
    else:
        where = f"beside {blocks_path}" if blocks_path else "outside the blocks"
        f.missing["final_norm"] = (
            f"no norm module {where}: unpact reads the final-normed residual at the final norm's output "
            "(the 'final' site)"
        )
    for part, attr in f.attrs.items():
        if attr:
            f.found[f"config.{part}"] = attr
    return f


def blocks_of(model: nn.Module, path: str) -> list[nn.Module]:
    return list(cast(nn.ModuleList, model.get_submodule(path)))


def _find_block_parts(model: nn.Module, f: Found, blocks_path: str) -> None:
    blocks = blocks_of(model, blocks_path)
    block = f.block0 = blocks[0]
    f.n_blocks = len(blocks)
    attn = _find_attn(block)
    if attn is None:  # pragma: no cover - _find_blocks only keeps lists whose blocks hold one
        f.missing["attn"] = "no attention module in the blocks"
        return
    f.found["attn"] = attn
    cands = _out_proj_candidates(block.get_submodule(attn), f.d_model) if f.d_model else []
    if cands:
        f.out_proj_candidates = [f"{attn}.{c}" for c in cands]
        f.found["attn_out_proj"] = f.out_proj_candidates[0]
    else:
        f.missing["attn_out_proj"] = f"no linear layer inside {attn} writes d_model={f.d_model} features"
    mlp, how = _find_mlp(block, attn, f.d_model)
    if mlp is None:
        f.missing["mlp"] = how
    else:
        f.found["mlp"] = mlp
        if how != "module":
            f.notes.append(how)
        out, why = _find_mlp_out(block, mlp, f.d_model) if f.d_model else (None, "no d_model")
        if out is None:  # optional: only weight edits (AlphaEdit, UniErase) need it
            f.notes.append(f"no MLP output projection: {why}")
        else:
            f.found["mlp_out_proj"] = out
    f.block_norms = [
        rel
        for rel, m in block.named_modules()
        if rel and _is_norm(m) and not _inside(rel, attn) and not (mlp and _inside(rel, mlp))
    ]
    for part in ("attn", "attn_out_proj", "mlp", "mlp_out_proj"):
        path = f.found.get(part)
        if path is None:
            continue
        for i, b in enumerate(blocks[1:], start=1):
            try:
                b.get_submodule(path)
            except AttributeError:
                if part == "mlp_out_proj":  # optional: drop it rather than refuse the model
                    del f.found[part]
                    f.notes.append(f"no MLP output projection: block 0 has {path} but block {i} does not")
                else:
                    f.missing[part] = f"block 0 has {path} but block {i} does not"
                break
