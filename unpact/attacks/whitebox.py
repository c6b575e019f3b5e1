"""White-box emphasis: the forward pass under an attack's intervention at the key positions.

``embed_scale`` multiplies the key tokens' embeddings (a hook on the ``embed`` site, through
:func:`unpact.hooks.hooked`); ``attn_bias`` adds a constant to every attention logit that points
at a key position (an additive 4-D attention mask, in every layer), on architectures whose
:class:`~unpact._arch.ArchSpec` says ``accepts_4d_mask``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unpact.attacks.registry import Attack
from unpact.errors import ArchitectureError
from unpact.hooks import hooked
from unpact.models import Subject, check_finite

__all__: list[str] = []


def _attn_mask(
    lengths: Sequence[int],
    width: int,
    keypos: Sequence[Sequence[int]],
    bias: float,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """``(batch, 1, width, width)`` additive mask: causal (-inf above the diagonal) plus ``bias`` on key columns."""
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    base = torch.zeros(width, width, dtype=dtype, device=device).masked_fill(~causal, torch.finfo(dtype).min)
    mask = base.expand(len(lengths), 1, width, width).clone()
    for i, pos in enumerate(keypos):
        for p in pos:
            # every later query position attends a bit more to key position p (not p to itself twice)
            mask[i, 0, p + 1 :, p] += bias
    return mask


def _forward(
    subject: Subject, ids: torch.Tensor, lengths: Sequence[int], keypos: Sequence[Sequence[int]], attack: Attack
) -> torch.Tensor:
    """Logits ``(batch, seq, vocab)`` under the attack's white-box intervention (if any).

    Args:
        subject: The model.
        ids: ``(batch, seq)`` right-padded token ids.
        lengths: Real length of each row.
        keypos: Per row, the key token positions.
        attack: The attack (white-box fields are read only for ``kind == "whitebox"``).

    Raises:
        ArchitectureError: For ``attn_bias`` on an architecture without ``accepts_4d_mask``.
        InputError: NaN/inf logits.
    """
    hooks: dict[str, Any] = {}
    if attack.kind == "whitebox" and attack.embed_scale != 1.0:
        scale = float(attack.embed_scale)
        rows = [i for i, p in enumerate(keypos) for _ in p]
        cols = [c for p in keypos for c in p]

        def scale_embed(t: torch.Tensor, *, hook: Any) -> torch.Tensor:
            t = t.clone()
            t[rows, cols] = t[rows, cols] * scale
            return t

        hooks["embed"] = scale_embed
    # Right-padded rows: padding sits after every real token, so causal attention never sees it;
    # the 2-D mask states this to the model (and silences transformers' padding warning).
    mask2d = (torch.arange(ids.shape[1])[None, :] < torch.tensor(list(lengths))[:, None]).long()
    kwargs: dict[str, Any] = {"attention_mask": mask2d.to(subject.device)}
    if attack.kind == "whitebox" and attack.attn_bias != 0.0:
        if not subject.spec.accepts_4d_mask:
            mt = subject.spec.model_type
            raise ArchitectureError(
                f"attn_bias needs a model that accepts a 4-D additive attention mask; {mt} does not "
                "(ArchSpec.accepts_4d_mask=False)",
                fix="use embed_scale or a text attack on this model; for an architecture you registered whose "
                "forward takes one, register it with ArchSpec(..., accepts_4d_mask=True)",
            )
        kwargs["attention_mask"] = _attn_mask(
            lengths, ids.shape[1], keypos, float(attack.attn_bias), subject.dtype, subject.device
        )
    with hooked(subject, hooks):
        logits = subject.model(input_ids=ids.to(subject.device), use_cache=False, **kwargs).logits
    return check_finite(subject, logits)
