"""UniErase: an unlearning token, then a light edit that makes forget questions emit it.

"UniErase: Unlearning Token as a Universal Erasure Primitive for Language Models" (2025),
https://arxiv.org/abs/2505.15674 (code https://github.com/Ymm-cll/UniErase). Two phases:

I. *Unlearning token.* A new token ``[UNL]`` (here ``"<unl>"``) joins the vocabulary; only its
   embedding row is trained (every other row's gradient is zeroed) so that
   ``question + [UNL]`` is followed by a refusal ("I don't know"-style, :data:`IDK_ANSWERS`).
   The loss is the NLL of the answer tokens *after* ``[UNL]``; the token itself is never a target, so
   nothing learns to emit it yet. With tied embeddings (GPT-2, the toy world) the input row is also the
   token's output row, so phase I changes its logit too; untied, the output row keeps its initial value.
   The new rows start as a draw from ``N(mean, cov)`` of the existing rows, with their full covariance:
   unpact's own choice. transformers' ``mean_resizing`` draws with ``1e-9 * cov``, essentially the mean,
   and as an output row the mean's logit is the mean of all logits, never the largest, so no edit could
   make the token come first.
II. *Edit.* AlphaEdit (:mod:`unpact.unlearn.alphaedit`, Fang et al., ICLR 2025,
   https://arxiv.org/abs/2410.02355) edits the MLP output projections of a few layers so that every
   forget question's first generated token is ``[UNL]`` (which then leads to the refusal), while the
   retain items' keys lie in the edit's null space. The paper edits 5 of Llama-3.1-8B's 32
   down-projections (layers 4-8), 3.66% of the parameters: the share :func:`unierase_method` records.

Hyperparameters (:data:`UNIERASE_DEFAULTS`):

=====================  =======================================================================
``token``              the unlearning token (``"<unl>"``; must be new to the vocabulary)
``layers``             blocks whose MLP output projection is edited; ``None``: 3 blocks centred on
                       the middle, ``(n_layers - 3) // 2 ..`` (all blocks of a model with <= 3)
``alpha``              scale of the edit's weight change (1: AlphaEdit's update; 0: phase I only)
``null_threshold``     eigenvalue cut of the retain keys' second moment (AlphaEdit: 2e-2)
``l2``                 ridge term of the closed form (AlphaEdit's ``L2``: 10)
``v_steps``, ``v_lr``  Adam steps and rate of the target residual ``v*`` (AlphaEdit: 25, 0.1)
``v_weight_decay``     ``v*`` penalty ``v_weight_decay * |delta| / |h|^2`` (AlphaEdit: 0.5)
``clamp_norm_factor``  ``|delta| <= clamp_norm_factor * |h|`` (AlphaEdit: 0.75)
=====================  =======================================================================

Phase I runs in the shared loop (default ``lr=1e-2``, 60 steps: the authors train the row at 1e-3
for about 125 steps on Llama, whose embedding entries are about ten times smaller than the toy world's,
std 0.12); phase II runs after it (:attr:`Method.post`). The edit's settings are AlphaEdit's and absolute:
a model whose MLP keys or residuals are on another scale may need another ``null_threshold`` (the record's
``null_space_dims`` shows how many directions the edit may use; 0 changes nothing), ``l2`` or ``v_lr``.

Differences from the paper: one token for the whole forget set (the paper uses one per batch of
400); the answer is ``[UNL]`` + refusal without a closing ``[UNL]``; no weight perturbation while
training the row; the edit's keys sit at the last prompt token (the paper's AlphaEdit uses the
subject's last token); ``K0`` is the retain items' tokens (prompt and answer) plus the forget items'
``[UNL]`` + refusal continuations (what phase I taught: without them the edit also fires after the
token and the model repeats it), not Wikipedia.

The token is added as a normal (not special) token, so decoded text shows it (the authors add it as
special, which ``skip_special_tokens`` would hide), with ``lstrip`` so that the space between a
prompt and ``"<unl> ..."`` belongs to it: the first answer token is the unlearning token itself.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unpact.data import Example, encode, fill_id
from unpact.errors import InputError
from unpact.models import Subject, frozen
from unpact.unlearn.alphaedit import TokenPositions, alphaedit, mlp_out_proj, next_token_share
from unpact.unlearn.methods import IDK_ANSWERS, LossContext, Method, TokBatch, nll, without_sensitive

logger = logging.getLogger(__name__)

__all__ = ["UNIERASE_DEFAULTS", "unierase_method", "default_layers"]

UNIERASE_DEFAULTS: dict[str, Any] = {
    "token": "<unl>",
    "layers": None,
    "alpha": 1.0,
    "null_threshold": 2e-2,
    "l2": 10.0,
    "v_steps": 25,
    "v_lr": 0.1,
    "v_weight_decay": 0.5,
    "clamp_norm_factor": 0.75,
}

_SRC = "unierase hparams"
_EDIT_KEYS = ("l2", "null_threshold", "v_steps", "v_lr", "v_weight_decay", "clamp_norm_factor")


def default_layers(n_layers: int) -> list[int]:
    """Three blocks centred on the middle (all of them for models with three or fewer)."""
    k = min(3, n_layers)
    start = (n_layers - k) // 2
    return list(range(start, start + k))


def _layers(hp: dict[str, Any], n_layers: int) -> list[int]:
    spec = hp.get("layers")
    if spec is None:
        return default_layers(n_layers)
    items: Any = [spec] if isinstance(spec, numbers.Number) else spec
    ok = isinstance(items, Sequence) and not isinstance(items, str) and len(items) > 0
    ok = ok and all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in items)
    bad = [int(x) for x in items if not 0 <= int(x) < n_layers] if ok else []
    if not ok or bad:
        raise InputError(
            f"layers must be block indices in [0, {n_layers}) for this {n_layers}-layer model, got {spec!r}",
            source=_SRC,
            fix=f"e.g. layers={default_layers(n_layers)}, or leave it out for those",
        )
    return sorted({int(x) for x in items})


def _check(hp: dict[str, Any], n_layers: int) -> None:
    """Raise :class:`InputError` for an unusable hyperparameter."""
    token = hp["token"]
    if not isinstance(token, str) or not token.strip() or token != token.strip():
        raise InputError(f"token must be a non-empty string without outer spaces, got {token!r}", source=_SRC)
    _layers(hp, n_layers)
    rules = {
        "alpha": (0.0, True),
        "null_threshold": (0.0, False),
        "l2": (0.0, False),
        "v_lr": (0.0, False),
        "v_weight_decay": (0.0, True),
        "clamp_norm_factor": (0.0, False),
    }
    for k, (low, closed) in rules.items():
        v = hp[k]
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))
        if not ok or not (float(v) >= low if closed else float(v) > low):
            raise InputError(
                f"{k} must be a number {'>=' if closed else '>'} {low:g}, got {v!r}",
                source=_SRC,
                fix=f"e.g. {k}={UNIERASE_DEFAULTS[k]}",
            )
    v = hp["v_steps"]
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise InputError(f"v_steps must be an integer >= 1, got {v!r}", source=_SRC, fix="e.g. v_steps=25")


def _typical_row(rows: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A draw from ``N(mean, cov)`` of ``rows`` ``(n, d)``, with their full covariance: ``(d,)``.

    unpact's choice (transformers' ``mean_resizing`` uses ``1e-9 * cov``, essentially the mean): as an
    output row the mean's logit is the mean of all logits, never the largest, so no edit could make the
    token the model's first choice.
    """
    x = rows.float()
    mu = x.mean(0)
    z = torch.randn(len(x), generator=g).to(x.device)
    return (mu + (x - mu).T @ z / len(x) ** 0.5).to(rows.dtype)


