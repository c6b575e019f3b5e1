"""Read or replace activations at named sites, through one context manager.

Sites (``L`` is a block index, ``0 <= L < n_layers``):

=================  ========================================  ==================================
name               what                                      shape
=================  ========================================  ==================================
``embed``          token embedding output                    ``(batch, seq, d_model)``
``resid_pre.L``    residual stream entering block L          ``(batch, seq, d_model)``
``resid_post.L``   residual stream leaving block L           ``(batch, seq, d_model)``
``attn_out.L``     attention module output of block L        ``(batch, seq, d_model)``
``head_out.L``     per-head outputs, input of the output     ``(batch, seq, n_heads, d_head)``
                   projection of block L
``mlp_out.L``      MLP output of block L                     ``(batch, seq, d_model)``
``final``          final-normed residual (unembedding input) ``(batch, seq, d_model)``
=================  ========================================  ==================================

A hook function has the TransformerLens signature ``fn(tensor, *, hook) -> tensor | None``: it
receives the activation and a :class:`HookInfo`; returning a tensor of the same shape replaces the
activation, returning ``None`` leaves it. Every hook is removed when the ``with`` block exits,
also when it raises.

Example:
    >>> with hooked(subject, {"head_out.1": zero_head_3}, cache=["final"]) as cache:
    ...     logits = subject.model(input_ids).logits
    >>> cache["final"].shape
    torch.Size([1, 7, 64])
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from unpact import _devices
from unpact.models import Subject, frozen

logger = logging.getLogger(__name__)

__all__ = ["HookInfo", "HookFn", "ActivationCache", "hooked", "run_with_cache", "site_names", "SITE_KINDS"]

SiteKind = Literal["embed", "resid_pre", "resid_post", "attn_out", "head_out", "mlp_out", "final"]
SITE_KINDS: tuple[str, ...] = ("embed", "resid_pre", "resid_post", "attn_out", "head_out", "mlp_out", "final")
_LAYERED = {"resid_pre", "resid_post", "attn_out", "head_out", "mlp_out"}
_SITE_RE = re.compile(r"^(?P<kind>[a-z_]+)(?:\.(?P<layer>-?\d+))?$")


@dataclass(frozen=True)
class HookInfo:
    """What a hook function is told about where it runs.

    Attributes:
        name: Canonical site name, e.g. ``"resid_post.3"``.
        kind: The site kind, e.g. ``"resid_post"``.
        layer: Block index, or ``None`` for ``embed`` / ``final``.
    """

    name: str
    kind: str
    layer: int | None


HookFn = Callable[..., "torch.Tensor | None"]


class ActivationCache(dict):
    """A ``dict`` from site name to the activation seen there (after any replacement)."""

    def stack(self, kind: str) -> torch.Tensor:
        """Stack a layered site over layers: ``(n_layers, batch, seq, ...)``, on the first layer's device."""
        names = sorted((k for k in self if k.startswith(kind + ".")), key=lambda k: int(k.split(".")[1]))
        if not names:
            raise KeyError(f"no {kind!r} sites in the cache; cached: {sorted(self)}")
        return torch.stack(_devices.gather([self[n] for n in names]))


def parse_site(subject: Subject, name: str) -> HookInfo:
    """Validate a site name and return its :class:`HookInfo` (negative layers count from the end).

    Raises:
        ValueError: Unknown kind, missing/extra layer index, or layer out of range.
    """
    m = _SITE_RE.match(name.strip()) if isinstance(name, str) else None
    if m is None or m["kind"] not in SITE_KINDS:
        raise ValueError(
            f"unknown hook site {name!r}; valid sites are 'embed', 'final' and "
            f"'<kind>.<layer>' with kind in {sorted(_LAYERED)}"
        )
    kind, layer_s = m["kind"], m["layer"]
    if kind in _LAYERED:
        if layer_s is None:
            raise ValueError(f"site {name!r} needs a layer index, e.g. '{kind}.0'")
        layer = int(layer_s)
        if layer < 0:
            layer += subject.n_layers
        if not 0 <= layer < subject.n_layers:
            raise ValueError(f"site {name!r}: layer out of range for a {subject.n_layers}-layer model")
        return HookInfo(f"{kind}.{layer}", kind, layer)
    if layer_s is not None:
        raise ValueError(f"site {kind!r} takes no layer index (got {name!r})")
    return HookInfo(kind, kind, None)


