"""Recording forwards: hooks that copy what modules read and write, tensor comparisons, and the verdict.

:class:`Recorder` keeps each recorded module's input and output (a copy and a reference, to spot
in-place edits); :func:`rel_err` and :func:`tolerance` compare tensors; :func:`forward_logits` runs
the model without a cache; :class:`Verdict` collects what the checking forwards established.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def first_of(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) else output


def input_of(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    value = kwargs.get("hidden_states")
    if isinstance(value, torch.Tensor):
        return value
    return next((v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.is_floating_point()), None)


class Recorder:
    """Forward hooks that keep a copy of what modules read and write (and a reference, to spot in-place edits)."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.out: dict[str, torch.Tensor] = {}
        self.ref: dict[str, torch.Tensor] = {}
        self.inp: dict[str, torch.Tensor] = {}
        self.inref: dict[str, torch.Tensor] = {}
        self.order: list[str] = []

    def outputs(self, key: str, module: nn.Module) -> None:
        def hook(mod: nn.Module, args: Any, output: Any) -> None:
            t = first_of(output)
            if isinstance(t, torch.Tensor):
                self.out[key] = t.detach().clone()
                self.ref[key] = t.detach()
                self.order.append(key)

        self.handles.append(module.register_forward_hook(hook))

    def inputs(self, key: str, module: nn.Module) -> None:
        def hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            t = input_of(args, kwargs)
            if t is not None:
                self.inp[key] = t.detach().clone()
                self.inref[key] = t.detach()

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def modified_in_place(self, key: str) -> bool:
        return key in self.ref and not torch.equal(self.ref[key], self.out[key])

    def fed(self, out_key: str, in_key: str, tol: float) -> tuple[bool, bool]:
        """``(same tensor, same values)``: did module ``out_key``'s output become module ``in_key``'s input?

        Every recorded tensor is held until the recorder is dropped, so two live tensors with one
        data pointer and shape are the same values in memory (norms with equal weights give equal
        values; only the identity tells which one a sub-layer read).
        """
        o, i = self.ref.get(out_key), self.inref.get(in_key)
        if o is None or i is None:
            return False, False
        same = o.data_ptr() == i.data_ptr() and o.shape == i.shape
        return same, same or rel_err(self.out[out_key], self.inp[in_key]) <= tol

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|`` in float64 (``inf`` for mismatched shapes)."""
    if a.numel() != b.numel():
        return float("inf")
    a64, b64 = a.detach().double().reshape(b.shape), b.detach().double()
    return float((a64 - b64).abs().max() / b64.abs().max().clamp_min(1e-12))


def tolerance(dtype: torch.dtype) -> float:
    return max(1e-4, 8 * torch.finfo(dtype).eps) if dtype.is_floating_point else 1e-4


def _logits(out: Any) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else first_of(out)


def forward_logits(model: nn.Module, ids: torch.Tensor, **kw: Any) -> torch.Tensor:
    return _logits(model(input_ids=ids, use_cache=False, **kw))


@dataclass
class Verdict:
    """What the forwards established (fills the spec's capability fields)."""

    out_proj: str | None = None
    final_norm: str | None = None
    transform: dict[str, str] = field(default_factory=dict)
    decode_ok: bool = False
    lens_ok: bool = False
    parallel: bool = False
    parallel_norms: tuple[str, str] | None = None
    additive: bool = False
    accepts_4d_mask: bool = False
    disabled: dict[str, str] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
