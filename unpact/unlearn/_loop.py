"""The one training loop shared by every unlearning method."""

from __future__ import annotations

import copy
import dataclasses
import logging
import numbers
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from unpact._devices import require_gradients
from unpact.data import Example, encode_batch, fill_id
from unpact.errors import InputError, check_positive
from unpact.models import Subject, frozen, load_model
from unpact.unlearn.methods import (
    IDK_ANSWERS,
    TRAIN_DEFAULTS,
    LossContext,
    TokBatch,
    get_method,
    without_sensitive,
)

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

__all__ = ["unlearn"]


def _sensitive_mask(tok: Any, examples: Sequence[Example], b: Any) -> torch.Tensor | None:
    """``(batch, seq - 1)`` positions predicting tokens of each example's ``meta["sensitive"]`` spans.

    ``None`` when no example names spans (the whole answer is sensitive). An answer token is in a
    span when its characters (found by decoding the answer's tokens one prefix at a time) overlap
    the span's first occurrence in the answer.
    """
    if not any(e.meta.get("sensitive") for e in examples):
        return None
    mask = torch.zeros(b.input_ids.shape, dtype=torch.bool)
    for i, (e, enc) in enumerate(zip(examples, b.items)):
        start, stop = enc.answer_span
        spans = e.meta.get("sensitive") or [e.answer]
        if isinstance(spans, str):
            spans = [spans]
        ids = enc.input_ids[start:stop].tolist()
        text = tok.decode(ids, skip_special_tokens=True)
        ends = [len(tok.decode(ids[: j + 1], skip_special_tokens=True)) for j in range(len(ids))]
        for span in spans:
            at = text.find(str(span).strip())
            if at < 0:
                raise InputError(
                    f"example {e.id!r}: sensitive span {span!r} is not in its answer {e.answer!r}",
                    source='meta["sensitive"]',
                    fix="give substrings of the answer",
                )
            lo, hi = at, at + len(str(span).strip())
            for j in range(len(ids)):
                begin = ends[j - 1] if j else 0
                if begin < hi and ends[j] > lo:
                    mask[i, start + j - 1] = True
    return mask[:, :-1]


def _tok_batch(
    subject: Subject, examples: Sequence[Example], device: torch.device, tok: Any = None, *, sensitive: bool = False
) -> TokBatch:
    """Examples encoded with ``tok`` (default: the subject's) in ``subject``'s prompt format (the one its
    users will ask in); with ``sensitive``, the mask of their ``meta["sensitive"]`` spans too (only methods
    that read it, :attr:`Method.uses_sensitive_spans`, ask: a span is checked against the answer)."""
    tok = subject.tokenizer if tok is None else tok
    b = encode_batch(tok, examples, fmt=subject.prompt_format, max_length=subject.n_ctx, fill=fill_id(tok))
    sens = _sensitive_mask(tok, examples, b) if sensitive else None
    return TokBatch(
        b.input_ids.to(device),
        b.attention_mask.to(device),
        b.answer_mask()[:, :-1].to(device),
        None if sens is None else sens.to(device),
    )


def _cycle(items: list[_T], batch_size: int, rng: random.Random) -> Iterator[list[_T]]:
    """Endless batches of ``batch_size`` items: seeded shuffles of ``items``, one after another."""
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            extra = list(range(len(items)))
            rng.shuffle(extra)
            order += extra
        yield [items[i] for i in order[:batch_size]]
        order = order[batch_size:]


def _check_checkpoints(checkpoints: Sequence[int], steps: int, method: str, *, post: bool) -> frozenset[int]:
    """The checkpoint steps as a set, checked against ``steps`` and the method."""
    if isinstance(checkpoints, (str, bytes)) or not all(
        isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in checkpoints
    ):
        raise InputError(f"checkpoints must be step counts (integers), got {checkpoints!r}", source="unlearn")
    bad = [int(k) for k in checkpoints if not 0 < int(k) < steps]
    if bad:
        raise InputError(
            f"checkpoints {bad} are not between 1 and steps - 1 = {steps - 1}",
            source="unlearn(checkpoints=...)",
            fix="give step counts below steps (the final model is the one returned)",
        )
    if checkpoints and post:
        raise InputError(
            f"{method!r} changes the weights after training, so the model after k steps is not a k-step run's",
            source="unlearn(checkpoints=...)",
            fix="sweep its strength instead (alpha for task_vector: see unpact.sweep)",
        )
    return frozenset(int(k) for k in checkpoints)


