"""Batch layout and white-box interventions of the forward path.

:func:`pack` lays prompts out left-padded (every prompt ends in the same column) with their gold
answers right-padded after them; :class:`Intervention` says which prompt positions a white-box
attack touches and how; the helpers here turn it into an embedding hook and an additive 4-D mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unpact.errors import ArchitectureError, InputError
from unpact.models import Subject

__all__ = ["Intervention", "Packed", "pack"]


@dataclass(frozen=True)
class Intervention:
    """A white-box change of the forward pass at key prompt positions.

    Attributes:
        keypos: Per row, positions in that row's prompt ids (0 = its first token) of the key tokens.
        embed_scale: Factor on the key tokens' embeddings (1: unchanged).
        attn_bias: Constant added to every attention logit from a later position toward a key
            position, in every layer (0: unchanged); needs an architecture that accepts a 4-D mask.
        embeds: Optional ``(n_keys, d_model)`` vectors written over the key tokens' embeddings (a soft
            prompt: every row has ``n_keys`` key positions, whose ids are placeholders); applied
            before ``embed_scale``.
    """

    keypos: tuple[tuple[int, ...], ...]
    embed_scale: float = 1.0
    attn_bias: float = 0.0
    embeds: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        """Whether it changes anything."""
        return (self.embed_scale != 1.0 or self.attn_bias != 0.0 or self.embeds is not None) and any(self.keypos)


@dataclass
class Packed:
    """Prompts left-padded to end in column ``prompt_width - 1``, gold answers right-padded after them.

    Attributes:
        ids: ``(rows, width)`` token ids (padding holds any id; it is masked).
        mask: ``(rows, width)`` 1 on real tokens.
        position_ids: ``(rows, width)`` position of each real token in its own sequence (0 on padding).
        prompt_width: Columns of the prompt block.
        prompt_lens: Real prompt length per row.
        answer_lens: Real answer length per row (0 without answers).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_width: int
    prompt_lens: list[int]
    answer_lens: list[int]

    @property
    def offsets(self) -> list[int]:
        """Column of each row's first prompt token."""
        return [self.prompt_width - n for n in self.prompt_lens]


def pack(prompts: Sequence[torch.Tensor], answers: Sequence[torch.Tensor] | None = None, fill: int = 0) -> Packed:
    """Lay out ``(n_i,)`` prompt id rows (and ``(m_i,)`` answer rows) as a :class:`Packed` batch.

    Raises:
        InputError: No prompts, an empty prompt, or answers not one per prompt.
    """
    if not prompts:
        raise InputError("no prompts to run", source="forward")
    if answers is not None and len(answers) != len(prompts):
        raise InputError(f"{len(prompts)} prompts but {len(answers)} answers", source="forward")
    plens = [len(p) for p in prompts]
    if min(plens) == 0:
        raise InputError(f"prompt {plens.index(0)} has no tokens", source="forward", fix="give every prompt a token")
    alens = [len(a) for a in answers] if answers is not None else [0] * len(prompts)
    pw, aw = max(plens), max(alens)
    rows = len(prompts)
    ids = torch.full((rows, pw + aw), int(fill), dtype=torch.long)
    mask = torch.zeros((rows, pw + aw), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, pw - plens[i] : pw] = torch.as_tensor(p, dtype=torch.long)
        mask[i, pw - plens[i] : pw] = 1
        if alens[i]:
            ids[i, pw : pw + alens[i]] = torch.as_tensor(answers[i], dtype=torch.long)  # type: ignore[index]
            mask[i, pw : pw + alens[i]] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0) * mask
    return Packed(ids, mask, pos, pw, plens, alens)


def _check_bias_support(subject: Subject) -> None:
    if not subject.spec.accepts_4d_mask:
        mt = subject.spec.model_type
        raise ArchitectureError(
            f"attn_bias needs a model that accepts a 4-D additive attention mask; {mt} does not "
            "(ArchSpec.accepts_4d_mask=False)",
            fix="use embed_scale or a text attack on this model; for an architecture you registered whose "
            "forward takes one, register it with ArchSpec(..., accepts_4d_mask=True)",
        )


