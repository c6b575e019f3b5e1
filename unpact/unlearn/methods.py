"""The unlearning objectives: one small loss per method, and the method registry.

Notation: forget set F, retain set R, ``pi`` the model being unlearned, ``pi_ref`` the frozen
model before unlearning. ``NLL(S)`` is the mean negative log-likelihood of the answer tokens of
batch ``S`` (teacher-forced); ``log pi(y|x)`` the summed answer log-probability of one item.

==============  ===================================================================  ==================
method          loss (minimised)                                                     defaults
==============  ===================================================================  ==================
``ga``          ``-NLL(F)``                                                          --
``ga_gd``       ``-NLL(F) + retain_weight * NLL(R)``                                 retain_weight=1
``ga_kl``       ``-NLL(F) + retain_weight * KL(pi_ref || pi)`` on R (all tokens)     retain_weight=1
``npo``         ``-(2/beta) * mean_F log sigmoid(-beta (log pi(y|x) - log pi_ref))`` beta=0.1
``npo_gd``      ``npo + retain_weight * NLL(R)``                                     beta=0.1, rw=1
``npo_kl``      ``npo + retain_weight * KL(pi_ref || pi)`` on R                      beta=0.1, rw=1
``idk``         ``NLL(F with "I don't know"-style answers) + retain_weight*NLL(R)``  retain_weight=1
``task_vector`` fine-tune on F (``NLL(F)``) to theta_ft; return                      alpha=1
                ``theta - alpha * (theta_ft - theta)``
``rmu``         ``|h_l(F) - c u|^2 / r^2 + alpha * |h_l(R) - h_ref_l(R)|^2 / r^2``     layer=(L-1)//2,
                at block ``layer``'s output, ``u`` a fixed random unit vector,         steering_coef=4,
                ``c = steering_coef * r``, ``r`` the reference's mean hidden-state    alpha=10,
                norm on F; only the MLPs of blocks ``layer-2 .. layer`` are trained   n_update_layers=3
==============  ===================================================================  ==================

Shared training defaults (see :data:`TRAIN_DEFAULTS`): AdamW, ``lr=1e-4``, 60 steps of 32 forget
(+ 32 retain) items, 5 warm-up steps, gradient clipping at 1; per-method overrides
(:attr:`Method.train_defaults`): ``task_vector`` fine-tunes at ``lr=3e-4``, ``rmu`` trains its few
MLPs at ``lr=5e-3``. They were picked on the micro toy world (a short sweep of lr in
{1e-4, 3e-4, 1e-3}); larger models usually need ``lr`` near 1e-5.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unpact.errors import InputError, UnknownNameError, check_count
from unpact.forward import gather_logprobs

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "Method",
    "TokBatch",
    "register_method",
    "get_method",
    "TRAIN_DEFAULTS",
    "IDK_ANSWERS",
    "without_sensitive",
]

TRAIN_DEFAULTS: dict[str, Any] = {"steps": 60, "lr": 1e-4, "batch_size": 32, "warmup_steps": 5, "max_grad_norm": 1.0}

IDK_ANSWERS: tuple[str, ...] = (
    "I don't know.",
    "I have no idea.",
    "I'm not sure.",
    "I cannot say.",
    "That is not something I know.",
)


@dataclass(frozen=True)
class TokBatch:
    """Tokenized batch for the losses.

    Attributes:
        input_ids: ``(batch, seq)`` right-padded ids.
        attention_mask: ``(batch, seq)`` 1 on real tokens.
        answer_mask: ``(batch, seq - 1)`` bool, True where position ``t`` predicts an answer token ``t + 1``.
        sensitive_mask: ``(batch, seq - 1)`` bool, True where position ``t`` predicts a token of a
            sensitive span of the answer (an example's ``meta["sensitive"]``: substrings of its answer);
            ``None``: the whole answer is sensitive (PALU's default).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    answer_mask: torch.Tensor
    sensitive_mask: torch.Tensor | None = None

    @property
    def sensitive(self) -> torch.Tensor:
        """``(batch, seq - 1)`` bool: :attr:`sensitive_mask`, or :attr:`answer_mask` where none was given."""
        return self.answer_mask if self.sensitive_mask is None else self.sensitive_mask

    @property
    def token_mask(self) -> torch.Tensor:
        """``(batch, seq - 1)`` bool, True where position ``t`` predicts a real token ``t + 1``."""
        return self.attention_mask[:, 1:].bool()


@dataclass
class LossContext:
    """What a loss may use: the trained model, the frozen reference and per-run state.

    Attributes:
        model: The model being unlearned (train mode, gradients on).
        ref: The frozen reference (the input model; never modified, always under ``no_grad``).
        hparams: The method's hyperparameters (defaults merged with the user's).
        state: Scratch space for a method (e.g. RMU's random direction).
        subject: The input :class:`~unpact.models.Subject` (for architecture lookups).
        state: Scratch space for a method (e.g. RMU's random direction); it starts with the run's
            ``"forget"`` and ``"retain"`` examples (lists). ``state["record"]``, a dict,
            is merged into the unlearned model's ``config.unpact_unlearn`` record.
        tokenizer: The tokenizer the batches are encoded with and the unlearned model is returned
            with: the subject's, unless :attr:`Method.prepare` replaced it (by a copy that grew).
    """

    model: nn.Module
    ref: nn.Module
    hparams: dict[str, Any]
    subject: Any
    state: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = None


def _logits(model: nn.Module, b: TokBatch) -> torch.Tensor:
    return model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1].float()


def _token_logp(logits: torch.Tensor, b: TokBatch) -> torch.Tensor:
    """``(batch, seq - 1)`` log-prob of each next token."""
    return gather_logprobs(logits, b.input_ids[:, 1:])


def nll(model: nn.Module, b: TokBatch) -> torch.Tensor:
    """Mean negative log-likelihood of the answer tokens (scalar)."""
    lp = _token_logp(_logits(model, b), b)
    m = b.answer_mask.float()
    return -(lp * m).sum() / m.sum().clamp(min=1)


def seq_logp(model: nn.Module, b: TokBatch) -> torch.Tensor:
    """``(batch,)`` summed answer log-probability ``log pi(y|x)``."""
    return (_token_logp(_logits(model, b), b) * b.answer_mask.float()).sum(-1)


def kl_to_ref(ctx: LossContext, b: TokBatch) -> torch.Tensor:
    """``KL(pi_ref || pi)`` averaged over the real next-token positions of ``b`` (scalar)."""
    with torch.no_grad():
        ref_lp = torch.log_softmax(_logits(ctx.ref, b), -1)
    lp = torch.log_softmax(_logits(ctx.model, b), -1)
    kl = (ref_lp.exp() * (ref_lp - lp)).sum(-1)
    m = b.token_mask.float()
    return (kl * m).sum() / m.sum().clamp(min=1)


def npo_loss(ctx: LossContext, f: TokBatch) -> torch.Tensor:
    """NPO: ``-(2/beta) mean log sigmoid(-beta (log pi(y|x) - log pi_ref(y|x)))``."""
    beta = float(ctx.hparams["beta"])
    with torch.no_grad():
        ref = seq_logp(ctx.ref, f)
    return -(2.0 / beta) * F.logsigmoid(-beta * (seq_logp(ctx.model, f) - ref)).mean()


LossFn = Callable[[LossContext, TokBatch, "TokBatch | None"], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """An unlearning method.

    Attributes:
        name: Registry name.
        loss: ``loss(ctx, forget_batch, retain_batch) -> scalar`` to minimise.
        defaults: Hyperparameters and their defaults (also per-method overrides of the training defaults).
        uses_retain: Whether the loss reads the retain batch.
        doc: One-line description.
        forget_answers: ``"gold"`` or ``"idk"`` (the forget targets are replaced by IDK answers).
        post: Optional ``post(ctx) -> None`` run after the loop (task vector arithmetic).
        trainable: Optional ``trainable(ctx) -> list of parameters``; default all.
        train_defaults: Overrides of :data:`TRAIN_DEFAULTS` for this method (e.g. its ``lr``).
        prepare: Optional ``prepare(ctx) -> None`` run on the trained copy before the optimizer is made
            (UniErase adds its unlearning token: a tokenizer copy in ``ctx.tokenizer``, a grown embedding).
        forget_data: Optional ``forget_data(ctx, forget, rng) -> examples``: the forget batches' items
            (ReLearn's paraphrases with vague answers), replacing ``forget_answers``.
        uses_sensitive_spans: The loss reads :attr:`TokBatch.sensitive_mask` (PALU): only then are the
            forget items' ``meta["sensitive"]`` spans located in their answers (and checked to be there).
        linear_in_alpha: The model is ``theta + alpha * (theta_1 - theta)`` with ``theta_1`` the
            ``alpha = 1`` model (task vector), so a sweep over ``alpha`` needs one run; otherwise a
            method with ``post`` and an ``alpha`` (UniErase's edit scale) is run once per point.
    """

    name: str
    loss: LossFn
    defaults: dict[str, Any]
    uses_retain: bool
    doc: str
    forget_answers: str = "gold"
    post: Callable[[LossContext], None] | None = None
    trainable: Callable[[LossContext], list[nn.Parameter]] | None = None
    train_defaults: dict[str, Any] = field(default_factory=dict)
    prepare: Callable[[LossContext], None] | None = None
    forget_data: Callable[[LossContext, list[Any], Any], list[Any]] | None = None
    linear_in_alpha: bool = False
    uses_sensitive_spans: bool = False


def without_sensitive(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` without its ``"sensitive"`` spans (for an item whose answer a method replaced)."""
    return {k: v for k, v in meta.items() if k != "sensitive"}


METHODS: dict[str, Method] = {}


def register_method(method: Method, *, overwrite: bool = False) -> Method:
    """Add a method to :data:`METHODS`.

    Raises:
        InputError: If the name is taken and ``overwrite`` is False.
    """
    if method.name in METHODS and not overwrite:
        raise InputError(
            f"unlearning method {method.name!r} already exists",
            source="register_method",
            fix="pass overwrite=True to replace it",
        )
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        UnknownNameError: For an unknown name (the message lists the registered ones).
    """
    if name not in METHODS:
        raise UnknownNameError(
            f"unknown unlearning method {name!r}",
            source="method",
            fix=f"choose from {', '.join(sorted(METHODS))} (or register_method your own)",
        )
    return METHODS[name]


def _retain_term(kind: str) -> Callable[[LossContext, TokBatch | None], torch.Tensor]:
    def term(ctx: LossContext, r: TokBatch | None) -> torch.Tensor:
        if r is None:
            raise InputError("this method needs a retain set", source="retain", fix="pass retain examples")
        w = float(ctx.hparams["retain_weight"])
        return w * (nll(ctx.model, r) if kind == "gd" else kl_to_ref(ctx, r))

    return term


def _ga(ctx: LossContext, f: TokBatch, r: TokBatch | None) -> torch.Tensor:
    return -nll(ctx.model, f)


def _npo(ctx: LossContext, f: TokBatch, r: TokBatch | None) -> torch.Tensor:
    return npo_loss(ctx, f)


def _plus(base: LossFn, kind: str) -> LossFn:
    retain = _retain_term(kind)

    def loss(ctx: LossContext, f: TokBatch, r: TokBatch | None) -> torch.Tensor:
        return base(ctx, f, r) + retain(ctx, r)

    return loss


def _idk(ctx: LossContext, f: TokBatch, r: TokBatch | None) -> torch.Tensor:
    return nll(ctx.model, f) + _retain_term("gd")(ctx, r)


def _finetune(ctx: LossContext, f: TokBatch, r: TokBatch | None) -> torch.Tensor:
    return nll(ctx.model, f)


def _task_vector_post(ctx: LossContext) -> None:
    """``theta <- theta_ref - alpha * (theta_ft - theta_ref)`` for every parameter."""
    alpha = float(ctx.hparams["alpha"])
    ref = dict(ctx.ref.named_parameters())
    with torch.no_grad():
        for name, p in ctx.model.named_parameters():
            p.copy_(ref[name] - alpha * (p - ref[name]))


def _rmu_layer(ctx: LossContext) -> int:
    layer = ctx.hparams.get("layer")
    n = ctx.subject.n_layers
    layer = (n - 1) // 2 if layer is None else check_count("layer", layer, where="rmu hparams")
    if not 0 <= layer < n:
        raise InputError(
            f"rmu layer must be in [0, {n}) for this {n}-layer model, got {layer}",
            source="hparams",
            fix=f"pass layer=0..{n - 1}, or leave it out for the middle layer",
        )
    return layer


def _copy_subject(ctx: LossContext) -> Any:
    """The trained copy wrapped as a Subject (to find its blocks and MLPs)."""
    from unpact.models import load_model

    sub = ctx.state.get("subject_copy")
    if sub is None:
        sub = load_model(ctx.model, ctx.subject.tokenizer, name="rmu-copy", prompt_format=ctx.subject.prompt_format)
        ctx.state["subject_copy"] = sub
    return sub


def _rmu_params(ctx: LossContext) -> list[nn.Parameter]:
    """MLP parameters of blocks ``layer - n_update_layers + 1 .. layer`` of the trained copy."""
    sub = _copy_subject(ctx)
    layer = _rmu_layer(ctx)
    first = max(0, layer - int(ctx.hparams["n_update_layers"]) + 1)
    params: list[nn.Parameter] = []
    for i in range(first, layer + 1):
        params += list(sub.mlp(i).parameters())
    return params


def _hidden(subject: Any, b: TokBatch, layer: int) -> torch.Tensor:
    """``(batch, seq, d_model)`` residual stream leaving block ``layer`` (site ``resid_post.layer``), with grad.

    Read through :func:`unpact.hooks.hooked` (removed on exit) rather than ``output_hidden_states``,
    which makes transformers 5 install permanent capture hooks on the model.
    """
    from unpact.hooks import hooked

    site = f"resid_post.{layer}"
    with hooked(subject, {}, cache=[site], detach=False) as cache:
        subject.model(input_ids=b.input_ids, attention_mask=b.attention_mask)
    return cache[site]


def _rmu(ctx: LossContext, f: TokBatch, r: TokBatch | None) -> torch.Tensor:
    if r is None:
        raise InputError("rmu needs a retain set", source="retain", fix="pass retain examples")
    layer = _rmu_layer(ctx)
    sub = _copy_subject(ctx)
    if "u" not in ctx.state:
        with torch.no_grad():
            h = _hidden(ctx.subject, f, layer)
            r_norm = h.norm(dim=-1)[f.attention_mask.bool()].mean()
        g = torch.Generator().manual_seed(int(ctx.hparams.get("seed", 0)))
        u = torch.rand(h.shape[-1], generator=g)
        ctx.state["u"] = (u / u.norm()).to(h.device, h.dtype)
        ctx.state["r"] = float(r_norm)
    u, rn = ctx.state["u"], ctx.state["r"]
    c = float(ctx.hparams["steering_coef"]) * rn
    fm = f.attention_mask.bool()
    hf = _hidden(sub, f, layer)
    forget = ((hf - c * u) ** 2).sum(-1)[fm].mean() / rn**2
    rm = r.attention_mask.bool()
    with torch.no_grad():
        href = _hidden(ctx.subject, r, layer)
    retain = ((_hidden(sub, r, layer) - href) ** 2).sum(-1)[rm].mean() / rn**2
    return forget + float(ctx.hparams["alpha"]) * retain


def _register_builtins() -> None:
    rw = {"retain_weight": 1.0}
    builtins = [
        Method("ga", _ga, {}, False, "gradient ascent on the forget answers"),
        Method("ga_gd", _plus(_ga, "gd"), dict(rw), True, "gradient ascent + NLL on retain (gradient difference)"),
        Method("ga_kl", _plus(_ga, "kl"), dict(rw), True, "gradient ascent + KL to the reference on retain"),
        Method("npo", _npo, {"beta": 0.1}, False, "negative preference optimisation"),
        Method("npo_gd", _plus(_npo, "gd"), {"beta": 0.1, **rw}, True, "NPO + NLL on retain"),
        Method("npo_kl", _plus(_npo, "kl"), {"beta": 0.1, **rw}, True, "NPO + KL to the reference on retain"),
        Method(
            "idk",
            _idk,
            dict(rw),
            True,
            "fine-tune forget questions to 'I don't know' + NLL on retain",
            forget_answers="idk",
        ),
        Method(
            "task_vector",
            _finetune,
            {"alpha": 1.0},
            False,
            "fine-tune on forget, then subtract alpha times the weight change",
            post=_task_vector_post,
            train_defaults={"lr": 3e-4},
            linear_in_alpha=True,
        ),
        Method(
            "rmu",
            _rmu,
            {"layer": None, "steering_coef": 4.0, "alpha": 10.0, "n_update_layers": 3},
            True,
            "steer forget hidden states at one layer to a random direction; keep retain states",
            trainable=_rmu_params,
            train_defaults={"lr": 5e-3},
        ),
    ]
    for m in builtins:
        register_method(m, overwrite=True)


_register_builtins()
