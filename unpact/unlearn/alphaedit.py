"""AlphaEdit: a closed-form, null-space constrained edit of MLP output projections.

Locate-then-edit (MEMIT, Meng et al., ICLR 2023, https://arxiv.org/abs/2210.07229; code
https://github.com/kmeng01/memit) treats the output projection ``W`` (``d_out x d_in``) of a block's
MLP as a linear key-value memory: its input at a token is the *key* ``k``, its output the *value*
``W k``. To make the model produce a target, MEMIT (1) optimises, per edited prompt, a residual
vector ``v* = h + delta`` at the last edited layer ``L`` such that the model predicts the target,
(``delta`` clamped to ``clamp_norm_factor * |h|`` with a weight decay ``v_weight_decay * |delta| / |h|^2``),
then (2) spreads the missing residual ``v* - h`` over the edited layers in order: layer ``l`` (the
``i``-th of ``n``) writes ``R = (v* - h_L) / (n - i)``, ``h_L`` re-read after the layers before it
were edited.

AlphaEdit (Fang et al., ICLR 2025, "AlphaEdit: Null-Space Constrained Knowledge Editing for
Language Models", https://arxiv.org/abs/2410.02355; code https://github.com/jianghoucheng/AlphaEdit)
keeps preserved knowledge exactly: with ``K0`` the preserved keys and ``P`` the projector onto the
eigenvectors of ``K0 K0^T / n`` whose eigenvalue is below ``nullspace_threshold`` (2e-2), the update
of each layer is (``AlphaEdit_main.py``; the paper writes it with ``l2 = 1``)::

    Delta = R K1^T P ((K1 K1^T + Kp Kp^T) P + l2 I)^{-1}          (d_out x d_in)

``K1`` (``d_in x n``) are the edited prompts' keys, ``Kp`` the keys of earlier edits (sequential
editing; zero for one batch) and ``l2 = 10`` in the published configurations. ``Delta = Delta' P``,
so ``Delta K0 ~ 0``: preserved keys map to the same values.
Published defaults (``hparams/AlphaEdit/Llama3-8B.json``): layers 4-8 of 32, ``v_num_grad_steps=25``,
``v_lr=0.1``, ``v_weight_decay=0.5``, ``clamp_norm_factor=0.75``, ``kl_factor=0.0625``,
``nullspace_threshold=2e-2``, ``L2=10``; ``K0`` is 100,000 Wikipedia tokens.

Here (used by :mod:`unpact.unlearn.unierase`): the key and the edit position are the *last prompt
token* (the position that predicts the first answer token), not the subject's last token; the
target is one token; ``K0`` is the caller's preserved text; MEMIT's context-template prefixes and its
KL term on ``"{subject} is a"`` prompts are left out (no subject is needed).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from unpact._arch import out_features, weight_in_out
from unpact.errors import ArchitectureError, InputError
from unpact.hooks import hooked
from unpact.models import Subject

logger = logging.getLogger(__name__)

__all__ = [
    "null_space_projector",
    "alphaedit_update",
    "mlp_out_proj",
    "TokenPositions",
    "AlphaEditResult",
    "alphaedit",
    "next_token_share",
]

_CHUNK = 32  # prompts per forward pass


def null_space_projector(cov: torch.Tensor, threshold: float) -> torch.Tensor:
    """Projector onto the eigenvectors of ``cov`` whose eigenvalue is below ``threshold``.

    Args:
        cov: ``(d, d)`` symmetric positive semi-definite matrix, e.g. ``K0 K0^T / n``.
        threshold: Eigenvalue cut (AlphaEdit: ``2e-2`` on the mean second moment of the keys).

    Returns:
        ``(d, d)`` projector ``U U^T`` (``U`` the kept eigenvectors), in ``cov``'s dtype.
    """
    evals, evecs = torch.linalg.eigh(cov.double() if cov.shape[0] <= 4096 else cov.float())
    u = evecs[:, evals < threshold]
    return (u @ u.T).to(cov.dtype)


def alphaedit_update(
    keys: torch.Tensor,
    resid: torch.Tensor,
    projector: torch.Tensor,
    *,
    l2: float = 10.0,
    prev_cov: torch.Tensor | None = None,
) -> torch.Tensor:
    """AlphaEdit's closed-form update ``Delta = R K1^T P ((K1 K1^T + Kp Kp^T) P + l2 I)^{-1}``.

    Solved as ``Delta^T = (P (K1 K1^T + Kp Kp^T) + l2 I)^{-1} P K1 R^T`` (``P`` symmetric), as in
    AlphaEdit's code.

    Args:
        keys: ``(d_in, n)`` keys ``K1`` of the edited inputs.
        resid: ``(d_out, n)`` value changes ``R`` wanted at those keys.
        projector: ``(d_in, d_in)`` null-space projector ``P`` of the preserved keys.
        l2: Ridge term (AlphaEdit's ``L2``).
        prev_cov: ``(d_in, d_in)`` ``Kp Kp^T`` of earlier edits, or ``None``.

    Returns:
        ``(d_out, d_in)`` update of a weight stored as ``nn.Linear`` does (``out x in``).
    """
    dt = torch.promote_types(keys.dtype, torch.float32)
    k, r, p = keys.to(dt), resid.to(dt), projector.to(dt)
    cov = k @ k.T if prev_cov is None else k @ k.T + prev_cov.to(dt)
    lhs = p @ cov + l2 * torch.eye(k.shape[0], dtype=dt, device=k.device)
    return torch.linalg.solve(lhs, p @ k @ r.T).T


def mlp_out_proj(subject: Subject, layer: int) -> nn.Module:
    """Block ``layer``'s MLP output projection, from the architecture map (:attr:`ArchSpec.mlp_out_proj`).

    Args:
        subject: The model.
        layer: Block index.

    Returns:
        The linear-like layer (a 2-D ``weight``) that writes the MLP's ``d_model`` output.

    Raises:
        ArchitectureError: The architecture names no MLP output projection (e.g. a mixture of experts,
            which has no one matrix to edit), or the one it names is not a linear layer writing ``d_model``
            features.
    """
    proj = subject.mlp_out_proj(layer)
    weight = getattr(proj, "weight", None)
    if not (isinstance(weight, torch.Tensor) and weight.dim() == 2 and out_features(proj) == subject.d_model):
        spec = subject.spec
        raise ArchitectureError(
            f"the MLP output projection {spec.mlp_out_proj!r} of {spec.model_type!r} is a {type(proj).__name__}, "
            f"not a linear layer writing d_model={subject.d_model} features, so the edit has no matrix to change",
            source="unierase / AlphaEdit",
            fix="point ArchSpec.mlp_out_proj at the MLP's down-projection: unpact.register_architecture("
            "dataclasses.replace(subject.spec, mlp_out_proj=...), overwrite=True)",
        )
    return proj


@dataclass(frozen=True)
class TokenPositions:
    """Right-padded token sequences and the positions whose keys matter.

    Attributes:
        input_ids: ``(batch, seq)`` ids.
        attention_mask: ``(batch, seq)`` 1 on real tokens.
        last: ``(batch,)`` index of each row's last prompt token (where the target is predicted).
        keep: ``(batch, seq)`` bool, the tokens whose keys are preserved (``K0``); ``None``: every real token.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    last: torch.Tensor
    keep: torch.Tensor | None = None

    def chunks(self, size: int = _CHUNK) -> Iterator[TokenPositions]:
        """Consecutive row slices of at most ``size`` rows."""
        for i in range(0, len(self.last), size):
            sl = slice(i, i + size)
            keep = None if self.keep is None else self.keep[sl]
            yield TokenPositions(self.input_ids[sl], self.attention_mask[sl], self.last[sl], keep)


@dataclass(frozen=True)
class AlphaEditResult:
    """What an edit did.

    Attributes:
        deltas: Layer -> ``(d_out, d_in)`` update added to that layer's output projection (scaled).
        null_dims: Layer -> dimension of the null space the update lives in (of ``d_in``).
        target_share: Share of the edited prompts whose greedy next token is the target, after the edit.
        gap_closed: ``1 - mean |v* - h| / mean |v* - h_0|`` at the last edited layer: how much of the way
            to the target residuals the edit went (1: all; ``h_0`` before the edit).
    """

    deltas: dict[int, torch.Tensor]
    null_dims: dict[int, int]
    target_share: float
    gap_closed: float


@contextlib.contextmanager
def _inputs(modules: dict[int, nn.Module], store: dict[int, torch.Tensor], batch: int) -> Iterator[None]:
    """Record each module's input ``(batch, seq, d_in)`` of the last forward pass; hooks removed on exit."""
    handles = []

    def make(layer: int) -> Callable[[nn.Module, tuple], None]:
        def pre(module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            store[layer] = x.reshape(batch, -1, x.shape[-1]) if x.dim() == 2 else x  # OPT runs fc2 on flat tokens

        return pre

    try:
        for layer, m in modules.items():
            handles.append(m.register_forward_pre_hook(make(layer)))
        yield
    finally:
        for h in handles:
            h.remove()


def _forward_keys(
    subject: Subject, projs: dict[int, nn.Module], tp: TokenPositions, site: str | None = None
) -> tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor]:
    """At the last positions: the keys (layer -> ``(n, d_in)``), the residual at ``site`` ``(n, d_model)``
    (``(0,)`` without a site) and the logits ``(n, vocab)``; chunk by chunk."""
    keys: dict[int, list[torch.Tensor]] = {layer: [] for layer in projs}
    resid: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    for c in tp.chunks():
        rows = torch.arange(len(c.last), device=c.last.device)
        store: dict[int, torch.Tensor] = {}
        with torch.no_grad(), _inputs(projs, store, len(rows)), hooked(subject, cache=[site] if site else []) as cache:
            out = subject.model(input_ids=c.input_ids, attention_mask=c.attention_mask).logits
        missing = sorted(set(projs) - set(store))
        if missing:
            raise ArchitectureError(
                f"the MLP output projections of layers {missing} did not run in the forward pass",
                source="unierase / AlphaEdit",
                fix="use a dense-MLP model whose blocks call their MLP's down-projection",
            )
        for layer in projs:
            keys[layer].append(store[layer][rows, c.last].float())
        if site:
            resid.append(cache[site][rows, c.last].float())
        logits.append(out[rows, c.last].float())
    return (
        {layer: torch.cat(v) for layer, v in keys.items()},
        torch.cat(resid) if site else torch.empty(0),
        torch.cat(logits),
    )


def _key_cov(
    subject: Subject, projs: dict[int, nn.Module], preserved: Sequence[TokenPositions]
) -> dict[int, torch.Tensor]:
    """Mean second moment ``K0 K0^T / n`` of the kept keys (layer -> ``(d_in, d_in)``)."""
    sums: dict[int, torch.Tensor] = {}
    n = 0
    for c in (c for tp in preserved for c in tp.chunks()):
        store: dict[int, torch.Tensor] = {}
        with torch.no_grad(), _inputs(projs, store, len(c.last)):
            subject.model(input_ids=c.input_ids, attention_mask=c.attention_mask)
        real = c.attention_mask.bool() if c.keep is None else c.keep & c.attention_mask.bool()
        n += int(real.sum())
        for layer in projs:
            k = store[layer][real].float()
            sums[layer] = sums[layer] + k.T @ k if layer in sums else k.T @ k
    return {layer: s / max(n, 1) for layer, s in sums.items()}


def _target_values(
    subject: Subject,
    tp: TokenPositions,
    target: int,
    layer: int,
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    clamp_norm_factor: float,
) -> torch.Tensor:
    """MEMIT's ``v*``: ``(n, d_model)`` residual at ``resid_post.layer`` (last prompt token) predicting ``target``."""
    site = f"resid_post.{layer}"
    out: list[torch.Tensor] = []
    for c in tp.chunks():
        rows = torch.arange(len(c.last), device=c.last.device)
        with torch.no_grad(), hooked(subject, cache=[site]) as cache:
            subject.model(input_ids=c.input_ids, attention_mask=c.attention_mask)
        h0 = cache[site][rows, c.last].float()
        delta = torch.zeros_like(h0, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr)

        def add(t: torch.Tensor, *, hook: object) -> torch.Tensor:
            bump = torch.zeros_like(t).index_put((rows, c.last), delta.to(t.dtype))  # noqa: B023
            return t + bump

        for it in range(max(1, steps)):
            with hooked(subject, {site: add}):
                logits = subject.model(input_ids=c.input_ids, attention_mask=c.attention_mask).logits
            nll = -torch.log_softmax(logits[rows, c.last].float(), -1)[:, target]
            loss = nll + weight_decay * delta.norm(dim=-1) / h0.norm(dim=-1) ** 2
            if float(loss.detach().mean()) < 5e-2 or it >= steps - 1:  # MEMIT's stopping rule
                break
            (grad,) = torch.autograd.grad(loss.sum(), delta)
            delta.grad = grad
            opt.step()
            with torch.no_grad():
                cap = clamp_norm_factor * h0.norm(dim=-1, keepdim=True)
                delta.mul_(torch.clamp(cap / delta.norm(dim=-1, keepdim=True).clamp(min=1e-12), max=1.0))
        logger.info(
            "v*: %d steps, p(target) %.3f, |delta|/|h| %.3f",
            it + 1,
            float((-nll.detach()).exp().mean()),
            float((delta.detach().norm(dim=-1) / h0.norm(dim=-1)).mean()),
        )
        out.append((h0 + delta).detach())
    return torch.cat(out)


def _add(proj: nn.Module, delta: torch.Tensor) -> None:
    """``W += delta`` for ``delta`` ``(d_out, d_in)``, whatever the weight's storage layout."""
    w = weight_in_out(proj)
    with torch.no_grad():
        w.add_(delta.T.to(w.dtype))


def alphaedit(
    subject: Subject,
    layers: Sequence[int],
    prompts: TokenPositions,
    target: int,
    preserved: TokenPositions | Sequence[TokenPositions],
    *,
    alpha: float = 1.0,
    l2: float = 10.0,
    null_threshold: float = 2e-2,
    v_steps: int = 25,
    v_lr: float = 0.1,
    v_weight_decay: float = 0.5,
    clamp_norm_factor: float = 0.75,
) -> AlphaEditResult:
    """Edit ``subject``'s model in place so that token ``target`` follows each prompt (AlphaEdit).

    The model should be in eval mode with no parameter gradients (e.g. under :func:`unpact.models.frozen`).

    Args:
        subject: The model to edit (its weights change).
        layers: Blocks whose MLP output projections are edited, ascending; ``v*`` lives after the last.
        prompts: The prompts; ``last`` marks each one's final token.
        target: Token id to predict after each prompt.
        preserved: Text whose kept keys (:attr:`TokenPositions.keep`) must keep their values (``K0``).
        alpha: Scale of the weight change: ``W0 + alpha * (W_edited - W0)`` per layer (1: AlphaEdit's).
        l2, null_threshold, v_steps, v_lr, v_weight_decay, clamp_norm_factor: AlphaEdit's
            ``L2``, ``nullspace_threshold``, ``v_num_grad_steps``, ``v_lr``, ``v_weight_decay``,
            ``clamp_norm_factor`` (see the module docstring).

    Returns:
        The :class:`AlphaEditResult`.

    Raises:
        ArchitectureError: An architecture without a known MLP output projection (:func:`mlp_out_proj`).
        InputError: No layers.
    """
    if not layers:
        raise InputError("alphaedit needs at least one layer to edit", source="alphaedit(layers=...)")
    projs = {layer: mlp_out_proj(subject, layer) for layer in layers}
    covs = _key_cov(subject, projs, [preserved] if isinstance(preserved, TokenPositions) else preserved)
    proj_p = {layer: null_space_projector(c, null_threshold) for layer, c in covs.items()}
    null_dims = {layer: round(float(torch.trace(p))) for layer, p in proj_p.items()}
    empty = [layer for layer, n in null_dims.items() if n == 0]
    if empty:
        logger.warning(
            "alphaedit: the preserved keys of layers %s have no eigenvalue below null_threshold=%g, so those layers "
            "cannot change; raise null_threshold (the keys' scale differs between models)",
            empty,
            null_threshold,
        )
    z_layer = layers[-1]
    site = f"resid_post.{z_layer}"
    v_star = _target_values(
        subject,
        prompts,
        target,
        z_layer,
        steps=v_steps,
        lr=v_lr,
        weight_decay=v_weight_decay,
        clamp_norm_factor=clamp_norm_factor,
    )
    deltas: dict[int, torch.Tensor] = {}
    gap0 = torch.zeros(())
    for i, layer in enumerate(layers):
        keys, cur, _ = _forward_keys(subject, {layer: projs[layer]}, prompts, site)
        if i == 0:
            gap0 = (v_star - cur).norm(dim=-1).mean()
        resid = (v_star - cur).T / (len(layers) - i)
        delta = alphaedit_update(keys[layer].T, resid, proj_p[layer], l2=l2)
        _add(projs[layer], delta)
        deltas[layer] = delta
        logger.info("alphaedit layer %d: |R| %.3g, |Delta| %.3g", layer, float(resid.norm()), float(delta.norm()))
    if alpha != 1.0:
        for layer, delta in deltas.items():
            _add(projs[layer], (alpha - 1.0) * delta)
            deltas[layer] = alpha * delta
    _, cur, logits = _forward_keys(subject, {}, prompts, site)
    closed = float(1 - (v_star - cur).norm(dim=-1).mean() / gap0.clamp(min=1e-12))
    share = float((logits.argmax(-1) == target).float().mean())
    logger.info("alphaedit: %.3f of the gap to v* closed; target first for %.3f of the prompts", closed, share)
    return AlphaEditResult(deltas=deltas, null_dims=null_dims, target_share=share, gap_closed=closed)


def next_token_share(subject: Subject, prompts: TokenPositions, target: int) -> float:
    """Share of the prompts whose greedy next token (after ``last``) is ``target``."""
    _, _, logits = _forward_keys(subject, {}, prompts)
    return float((logits.argmax(-1) == target).float().mean())
