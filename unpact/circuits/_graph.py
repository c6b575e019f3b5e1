"""The computational graph EAP scores, and the one forward pass that can patch any set of its edges.

Nodes
-----
Upstream nodes (what writes into the residual stream):

* ``embed``: the block-0 input (token embedding plus position embedding / scaling, as the model
  builds it);
* ``a{L}.h{H}``: attention head ``H`` of block ``L``; its output is
  ``head_out.L[..., H, :] @ W_O[H]`` (its slice of the output projection). The projection bias
  is input-independent, so it cancels in every clean-minus-corrupt difference and belongs to
  no head;
* ``m{L}``: the MLP of block ``L`` (its output, the ``mlp_out.L`` site).

Downstream nodes (what reads the residual stream): ``a{L}`` (the input of block ``L``'s
attention, shared by the queries, keys and values of all its heads), ``m{L}`` (the MLP input)
and ``logits`` (the final-norm input).

Why one attention input per layer: Hugging Face attention modules compute q, k and v of every
head from one normed input in one call (fused ``qkv`` in GPT-2, GPT-NeoX and Phi-3; k/v shared
by several query heads under grouped-query attention). Giving each head's q/k/v its own input
would mean rewriting every architecture's attention forward; one input per layer keeps the
graph exact for all registered architectures at ``3 * n_heads`` times fewer downstream nodes.

How one node's input is edited without touching the residual stream
--------------------------------------------------------------------
In a sequential-residual block, ``mid = x + attn(x)`` and ``out = mid + mlp(mid)``. Adding
``d`` to the block input ``x`` and subtracting it again from the attention output leaves the
residual stream as it was but feeds the attention ``x + d``: an edit of the attention *input
only*. The MLP input is edited the same way (add at the attention output, subtract at the MLP
output) and the logits input by adding to the last MLP output. With parallel residual (GPT-NeoX,
``out = x + attn(ln1(x)) + mlp(ln2(x))``) the two norms' inputs are edited directly.
The same edit, with ``d`` a zero tensor that requires grad, gives ``dMetric/d(input_v)`` through
node ``v`` only: the gradient EAP needs.

Which blocks qualify is read from the :class:`~unpact._arch.ArchSpec`: ``additive_writes``
(False for Gemma 2, whose attention and MLP outputs pass a norm before the residual, so the
heads' writes are not additive), ``pre_norm_attr`` (OPT with ``do_layer_norm_before=False`` is
post-LN), ``parallel_residual`` and ``parallel_norms`` (the norms a parallel block reads).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unpact._arch import weight_in_out
from unpact._devices import gather
from unpact.errors import UnsupportedFeatureError
from unpact.hooks import hooked
from unpact.models import Subject

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Graph:
    """Node names and which upstream -> downstream edges exist for one model.

    Attributes:
        upstream: ``n_up = 1 + n_layers * (n_heads + 1)`` names: ``embed``, then per layer the
            heads ``a{L}.h{H}`` and the MLP ``m{L}``.
        downstream: ``n_down = 2 * n_layers + 1`` names: per layer ``a{L}``, ``m{L}``, then ``logits``.
        valid: ``(n_up, n_down)`` bool, True where the upstream node is computed before the
            downstream node reads the residual stream.
        n_layers, n_heads: Sizes.
        parallel: Whether attention and MLP read the same residual (GPT-NeoX).
    """

    upstream: tuple[str, ...]
    downstream: tuple[str, ...]
    valid: np.ndarray
    n_layers: int
    n_heads: int
    parallel: bool

    @classmethod
    def of(cls, subject: Subject) -> Graph:
        """Build the graph of ``subject``; raise :class:`UnsupportedFeatureError` for unsupported blocks."""
        check_supported(subject)
        n_l, n_h = subject.n_layers, subject.n_heads
        parallel = is_parallel(subject)
        up = ["embed"]
        up_pos = [-1]
        for layer in range(n_l):
            up += [f"a{layer}.h{h}" for h in range(n_h)] + [f"m{layer}"]
            up_pos += [2 * layer] * n_h + [2 * layer + 1]
        down, down_pos = [], []
        for layer in range(n_l):
            down += [f"a{layer}", f"m{layer}"]
            down_pos += [2 * layer, 2 * layer if parallel else 2 * layer + 1]
        down.append("logits")
        down_pos.append(2 * n_l + 1)
        valid = np.asarray(up_pos)[:, None] < np.asarray(down_pos)[None, :]
        return cls(tuple(up), tuple(down), valid, n_l, n_h, parallel)

    @property
    def n_up(self) -> int:
        """Number of upstream nodes."""
        return len(self.upstream)

    @property
    def n_down(self) -> int:
        """Number of downstream nodes."""
        return len(self.downstream)

    def head_index(self, layer: int) -> slice:
        """Rows of block ``layer``'s heads in the upstream axis."""
        start = 1 + layer * (self.n_heads + 1)
        return slice(start, start + self.n_heads)

    def mlp_index(self, layer: int) -> int:
        """Row of block ``layer``'s MLP in the upstream axis."""
        return 1 + layer * (self.n_heads + 1) + self.n_heads