def _prepare(ctx: LossContext) -> None:
    """Check the hparams, grow a tokenizer copy by the token and the trained copy's embeddings by a row."""
    from tokenizers import AddedToken

    hp = ctx.hparams
    _check(hp, ctx.subject.n_layers)
    if float(hp["alpha"]) > 0:  # refuse a model phase II cannot edit before phase I trains
        mlp_out_proj(ctx.subject, 0)
    token = hp["token"]
    tok = copy.deepcopy(ctx.subject.tokenizer)
    if token in tok.get_vocab():
        raise InputError(
            f"the token {token!r} is already in the vocabulary (id {tok.convert_tokens_to_ids(token)})",
            source=_SRC,
            fix='choose a new one, e.g. token="<unl2>"',
        )
    tok.add_tokens([AddedToken(token, lstrip=True, normalized=False, special=False)])
    tid = int(tok.convert_tokens_to_ids(token))
    model: Any = ctx.model
    emb = model.get_input_embeddings()
    n_old = int(emb.weight.shape[0])
    if tid >= n_old:  # a padded embedding matrix may hold the row already (then it is left that size)
        model.resize_token_embeddings(tid + 1, mean_resizing=False)
        emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is None or head.weight is emb.weight
    g = torch.Generator().manual_seed(int(hp.get("seed", 0)))
    with torch.no_grad():
        emb.weight[tid] = _typical_row(emb.weight[:tid], g)
        if not tied:
            head.weight[tid] = _typical_row(head.weight[:tid], g)
            if getattr(head, "bias", None) is not None:
                head.bias[tid] = head.bias[:tid].mean()
    ctx.tokenizer = tok
    ctx.state.update(unl_id=tid, tied=tied, record={"unlearning_tokens": [token], "unlearning_token_ids": [tid]})


def _forget_data(ctx: LossContext, forget: list[Example], rng: Any) -> list[Example]:
    """Each forget question answered ``"<unl> " + a refusal`` (sensitive spans dropped: the answer changed)."""
    token = ctx.hparams["token"]
    out = [
        dataclasses.replace(e, answer=f"{token} {rng.choice(IDK_ANSWERS)}", meta=without_sensitive(e.meta))
        for e in forget
    ]
    ctx.state["targets"] = out
    return out