def unlearn(
    subject: Subject,
    forget: Sequence[Example],
    retain: Sequence[Example] | None = None,
    method: str = "npo_gd",
    *,
    steps: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    progress: bool = True,
    batch_size: int | None = None,
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[int, Subject], None] | None = None,
    **hparams: Any,
) -> Subject:
    """Unlearn ``forget`` from a copy of ``subject``'s model with one of :data:`METHODS`.

    The input model is never modified: it is deep-copied, and the original serves (frozen, under
    ``no_grad``) as the reference ``pi_ref`` for KL, NPO, task-vector and RMU terms; its mode and
    ``requires_grad`` flags are restored on return.

    Args:
        subject: The model to unlearn from.
        forget: Forget examples (prompt + the answer to forget).
        retain: Retain examples (needed by ``*_gd``, ``*_kl``, ``idk``, ``rmu``, ``relearn``, ``palu``,
            ``unierase``).
        method: A name in :data:`unpact.unlearn.METHODS`.
        steps: Optimizer steps (default :data:`TRAIN_DEFAULTS`, or the method's ``train_defaults``).
        lr: AdamW learning rate (default :data:`TRAIN_DEFAULTS`, or the method's ``train_defaults``).
        seed: Seed of the batch order, IDK answers and RMU direction.
        progress: Show a tqdm bar.
        batch_size: Forget (and retain) items per step.
        checkpoints: Step counts below ``steps`` after which ``on_checkpoint`` sees the model so far
            (an unlearning-strength sweep: the learning rate does not depend on ``steps``, so the
            model after ``k`` of ``n`` steps is the model a ``k``-step run gives).
        on_checkpoint: ``on_checkpoint(step, subject)``: the model after ``step`` steps (eval mode, its
            ``config.unpact_unlearn`` recording ``steps=step``). It must save or copy what it needs
            before returning: training goes on in the same weights.
        **hparams: The method's hyperparameters (see :mod:`unpact.unlearn.methods`), plus
            ``warmup_steps`` and ``max_grad_norm``.

    Returns:
        A new :class:`Subject` whose ``model.config.unpact_unlearn`` records the method, its
        arguments and the parent's weights hash.

    Raises:
        UnknownNameError: For an unknown method.
        InputError: For an unknown hyperparameter, a missing retain set, an empty forget set, a
            non-positive ``steps``, ``lr`` or ``batch_size``, checkpoints not in ``1..steps - 1`` or
            given to a method that changes the weights after training (``task_vector``), or a loss that
            becomes NaN/inf.
    """
    require_gradients(subject.model, "unlearning")
    from tqdm.auto import tqdm

    m = get_method(method)
    forget = list(forget)
    retain = list(retain) if retain is not None else []
    if not forget:
        raise InputError("the forget set is empty; pass the examples to unlearn")
    if m.uses_retain and not retain:
        raise InputError(
            f"method {method!r} needs a retain set",
            source="retain",
            fix="pass retain examples (--retain on the command line)",
        )
    train = {**TRAIN_DEFAULTS, **m.train_defaults}
    for k in list(hparams):
        if k in ("warmup_steps", "max_grad_norm"):
            train[k] = hparams.pop(k)
    unknown = set(hparams) - set(m.defaults)
    if unknown:
        takes = ", ".join(sorted(m.defaults) + ["warmup_steps", "max_grad_norm"])
        raise InputError(
            f"unknown hyperparameters {sorted(unknown)} for {method!r}", source="hparams", fix=f"it takes {takes}"
        )
    for k, v in [*hparams.items(), *((k, train[k]) for k in ("warmup_steps", "max_grad_norm"))]:
        default = m.defaults.get(k, TRAIN_DEFAULTS.get(k))
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            raise InputError(
                f"hyperparameter {k} of {method!r} must be a number, got {type(v).__name__} {v!r}",
                source="hparams",
                fix=f"e.g. {k}={default}",
            )
    hp = {**m.defaults, **hparams, "seed": seed}
    steps = check_positive("steps", steps if steps is not None else train["steps"], where="unlearn")
    batch_size = check_positive(
        "batch_size", batch_size if batch_size is not None else train["batch_size"], where="unlearn"
    )
    lr = float(lr if lr is not None else train["lr"])
    if not lr > 0:
        raise InputError(f"lr must be > 0, got {lr}", source="unlearn")

    marks = _check_checkpoints(checkpoints, steps, method, post=m.post is not None)
    rng = random.Random(seed)
    dev = subject.device
    parent_hash = subject.weights_hash()
    record: dict[str, Any] = {
        "method": method,
        "hparams": {k: v for k, v in hp.items() if k != "seed"},
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "warmup_steps": train["warmup_steps"],
        "max_grad_norm": train["max_grad_norm"],
        "n_forget": len(forget),
        "n_retain": len(retain),
        "parent": subject.name,
        "parent_weights_hash": parent_hash,
    }
    ref = subject.model
    model = copy.deepcopy(ref)
    with frozen(ref), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        for p in model.parameters():
            p.requires_grad_(True)
        ctx = LossContext(model=model, ref=ref, hparams=hp, subject=subject, tokenizer=subject.tokenizer)
        ctx.state.update(forget=forget, retain=retain)
        if m.prepare is not None:
            m.prepare(ctx)
            record["hparams"] = {k: v for k, v in hp.items() if k != "seed"}  # as used (prepare may clamp)
        tok = ctx.tokenizer
        if m.forget_data is not None:
            forget_targets = list(m.forget_data(ctx, forget, rng))
        elif m.forget_answers == "idk":  # a new answer: its old sensitive spans no longer apply
            forget_targets = [
                dataclasses.replace(e, answer=rng.choice(IDK_ANSWERS), meta=without_sensitive(e.meta)) for e in forget
            ]
        else:
            forget_targets = forget
        params = m.trainable(ctx) if m.trainable else list(model.parameters())
        if m.trainable:
            keep = {id(p) for p in params}
            for p in model.parameters():
                p.requires_grad_(id(p) in keep)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        warm = int(train["warmup_steps"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warm)))
        f_iter = _cycle(forget_targets, batch_size, rng)
        r_iter = _cycle(retain, batch_size, rng) if (retain and m.uses_retain) else None
        bar = tqdm(range(steps), desc=f"unlearn {method}", disable=not progress, leave=False)
        losses: list[float] = []
        for _ in bar:
            fb = _tok_batch(subject, next(f_iter), dev, tok, sensitive=m.uses_sensitive_spans)
            rb = _tok_batch(subject, next(r_iter), dev, tok) if r_iter is not None else None
            loss = m.loss(ctx, fb, rb)
            if not torch.isfinite(loss):
                raise InputError(
                    f"the loss became {float(loss)} at step {len(losses) + 1} of {steps}",
                    source=f"unlearn {method}",
                    fix=f"lower lr (now {lr}) or max_grad_norm",
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if train["max_grad_norm"]:
                torch.nn.utils.clip_grad_norm_(params, float(train["max_grad_norm"]))
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if progress:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if len(losses) in marks and on_checkpoint is not None:
                model.eval()
                extra = ctx.state.get("record", {})
                model.config.unpact_unlearn = {**record, **extra, "steps": len(losses), "final_loss": losses[-1]}  # type: ignore[union-attr]
                name = f"{subject.name}+{method}@{len(losses)}"
                on_checkpoint(len(losses), load_model(model, tok, name=name, prompt_format=subject.prompt_format))
                model.train()
        if m.post is not None:
            m.post(ctx)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    record.update(ctx.state.get("record", {}))
    record["final_loss"] = losses[-1]
    model.config.unpact_unlearn = record  # type: ignore[union-attr]
    logger.info("unlearned %s with %s: %s", subject.name, method, record)
    new = load_model(model, tok, name=f"{subject.name}+{method}", prompt_format=subject.prompt_format)
    # Cached unless a parent tensor was swapped or edited in place (which bumps its version counter).
    if subject.weights_hash() != parent_hash:  # pragma: no cover - a bug, not user input
        raise RuntimeError("the reference model changed during unlearning; please report this bug")
    return new
