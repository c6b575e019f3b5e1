"""The forward passes: teacher-forced log-probabilities at chosen positions, and the prompt pass.

Every pass runs the model once with the final-norm output cached, and sends only the positions it
needs through the unembedding: :func:`answer_logprobs` stops the forward at the final norm (the
model's own head never runs), :func:`prompt_pass` lets the head run on one position where the model
supports ``logits_to_keep`` (it needs the KV cache the full forward returns).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from unpact.errors import InputError
from unpact.forward.layout import (
    Intervention,
    Packed,
    _bias_mask,
    _check_intervention,
    _key_columns,
    _prompt_hooks,
    pack,
)
from unpact.hooks import hooked
from unpact.models import Subject, check_finite, frozen

__all__ = ["PromptPass", "answer_logprobs", "prompt_pass", "gather_logprobs"]


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)`` at ``targets``: ``(..., vocab)``, ``(...)`` -> ``(...)`` (float32 or wider)."""
    lp = torch.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)
    return lp.gather(-1, targets[..., None]).squeeze(-1)


_PARAMS: dict[type, frozenset[str]] = {}


def _forward_params(subject: Subject) -> frozenset[str]:
    """Names of the model's ``forward`` parameters (looked up once per model class)."""
    cls = type(subject.model)
    if cls not in _PARAMS:
        try:
            _PARAMS[cls] = frozenset(inspect.signature(subject.model.forward).parameters)
        except (TypeError, ValueError):  # pragma: no cover
            _PARAMS[cls] = frozenset()
    return _PARAMS[cls]


def _cache_in(out: Any) -> Any:
    """The KV cache a forward returned (``cache`` in newer transformers, ``past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _inputs(
    subject: Subject,
    ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None,
    *,
    use_cache: bool,
    past: Any = None,
) -> dict[str, Any]:
    """The keyword arguments of one model forward, on the model's device (the head on one position where
    the model supports ``logits_to_keep``; the cache under its name in this transformers version)."""
    dev = subject.device
    params = _forward_params(subject)
    kw: dict[str, Any] = {"input_ids": ids.to(dev), "attention_mask": attention_mask.to(dev), "use_cache": use_cache}
    if "logits_to_keep" in params:
        kw["logits_to_keep"] = 1
    if position_ids is not None:
        kw["position_ids"] = position_ids.to(dev)
    if past is not None:
        kw["cache" if "cache" in params else "past_key_values"] = past
    return kw


def _run(
    subject: Subject,
    ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None,
    hooks: Mapping[str, Any],
    *,
    use_cache: bool,
) -> tuple[torch.Tensor, Any]:
    """One model forward; returns the final-normed residual ``(rows, seq, d_model)`` and the KV cache."""
    with hooked(subject, hooks, cache=["final"], detach=False) as cache:
        out = subject.model(**_inputs(subject, ids, attention_mask, position_ids, use_cache=use_cache))
    return cache["final"], (_cache_in(out) if use_cache else None)


def _step(
    subject: Subject, ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, past: Any
) -> tuple[torch.Tensor, Any]:
    """One decoding step from the cache: ``(rows, vocab)`` float32 next-token logits (the model's own
    head on the last position, no hooks) and the grown cache."""
    out = subject.model(**_inputs(subject, ids, attention_mask, position_ids, use_cache=True, past=past))
    return out.logits[:, -1].float(), _cache_in(out)


def answer_logprobs(
    subject: Subject,
    ids: torch.Tensor,
    mask: torch.Tensor,
    pos: torch.Tensor,
    tgt: torch.Tensor,
    embeds: torch.Tensor | None = None,
    *,
    hooks: Mapping[str, Any] | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Teacher-forced log-probabilities of target tokens at given positions (differentiable).

    The forward stops at the final norm (the model's own head never runs) and only the selected
    positions go through the unembedding, which saves most of the vocabulary projection.

    Args:
        subject: The model.
        ids: ``(rows, seq)`` token ids.
        mask: ``(rows, seq)`` attention mask.
        pos: ``(rows, T)`` positions predicting each target token.
        tgt: ``(rows, T)`` target token ids.
        embeds: Optional ``(rows, seq, d_model)`` replacement for the token-embedding output.
        hooks: More hooks (``{site: fn}``) active during the pass.
        position_ids: ``(rows, seq)`` positions (needed with left padding).

    Returns:
        ``(rows, T)`` float32 log-probabilities (entries past a row's real length are meaningless).

    Raises:
        InputError: The model produced NaN/inf logits (see :func:`unpact.models.check_finite`).
    """

    class _Stop(Exception):
        """Raised by the final-norm hook: nothing after the final norm is needed."""

    final: list[torch.Tensor] = []

    def stop(t: torch.Tensor, hook: Any) -> None:
        final.append(t)
        raise _Stop

    all_hooks: dict[str, Any] = dict(hooks or {})
    if embeds is not None:
        if "embed" in all_hooks:
            raise InputError(
                "answer_logprobs got both embeds and a hook on the 'embed' site; embeds would replace the hook",
                source="answer_logprobs",
                fix="apply the hook's change to embeds, or pass the hook alone",
            )
        all_hooks["embed"] = lambda t, hook: embeds
    earlier = all_hooks.get("final", [])
    all_hooks["final"] = [*(earlier if isinstance(earlier, (list, tuple)) else [earlier]), stop]
    with hooked(subject, all_hooks):
        try:
            subject.model(**_inputs(subject, ids, mask, position_ids, use_cache=False))
        except _Stop:
            pass
    h = final[-1]  # (rows, seq, d_model), final-normed
    sel = h.gather(1, pos.to(h.device)[..., None].expand(-1, -1, h.shape[-1]))
    logits = subject.decode_resid(sel).float()  # (rows, T, vocab)
    with torch.no_grad():  # one reduction; the full check (and its message) only when something is off
        if not bool(torch.isfinite(logits.sum())):
            check_finite(subject, logits)
    return gather_logprobs(logits, tgt.to(logits.device))