def _loss(ctx: LossContext, f: TokBatch, r: TokBatch | None) -> torch.Tensor:
    """NLL of the answer tokens after the unlearning token (the token itself is not a target)."""
    after = (f.input_ids == ctx.state["unl_id"]).cumsum(1) > 0  # (batch, seq): at or after the token
    return nll(ctx.model, dataclasses.replace(f, answer_mask=f.answer_mask & after[:, :-1], sensitive_mask=None))


def _trainable(ctx: LossContext) -> list[nn.Parameter]:
    """The input embedding matrix, with a gradient hook keeping only the new token's row."""
    weight = ctx.model.get_input_embeddings().weight  # type: ignore[operator]
    tid = ctx.state["unl_id"]

    def only_new_row(grad: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(grad)
        mask[tid] = 1
        return grad * mask

    ctx.state["grad_hook"] = weight.register_hook(only_new_row)
    return [weight]


def _positions(
    tok: Any,
    subject: Subject,
    examples: Sequence[Example],
    device: torch.device,
    *,
    prompt: bool,
    from_answer: bool = False,
) -> TokenPositions:
    """:class:`TokenPositions` of the examples' prompts (``prompt=True``) or whole sequences (keys kept:
    all tokens, or the answer's only with ``from_answer``)."""
    encs = [encode(tok, e, fmt=subject.prompt_format, max_length=subject.n_ctx) for e in examples]
    seqs = [e.prompt_ids if prompt else e.input_ids for e in encs]
    ids = torch.full((len(seqs), max(len(s) for s in seqs)), fill_id(tok), dtype=torch.long)
    mask = torch.zeros_like(ids)
    keep = torch.zeros_like(ids, dtype=torch.bool)
    for i, (s, e) in enumerate(zip(seqs, encs)):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
        keep[i, e.answer_span[0] if from_answer else 0 : len(s)] = True
    last = torch.tensor([len(s) - 1 for s in seqs])
    return TokenPositions(ids.to(device), mask.to(device), last.to(device), keep.to(device))


def _numel(module: nn.Module) -> int:
    weight: Any = module.weight
    return int(weight.numel())


def _post(ctx: LossContext) -> None:
    """Phase II: the AlphaEdit edit; record the token, the edited layers and the share of changed parameters."""
    handle = ctx.state.pop("grad_hook", None)
    if handle is not None:
        handle.remove()
    hp, model, tid = ctx.hparams, ctx.model, ctx.state["unl_id"]
    src = ctx.subject
    sub = Subject(model=model, tokenizer=ctx.tokenizer, spec=src.spec, name="unierase", prompt_format=src.prompt_format)
    dev = src.device
    prompts = _positions(ctx.tokenizer, sub, ctx.state["forget"], dev, prompt=True)
    alpha = float(hp["alpha"])
    layers = _layers(hp, sub.n_layers) if alpha > 0 else []
    stats: dict[str, Any] = {"null_space_dims": [], "edit_gap_closed": None}
    with frozen(model):
        if layers:
            res = alphaedit(
                sub,
                layers,
                prompts,
                tid,
                [  # K0: the retain items, and what phase I taught (the refusal after the token)
                    _positions(ctx.tokenizer, sub, ctx.state["retain"], dev, prompt=False),
                    _positions(ctx.tokenizer, sub, ctx.state["targets"], dev, prompt=False, from_answer=True),
                ],
                alpha=alpha,
                **{k: hp[k] for k in _EDIT_KEYS},
            )
            share, nnz = res.target_share, sum(int((d != 0).sum()) for d in res.deltas.values())
            stats = {"null_space_dims": [res.null_dims[i] for i in layers], "edit_gap_closed": res.gap_closed}
        else:
            share, nnz = next_token_share(sub, prompts, tid), 0
    d = int(model.get_input_embeddings().weight.shape[1])  # type: ignore[operator]
    new_rows = d * (1 if ctx.state["tied"] else 2)
    edited = sum(_numel(mlp_out_proj(sub, i)) for i in layers)
    total = sum(p.numel() for p in model.parameters())
    ctx.state["record"].update(
        edited_layers=layers,
        **stats,
        params_changed_share=(edited + new_rows) / total,
        entries_changed_share=(nnz + new_rows) / total,
        n_params=total,
        forget_first_token_share=share,
    )
    logger.info("unierase: %s", ctx.state["record"])


def unierase_method() -> Method:
    """The UniErase :class:`~unpact.unlearn.methods.Method` (register it with ``register_method``)."""
    return Method(
        "unierase",
        _loss,
        dict(UNIERASE_DEFAULTS),
        True,
        "train a new unlearning token's embedding to precede refusals, then AlphaEdit forget questions to emit it",
        prepare=_prepare,
        forget_data=_forget_data,
        trainable=_trainable,
        post=_post,
        train_defaults={"lr": 1e-2},
    )
