"""What tracers promise not to change, and how it is checked: the weights' hash, modes and grad flags.

:func:`frozen` is the context every tracer runs in (eval mode, no parameter gradients, both restored
on exit); :class:`ModelState` snapshots modes, flags and optionally the weights' hash, so a test can
compare before and after; :func:`weights_hash` fingerprints the weights (the audit's resume key).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["ModelState", "frozen", "weights_hash"]

# Above this many parameters the weights hash samples each tensor instead of reading all of it.
_FULL_HASH_MAX_PARAMS = 200_000_000


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
    from unpact._devices import state_items  # offloaded (meta) weights are read from their offload maps

    params = state_items(model)
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