def site_names(subject: Subject, kind: str) -> list[str]:
    """All site names of one kind, e.g. ``site_names(s, "resid_post")`` -> ``["resid_post.0", ...]``."""
    if kind not in SITE_KINDS:
        raise ValueError(f"unknown site kind {kind!r}; choose from {list(SITE_KINDS)}")
    if kind in _LAYERED:
        return [f"{kind}.{i}" for i in range(subject.n_layers)]
    return [kind]


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _replace_first(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    return new


def _check_shape(info: HookInfo, old: torch.Tensor, new: Any) -> torch.Tensor:
    if not isinstance(new, torch.Tensor):
        raise TypeError(f"hook on {info.name!r} returned {type(new).__name__}; return a tensor or None")
    if new.shape != old.shape:
        raise ValueError(f"hook on {info.name!r} returned shape {tuple(new.shape)}, expected {tuple(old.shape)}")
    return new


class _Site:
    """The hook functions and cache request attached to one site.

    ``device`` is where the hooked module runs (set when the hook is attached, from
    :func:`unpact._devices.module_device`): a replacement a hook function returns is moved there,
    so a patch computed on another device (a block on another GPU, the CPU) lands where it is used.
    """

    def __init__(self, info: HookInfo) -> None:
        self.info = info
        self.fns: list[HookFn] = []
        self.cache = False
        self.device: torch.device | None = None

    def apply(self, act: torch.Tensor, cache: ActivationCache, detach: bool) -> torch.Tensor | None:
        out = act
        for fn in self.fns:
            new = fn(out, hook=self.info)
            if new is not None:
                out = _check_shape(self.info, out, new)
                dev = self.device if self.device is not None else act.device
                if out.device != dev:
                    out = out.to(dev)
        if self.cache:
            cache[self.info.name] = out.detach() if detach else out
        return out if out is not act else None


def _hooked_module(subject: Subject, info: HookInfo) -> nn.Module:
    """The module whose forward (or pre-forward) hook serves site ``info``."""
    kind, layer = info.kind, info.layer
    if kind == "embed":
        return subject.embed
    if kind == "final":
        return subject.final_norm
    assert layer is not None  # guaranteed by parse_site
    if kind in ("resid_pre", "resid_post"):
        return subject.blocks[layer]
    if kind == "attn_out":
        return subject.attn(layer)
    if kind == "head_out":
        return subject.attn_out_proj(layer)
    return subject.mlp(layer)


def _register(subject: Subject, site: _Site, cache: ActivationCache, detach: bool) -> Any:
    """Attach the hook(s) for one site; returns a handle or a list of handles."""
    info = site.info
    kind, layer = info.kind, info.layer
    site.device = _devices.module_device(_hooked_module(subject, info))

    def output_hook(module: nn.Module, args: Any, output: Any) -> Any:
        new = site.apply(_first(output), cache, detach)
        return None if new is None else _replace_first(output, new)

    def resid_pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if args:
            new = site.apply(args[0], cache, detach)
            return None if new is None else ((new, *args[1:]), kwargs)
        new = site.apply(kwargs["hidden_states"], cache, detach)
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    n_heads = subject.n_heads

    def head_hook(module: nn.Module, args: tuple) -> Any:
        flat = args[0]
        heads = flat.reshape(*flat.shape[:-1], n_heads, flat.shape[-1] // n_heads)
        new = site.apply(heads, cache, detach)
        return None if new is None else (new.reshape(flat.shape), *args[1:])

    if kind == "embed":
        return subject.embed.register_forward_hook(output_hook)
    if kind == "final":
        return subject.final_norm.register_forward_hook(output_hook)
    assert layer is not None  # guaranteed by parse_site
    if kind == "resid_pre":
        return subject.blocks[layer].register_forward_pre_hook(resid_pre_hook, with_kwargs=True)
    if kind == "resid_post":
        return subject.blocks[layer].register_forward_hook(output_hook)
    if kind == "attn_out":
        return subject.attn(layer).register_forward_hook(output_hook)
    if kind == "head_out":
        return subject.attn_out_proj(layer).register_forward_pre_hook(head_hook)
    if kind == "mlp_out":
        # Some MLPs (OPT's fc2) run on flattened tokens: present them as (batch, seq, d_model).
        shape: dict[str, torch.Size] = {}

        def record_shape(module: nn.Module, args: tuple, kwargs: dict) -> None:
            shape["bsd"] = (args[0] if args else kwargs["hidden_states"]).shape

        def mlp_hook(module: nn.Module, args: Any, output: Any) -> Any:
            act = _first(output)
            flat = act.dim() == 2 and "bsd" in shape
            view = act.reshape(*shape["bsd"][:-1], act.shape[-1]) if flat else act
            new = site.apply(view, cache, detach)
            if new is None:
                return None
            return _replace_first(output, new.reshape(act.shape) if flat else new)

        return [
            subject.blocks[layer].register_forward_pre_hook(record_shape, with_kwargs=True),
            subject.mlp(layer).register_forward_hook(mlp_hook),
        ]
    raise ValueError(f"unhandled site kind {kind!r}")  # pragma: no cover


@contextlib.contextmanager
def hooked(
    subject: Subject,
    hooks: Mapping[str, HookFn | Sequence[HookFn]] | Sequence[tuple[str, HookFn]] = (),
    *,
    cache: Iterable[str] | None = None,
    detach: bool = True,
) -> Iterator[ActivationCache]:
    """Attach hook functions and/or cache activations for the duration of a ``with`` block.

    Args:
        subject: The model to hook.
        hooks: ``{site: fn}`` / ``{site: [fn, ...]}`` or ``[(site, fn), ...]``. Functions at one
            site run in order; each sees the previous one's output.
        cache: Site names whose (post-edit) activations are stored in the yielded cache.
        detach: Store detached tensors (default). ``False`` keeps the autograd graph, for
            gradients with respect to cached activations.

    Yields:
        An :class:`ActivationCache`, filled as forward passes run inside the block.

    Raises:
        ValueError: For unknown or out-of-range site names (before any hook is attached).
    """
    items: list[tuple[str, HookFn]] = []
    if isinstance(hooks, Mapping):
        for name, fns in hooks.items():
            for fn in fns if isinstance(fns, (list, tuple)) else [fns]:
                items.append((name, fn))  # type: ignore[arg-type]
    else:
        items = list(hooks)
    sites: dict[str, _Site] = {}
    for name, fn in items:
        if not callable(fn):
            raise TypeError(f"hook for {name!r} is not callable")
        info = parse_site(subject, name)
        sites.setdefault(info.name, _Site(info)).fns.append(fn)
    for name in cache or ():
        info = parse_site(subject, name)
        sites.setdefault(info.name, _Site(info)).cache = True
    store = ActivationCache()
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for site in sites.values():
            handle = _register(subject, site, store, detach)
            handles.extend(handle if isinstance(handle, list) else [handle])
        yield store
    finally:
        for handle in handles:
            handle.remove()


def run_with_cache(
    subject: Subject,
    input_ids: torch.Tensor,
    sites: Iterable[str],
    *,
    attention_mask: torch.Tensor | None = None,
    hooks: Mapping[str, HookFn] | Sequence[tuple[str, HookFn]] = (),
) -> tuple[torch.Tensor, ActivationCache]:
    """One no-grad forward pass; return logits and the cached activations.

    Args:
        subject: The model.
        input_ids: ``(batch, seq)`` token ids.
        sites: Site names to cache.
        attention_mask: ``(batch, seq)`` mask, 1 for real tokens.
        hooks: Optional editing hooks, as in :func:`hooked`.

    Returns:
        ``(logits, cache)`` with logits ``(batch, seq, vocab)``.
    """
    with frozen(subject.model), torch.no_grad(), hooked(subject, hooks, cache=sites) as cache:
        mask = None if attention_mask is None else attention_mask.to(subject.device)
        out = subject.model(input_ids=input_ids.to(subject.device), attention_mask=mask, use_cache=False)
    return out.logits, cache


def count_hooks(model: nn.Module) -> int:
    """Number of forward / pre-forward / backward hooks on all modules (for leak checks)."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
    return total