def is_parallel(subject: Subject) -> bool:
    """True if the blocks use a parallel residual (attention and MLP read the same stream)."""
    return subject.spec.is_parallel(subject.config)


def check_supported(subject: Subject) -> None:
    """Raise :class:`UnsupportedFeatureError` (a ``NotImplementedError``) for blocks whose writes do not add up."""
    spec = subject.spec
    mt = spec.model_type
    where = f"edge attribution patching on {mt}"
    other = "use attribution (integrated gradients) or the logit lens for this model"
    if not spec.additive_writes:
        why = f"; {spec.notes.rstrip('.')}" if spec.notes else ""
        raise UnsupportedFeatureError(
            f"edge attribution patching does not support {mt}: it needs attention and MLP outputs that join the "
            f"residual stream unchanged (so that heads' contributions add up), and {mt}'s ArchSpec says they do "
            f"not (additive_writes=False{why})",
            source=where,
            fix=f"{other}; if you registered {mt} and its blocks do add them unchanged, pass "
            "ArchSpec(..., additive_writes=True)",
        )
    if spec.is_post_norm(subject.config):
        raise UnsupportedFeatureError(
            f"edge attribution patching does not support post-LN {mt} ({spec.pre_norm_attr}=False): "
            "the residual stream is normalised after each sub-layer",
            source=where,
            fix=other,
        )
    if is_parallel(subject) and spec.parallel_norm_paths() is None:
        raise UnsupportedFeatureError(
            f"{mt} uses a parallel residual but unpact does not know its attention/MLP norm modules",
            source=where,
            fix="register them with ArchSpec(parallel_norms=(attn_norm, mlp_norm)), paths relative to a block",
        )


def head_weights(subject: Subject, layer: int) -> torch.Tensor:
    """Per-head slices of block ``layer``'s output projection: ``(n_heads, d_head, d_model)``."""
    w_in_out = weight_in_out(subject.attn_out_proj(layer))
    return w_in_out.reshape(subject.n_heads, subject.d_head, w_in_out.shape[-1])