def check_bias_window(subject: Subject, width: int) -> None:
    """Refuse an attention bias on sequences longer than the model's sliding window.

    The bias travels as one 4-D mask that transformers applies to every layer as it is, so on a model
    with sliding-window layers it would also lift their window: past the window the numbers would be
    those of another model.

    Raises:
        ArchitectureError: ``width`` tokens exceed the window.
    """
    from unpact._arch import sliding_window

    window = sliding_window(subject.config)
    if window is not None and width > window:
        raise ArchitectureError(
            f"attn_bias on {subject.spec.model_type} with {width} tokens: its layers attend to a sliding window of "
            f"{window} tokens, which one 4-D attention mask cannot express",
            fix="use embed_scale or a text attack on this model, or shorter prompts and answers",
        )


def _key_columns(iv: Intervention, packed: Packed) -> tuple[list[int], list[int]]:
    """Row and column indices (in the packed layout) of every key position."""
    rows = [i for i, kp in enumerate(iv.keypos) for _ in kp]
    cols = [packed.offsets[i] + p for i, kp in enumerate(iv.keypos) for p in kp]
    return rows, cols


def _bias_mask(
    mask2d: torch.Tensor, n_query: int, rows: list[int], cols: list[int], bias: float, subject: Subject
) -> torch.Tensor:
    """``(batch, 1, n_query, kv)`` additive mask for the last ``n_query`` of ``kv`` columns.

    Causal, padding columns blocked, and ``bias`` on every key column for the queries after it.
    """
    dtype, dev = subject.dtype, subject.device
    kv = mask2d.shape[1]
    q_cols = torch.arange(kv - n_query, kv)[:, None]
    k_cols = torch.arange(kv)[None, :]
    allowed = (k_cols <= q_cols)[None] & mask2d.bool()[:, None, :]  # (batch, n_query, kv)
    # a padding query would see no key at all: let it see itself (its output is never read), so that no
    # row is all -inf in half precision (NaN)
    allowed |= (k_cols == q_cols)[None]
    out = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    if rows:
        r = torch.tensor(rows)
        c = torch.tensor(cols)
        after = q_cols[None, :, 0] > c[:, None]  # (n_key, n_query)
        add = torch.zeros_like(out)
        add[r, :, c] = after.to(dtype) * bias
        out = out + add * allowed
    return out[:, None].to(dev)


def _prompt_hooks(iv: Intervention | None, packed: Packed) -> dict[str, Any]:
    if iv is None or (iv.embed_scale == 1.0 and iv.embeds is None) or not any(iv.keypos):
        return {}
    rows, cols = _key_columns(iv, packed)
    scale = float(iv.embed_scale)
    soft = iv.embeds

    def scale_embed(t: torch.Tensor, *, hook: Any) -> torch.Tensor:
        t = t.clone()
        if soft is not None:
            t[rows, cols] = soft.to(t).repeat(len(iv.keypos), 1)
        if scale != 1.0:
            t[rows, cols] = t[rows, cols] * scale
        return t

    return {"embed": scale_embed}


def _check_intervention(iv: Intervention | None, packed: Packed, subject: Subject) -> None:
    if iv is None:
        return
    if len(iv.keypos) != len(packed.prompt_lens):
        raise InputError(
            f"the intervention has key positions for {len(iv.keypos)} rows, the batch has {len(packed.prompt_lens)}",
            source="Intervention.keypos",
        )
    if iv.embeds is not None and (iv.embeds.dim() != 2 or any(len(kp) != iv.embeds.shape[0] for kp in iv.keypos)):
        raise InputError(
            f"the intervention's embeds have shape {tuple(iv.embeds.shape)}; every row needs one key position "
            "per vector",
            source="Intervention.embeds",
            fix="pass (n_keys, d_model) vectors and n_keys key positions in every row",
        )
    for i, kp in enumerate(iv.keypos):
        bad = [p for p in kp if not 0 <= p < packed.prompt_lens[i]]
        if bad:
            raise InputError(
                f"key position {bad[0]} of row {i} is outside its prompt of {packed.prompt_lens[i]} tokens",
                source="Intervention.keypos",
            )
    if iv.attn_bias != 0.0:
        _check_bias_support(subject)
        check_bias_window(subject, packed.ids.shape[1])