@dataclass
class PromptPass:
    """What one forward pass over prompts (and their gold answers) gives.

    Attributes:
        packed: The batch layout.
        answer_logprobs: Per row, ``(n_answer,)`` float32 log-probabilities of the gold answer tokens.
        first_logits: ``(rows, vocab)`` float32 next-token logits after each prompt.
        intervention: The intervention the pass ran under (decoding keeps its attention bias).
        cache: The prompts' KV cache (``keep_cache=True``); :func:`decode` consumes it.
    """

    packed: Packed
    answer_logprobs: list[torch.Tensor]
    first_logits: torch.Tensor
    intervention: Intervention | None = None
    cache: Any = field(default=None, repr=False)

    def first_token_rank(self) -> list[int]:
        """Rank of each gold answer's first token after its prompt (0 = top-1); needs answers."""
        out = []
        for i, n in enumerate(self.packed.answer_lens):
            if not n:
                raise InputError("first_token_rank needs the gold answers in the prompt pass", source="PromptPass")
            gold = int(self.packed.ids[i, self.packed.prompt_width])
            row = self.first_logits[i]
            out.append(int((row > row[gold]).sum()))
        return out


def _crop(cache: Any, keep: int) -> Any:
    """The KV cache cut to its first ``keep`` positions (transformers ``Cache`` or legacy tuples).

    Returns ``None`` where the cache cannot be cut back (sliding-window layers past their window).
    """
    if hasattr(cache, "crop"):
        n = cache.get_seq_length()
        if n > keep:
            try:
                cache.crop(keep - n)  # a negative value removes that many positions, in every version
            except (RuntimeError, ValueError, NotImplementedError, TypeError):  # a cache that cannot be cut back
                return None
        return cache
    return tuple(tuple(t[..., :keep, :] for t in layer) for layer in cache)


def _repeat(cache: Any, n: int) -> Any:
    if n == 1:
        return cache
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(n)
        return cache
    return tuple(tuple(t.repeat_interleave(n, 0) for t in layer) for layer in cache)


def prompt_pass(
    subject: Subject,
    prompts: Sequence[torch.Tensor],
    answers: Sequence[torch.Tensor] | None = None,
    *,
    intervention: Intervention | None = None,
    keep_cache: bool = False,
    fill: int = 0,
) -> PromptPass:
    """One forward pass over prompts (and gold answers): answer log-probs, next-token logits, KV cache.

    Args:
        subject: The model (weights, mode and flags are left as they are).
        prompts: One ``(n_prompt,)`` id tensor per row (with BOS if the model uses one).
        answers: Optional ``(n_answer,)`` gold answer ids per row (teacher-forced after the prompt).
        intervention: White-box change of the pass (key positions index each row's prompt ids).
        keep_cache: Keep the prompts' KV cache (for :func:`decode`).
        fill: Id written into padding (masked; any id will do).

    Returns:
        The :class:`PromptPass`.

    Raises:
        InputError: Empty prompts, key positions outside a prompt, or NaN/inf logits.
        ArchitectureError: ``attn_bias`` on an architecture without ``accepts_4d_mask``.
    """
    packed = pack(prompts, answers, fill)
    _check_intervention(intervention, packed, subject)
    mask: torch.Tensor = packed.mask
    if intervention is not None and intervention.attn_bias != 0.0:
        rows, cols = _key_columns(intervention, packed)
        mask = _bias_mask(packed.mask, packed.mask.shape[1], rows, cols, float(intervention.attn_bias), subject)
    pw, t = packed.prompt_width, max(1, max(packed.answer_lens))
    with frozen(subject.model), torch.no_grad():
        h, cache = _run(
            subject,
            packed.ids,
            mask,
            packed.position_ids,
            _prompt_hooks(intervention, packed),
            use_cache=keep_cache,
        )
        logits = check_finite(subject, subject.decode_resid(h[:, pw - 1 : pw - 1 + t]).float()).cpu()
    lps = []
    for i, n in enumerate(packed.answer_lens):
        gold = packed.ids[i, pw : pw + n]
        lps.append(gather_logprobs(logits[i, :n], gold))
    if cache is not None:
        cache = _crop(cache, pw)
        if cache is None:  # not croppable: one more pass over the prompt block alone
            block = Packed(
                packed.ids[:, :pw], packed.mask[:, :pw], packed.position_ids[:, :pw], pw, packed.prompt_lens, []
            )
            if isinstance(mask, torch.Tensor) and mask.dim() == 4:
                mask = mask[:, :, :pw, :pw]
            else:
                mask = block.mask
            with frozen(subject.model), torch.no_grad():
                _, cache = _run(
                    subject, block.ids, mask, block.position_ids, _prompt_hooks(intervention, block), use_cache=True
                )
    return PromptPass(packed, lps, logits[:, 0].clone(), intervention, cache)
