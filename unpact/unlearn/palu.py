"""PALU: Prefix-Aware Localized Unlearning (Zhai et al., ACL 2026, arXiv:2601.03190).

"Maximizing Local Entropy Where It Matters: Prefix-Aware Localized LLM Unlearning",
https://arxiv.org/abs/2601.03190. The loss follows the authors' code, ``PALU.compute_loss`` in
https://github.com/nxZhai/PALU/blob/8c3fea636851e17e3f9c7b7a17794b713f9a91c4/src/trainer/unlearn/palu.py
(with ``configs/trainer/PALU.yaml`` and ``scripts/unlearn/tofu/train_tofu_palu_*.sh``)::

    L = L_forget + kl_weight * L_kl + retain_weight * NLL(R)

    L_forget = 1/|P| sum_{(b,t) in P} 1/k sum_{i in TopK_k(z_ref[b,t])} (z[b,t,i] - zbar[b,t])^2
    zbar[b,t] = 1/|V| sum_{j in V} z[b,t,j]
    L_kl     = 1/|N| sum_{(b,t) in N} KL(pi(.|b,t) || pi_ref(.|b,t))

``z`` are the trained model's next-token logits on the forget batch, ``z_ref`` the frozen reference's;
``P`` (targeted) holds the first ``prefix_tokens`` positions of every contiguous sensitive span of an
answer (all of them for ``prefix_tokens=-1``), ``N`` the answer positions outside sensitive spans. At
each targeted position the model's logits at the reference's top-k tokens are pulled to the mean
logit over the *whole* vocabulary (not detached): local entropy maximisation, nonzero already for
``k = 1`` on non-uniform logits. Sensitive tokens past the prefix get no term at all.

Notes on fidelity: the code's KL is the reverse one, ``sum p (log p - log p_ref)`` with ``p`` the
trained model (unlike :func:`unpact.unlearn.methods.kl_to_ref`); one weight ``alpha`` scales both the
KL and the retain NLL there (``gamma = 1`` on the forget term); the code also drops positions
predicting EOS from ``P`` (unpact's answers hold no EOS). Defaults (``PALU.yaml``, ``GradDiff.yaml``):
``top_k=1``, ``first_n=-1``, ``alpha=1``; the released sweeps try ``top_k`` in {1, 1000, 5000, 10000},
``first_n`` in {1, 2, 3, 4, 5, 10}, ``alpha`` in {0.2, 0.5, 1, 2, 5} at lr 1e-5..5e-5. unpact trains it at
``lr=3e-5`` (inside that range): at the shared ``1e-4`` the micro toy world's retain accuracy collapses
(0.97 -> 0.03 in 60 steps), at ``1e-5`` it barely forgets (0.90 -> 0.88).
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import torch

from unpact.errors import InputError
from unpact.unlearn.methods import LossContext, Method, TokBatch, _logits, nll

logger = logging.getLogger(__name__)

__all__ = ["PALU_DEFAULTS", "prefix_mask", "palu_forget_term", "palu_kl_term", "palu_loss", "palu_method"]

PALU_DEFAULTS: dict[str, Any] = {"top_k": 1, "prefix_tokens": -1, "kl_weight": 1.0, "retain_weight": 1.0}


def _check_top_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise InputError(
            f"palu top_k must be an integer >= 1, got {k!r}",
            source="hparams",
            fix="pass top_k=1 (the paper's default) or another positive integer",
        )
    return int(k)


def _check_prefix(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or (n != -1 and n < 1):
        raise InputError(
            f"palu prefix_tokens must be -1 (whole spans) or an integer >= 1, got {n!r}",
            source="hparams",
            fix="pass prefix_tokens=-1 (the paper's default) or e.g. 1..5",
        )
    return int(n)


def _check_weight(name: str, w: Any) -> float:
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
        raise InputError(
            f"palu {name} must be a finite number >= 0, got {w!r}",
            source="hparams",
            fix=f"pass e.g. {name}={PALU_DEFAULTS[name]} (0 drops the term)",
        )
    return float(w)


def prefix_mask(sensitive: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` True positions of every contiguous run of True, per row.

    Args:
        sensitive: ``(batch, seq - 1)`` bool, e.g. :attr:`TokBatch.sensitive`.
        n: Positions kept per run; ``-1`` keeps them all.

    Returns:
        ``(batch, seq - 1)`` bool, a subset of ``sensitive``.

    Raises:
        InputError: If ``n`` is neither -1 nor an integer >= 1, or ``sensitive`` is not 2-D.
    """
    n = _check_prefix(n)
    if sensitive.dim() != 2:
        raise InputError(f"sensitive must be (batch, seq - 1), got shape {tuple(sensitive.shape)}")
    s = sensitive.bool()
    if n == -1:
        return s.clone()
    count = s.long().cumsum(-1)  # sensitive positions up to and including t
    start = s.clone()
    start[:, 1:] &= ~s[:, :-1]
    # count just before the current run began, carried forward along the row
    before = torch.where(start, count - 1, torch.zeros_like(count)).cummax(-1).values
    return s & (count - before <= n)