class Patcher:
    """Edits node inputs during one forward pass (batch ``B``, sequence ``S``).

    Exactly one of two modes per pass (or neither, to only record activations):

    * ``deltas``: ``{downstream index: (B, S, d_model) tensor}`` added to that node's input only
      (zeros with ``requires_grad`` give the per-node input gradients);
    * ``plan`` + ``corrupt``: ``plan (B, n_up, n_down)`` with 1 on edges to patch; such an edge
      carries the upstream node's corrupt output ``corrupt[:, u] (S, d_model)`` instead of its
      output in this pass.

    ``x0`` (``(B, S, d_model)``) replaces the block-0 input (EAP-IG interpolation).
    After the pass, ``record`` holds each upstream node's output in this pass:
    ``(B, S, n_up, d_model)`` (filled when ``keep=True``).
    """

    def __init__(
        self,
        subject: Subject,
        graph: Graph,
        *,
        deltas: dict[int, torch.Tensor] | None = None,
        plan: torch.Tensor | None = None,
        corrupt: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
        keep: bool = False,
    ) -> None:
        self.s, self.g = subject, graph
        self.deltas = deltas or {}
        self.plan = plan
        self.corrupt = None if corrupt is None else corrupt.permute(1, 0, 2)  # (n_up, S, d_model)
        self.x0 = x0
        self.keep = keep
        self.cur: dict[int, torch.Tensor] = {}  # upstream index -> (B, S, d) or (B, S, H, d) for heads
        self.pending: dict[int, torch.Tensor] = {}
        self.w_o = [head_weights(subject, layer) for layer in range(graph.n_layers)]

    # ----- what each downstream node gets added --------------------------------------------------
    def _delta(self, v: int, like: torch.Tensor) -> torch.Tensor | None:
        if v in self.deltas:
            return self.deltas[v].to(like.device, like.dtype)
        if self.plan is None:
            return None
        p = self.plan[:, :, v].to(like.device)  # (B, n_up)
        if not bool(p.any()):
            return None
        total = torch.zeros_like(like)
        corrupt = self.corrupt
        if corrupt is None:
            raise RuntimeError("a patch plan needs the corrupted activations")  # internal invariant
        for u, cur in self.cur.items():
            if cur.dim() == 4:  # heads of one layer, starting at upstream index u
                n = cur.shape[2]
                pu = p[:, u : u + n].to(like.dtype)
                if bool(pu.any()):
                    diff = corrupt[u : u + n].permute(1, 0, 2).to(like)[None] - cur.to(like.device)
                    total = total + torch.einsum("bn,bsnd->bsd", pu, diff)
            else:
                pu = p[:, u].to(like.dtype)
                if bool(pu.any()):
                    total = total + pu[:, None, None] * (corrupt[u].to(like)[None] - cur.to(like.device))
        return total

    def _add(self, x: torch.Tensor, v: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        d = self._delta(v, x)
        return (x if d is None else x + d), d

    # ----- hook functions -------------------------------------------------------------------------
    def _resid_pre(self, x: torch.Tensor, *, hook: Any) -> torch.Tensor:
        layer = hook.layer
        if layer == 0:
            self.cur.clear()
            if self.x0 is not None:
                x = self.x0.to(x)
            self.cur[0] = x
        if self.g.parallel:
            return x
        x2, d = self._add(x, 2 * layer)
        if d is not None:
            self.pending[2 * layer] = d
        return x2

    def _head_out(self, x: torch.Tensor, *, hook: Any) -> None:
        layer = hook.layer
        contrib = torch.einsum("bshd,hdm->bshm", x, self.w_o[layer].to(x))
        self.cur[self.g.head_index(layer).start] = contrib
        return None

    def _attn_out(self, x: torch.Tensor, *, hook: Any) -> torch.Tensor | None:
        if self.g.parallel:
            return None
        layer = hook.layer
        out = x
        d_attn = self.pending.pop(2 * layer, None)
        if d_attn is not None:
            out = out - d_attn.to(out.device)
        out, d = self._add(out, 2 * layer + 1)
        if d is not None:
            self.pending[2 * layer + 1] = d
        return out

    def _mlp_out(self, x: torch.Tensor, *, hook: Any) -> torch.Tensor:
        layer = hook.layer
        self.cur[self.g.mlp_index(layer)] = x
        out = x
        d_mlp = self.pending.pop(2 * layer + 1, None)
        if d_mlp is not None:
            out = out - d_mlp.to(out.device)
        if layer == self.g.n_layers - 1:
            out, _ = self._add(out, self.g.n_down - 1)
        return out

    def _norm_pre(self, v: int) -> Any:
        def fn(module: torch.nn.Module, args: tuple) -> Any:
            x2, d = self._add(args[0], v)
            return None if d is None else (x2, *args[1:])

        return fn

    @contextlib.contextmanager
    def attached(self) -> Iterator[Patcher]:
        """Attach the hooks for one or more forward passes; everything is removed on exit."""
        n_l = self.g.n_layers
        hooks: dict[str, Any] = {}
        for layer in range(n_l):
            hooks[f"resid_pre.{layer}"] = self._resid_pre
            hooks[f"head_out.{layer}"] = self._head_out
            hooks[f"attn_out.{layer}"] = self._attn_out
            hooks[f"mlp_out.{layer}"] = self._mlp_out
        handles = []
        try:
            if self.g.parallel:
                names = self.s.spec.parallel_norm_paths()
                assert names is not None  # checked in Graph.of
                for layer in range(n_l):
                    block = self.s.blocks[layer]
                    handles.append(block.get_submodule(names[0]).register_forward_pre_hook(self._norm_pre(2 * layer)))
                    handles.append(
                        block.get_submodule(names[1]).register_forward_pre_hook(self._norm_pre(2 * layer + 1))
                    )
            with hooked(self.s, hooks):
                yield self
        finally:
            for h in handles:
                h.remove()
            self.pending.clear()

    def outputs(self) -> torch.Tensor:
        """Upstream outputs of the last pass: ``(B, S, n_up, d_model)``, gathered on the embedding's device."""
        parts = []
        for u in sorted(self.cur):
            cur = self.cur[u]
            parts.append(cur if cur.dim() == 4 else cur[:, :, None, :])
        return torch.cat(gather(parts, self.s.device), dim=2)