def palu_forget_term(logits: torch.Tensor, ref_logits: torch.Tensor, target_mask: torch.Tensor, k: int) -> torch.Tensor:
    """PALU's local-entropy term: top-k logits (the reference's) pulled to the vocabulary mean.

    ``mean over targeted (b, t) of 1/k sum_{i in TopK(ref_logits[b,t])} (logits[b,t,i] - mean_j logits[b,t,j])^2``.

    Args:
        logits: ``(batch, seq - 1, vocab)`` the trained model's logits (with grad).
        ref_logits: ``(batch, seq - 1, vocab)`` the frozen reference's logits (choose the k indices).
        target_mask: ``(batch, seq - 1)`` bool, the targeted positions (sensitive prefixes).
        k: Logits flattened per position, clamped to the vocabulary size (:func:`palu_method`'s runs
            warn and record the clamped value).

    Returns:
        Scalar; 0 when no position is targeted.

    Raises:
        InputError: If ``k < 1`` or the shapes disagree.
    """
    k = min(_check_top_k(k), logits.shape[-1])
    if ref_logits.shape != logits.shape or target_mask.shape != logits.shape[:-1]:
        raise InputError(
            f"palu shapes disagree: logits {tuple(logits.shape)}, ref_logits {tuple(ref_logits.shape)}, "
            f"target_mask {tuple(target_mask.shape)}"
        )
    m = target_mask.bool()
    z = logits[m]  # (n_targeted, vocab)
    if z.shape[0] == 0:
        return logits.sum() * 0.0
    idx = ref_logits[m].detach().topk(k, dim=-1).indices  # (n_targeted, k)
    dev = z.gather(-1, idx) - z.mean(-1, keepdim=True)
    return (dev**2).mean(-1).mean()


def palu_kl_term(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``KL(pi || pi_ref)`` (the trained model first, as in the authors' code), averaged over ``mask``.

    Args:
        logits: ``(batch, seq - 1, vocab)`` the trained model's logits.
        ref_logits: ``(batch, seq - 1, vocab)`` the reference's logits.
        mask: ``(batch, seq - 1)`` bool, the constrained positions (non-sensitive answer tokens).

    Returns:
        Scalar; 0 when the mask is empty.
    """
    m = mask.bool()
    if not bool(m.any()):
        return logits.sum() * 0.0
    lp = torch.log_softmax(logits[m], -1)
    ref_lp = torch.log_softmax(ref_logits[m].detach(), -1)
    return (lp.exp() * (lp - ref_lp)).sum(-1).mean()


def palu_loss(ctx: LossContext, f: TokBatch, r: TokBatch | None) -> torch.Tensor:
    """The PALU objective (see the module docstring) on a forget and a retain batch.

    Args:
        ctx: ``ctx.hparams`` holds ``top_k``, ``prefix_tokens``, ``kl_weight``, ``retain_weight``.
        f: The forget batch; :attr:`TokBatch.sensitive` gives the sensitive spans (default: whole answers).
        r: The retain batch (required).

    Returns:
        Scalar to minimise.

    Raises:
        InputError: If ``r`` is None or a hyperparameter is invalid.
    """
    hp = {**PALU_DEFAULTS, **ctx.hparams}
    k = _check_top_k(hp["top_k"])
    n = _check_prefix(hp["prefix_tokens"])
    kl_w = _check_weight("kl_weight", hp["kl_weight"])
    rw = _check_weight("retain_weight", hp["retain_weight"])
    if r is None:
        raise InputError("palu needs a retain set", source="retain", fix="pass retain examples")
    sensitive = f.sensitive.bool() & f.answer_mask.bool()
    target = prefix_mask(sensitive, n)
    other = f.answer_mask.bool() & ~sensitive
    with torch.no_grad():
        ref_logits = _logits(ctx.ref, f)
    logits = _logits(ctx.model, f)
    loss = palu_forget_term(logits, ref_logits, target, k)
    if kl_w:
        loss = loss + kl_w * palu_kl_term(logits, ref_logits, other)
    if rw:
        loss = loss + rw * nll(ctx.model, r)
    return loss


def _prepare(ctx: LossContext) -> None:
    """Check the hyperparameters before training; clamp ``top_k`` to the vocabulary, with a warning, and
    record the value used (``hparams.top_k`` of the record; the requested one as ``top_k_requested``)."""
    hp = {**PALU_DEFAULTS, **ctx.hparams}
    k = _check_top_k(hp["top_k"])
    _check_prefix(hp["prefix_tokens"])
    _check_weight("kl_weight", hp["kl_weight"])
    _check_weight("retain_weight", hp["retain_weight"])
    vocab = int(ctx.subject.vocab_size)
    if k > vocab:
        logger.warning("palu: top_k=%d is above the vocabulary size %d; using top_k=%d", k, vocab, vocab)
        ctx.hparams["top_k"] = vocab
        ctx.state.setdefault("record", {})["top_k_requested"] = k


def palu_method() -> Method:
    """The PALU :class:`~unpact.unlearn.methods.Method` (not registered), defaults :data:`PALU_DEFAULTS`."""
    return Method(
        "palu",
        palu_loss,
        dict(PALU_DEFAULTS),
        True,
        "flatten the reference's top-k logits at sensitive-span prefixes; KL on other answer tokens + NLL on retain",
        train_defaults={"lr": 3e-5},
        prepare=_prepare,
        uses_sensitive_spans=True,
    )
