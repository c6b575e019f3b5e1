"""The relearning attack: a few fine-tuning steps on a copy, and what comes back.

After unlearning, a handful of optimizer steps on *related* facts often brings the *forgotten* ones
back (Deeb & Roger 2024, arXiv 2410.08827; Łucki et al. 2024). The test: split the forget facts into two
halves disjoint by subject (:func:`split_halves`), fine-tune a copy of the model on half A only and
measure half B, never trained on, after each step of a schedule (:func:`relearn`). If B comes back, it
was still in the weights. The control is the retain-only model (it never saw the forget facts)
fine-tuned identically: whatever it also "recovers" is learning, not recovery. Train sets
(:data:`TRAIN_SETS`): ``forget_a`` (the attack), ``retain`` and ``unrelated`` (plain text, no
names: :data:`UNRELATED_TEXT`; both check that *any* fine-tuning does not already bring B back), and
``forget_b`` (B itself: how fast B can be learned at all; the upper reference).

:func:`in_context` asks the same question without a weight change, after a few solved examples.

Training follows the unlearning loop (:mod:`unpact.unlearn._loop`, see :func:`relearn`), plus the end
token after each answer. The default ``lr`` (:data:`DEFAULT_LR`) was chosen on the micro toy world's
retain-only model alone, never on an unlearned model: of {1e-4, 3e-4, 1e-3, 3e-3}, training on half A
left the control at 0% on half B at every rate, and 1e-3 is the smallest at which training on half B
itself takes the control to >= 80% on B by step 16 (half the default schedule). Larger models usually
need a far smaller rate (1e-5 or below).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import numbers
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unpact._devices import require_gradients
from unpact._result import SavedResult, fields_dict
from unpact.data import Example, fill_id
from unpact.errors import InputError, UnknownNameError, check_count, check_items, check_positive
from unpact.evaluate import evaluate
from unpact.models import Subject
from unpact.prompts import QUESTION_FIELD
from unpact.provenance import Provenance
from unpact.unlearn._loop import _cycle, _tok_batch
from unpact.unlearn.methods import TokBatch, nll

logger = logging.getLogger(__name__)

__all__ = ["TRAIN_SETS", "DEFAULT_SCHEDULE", "DEFAULT_LR", "UNRELATED_TEXT", "SHOT_SEPARATOR", "split_halves"]
__all__ += ["relearn_sets", "RelearnCurve", "relearn", "in_context"]

#: The train sets a relearning curve can be made with (a label; the caller passes the matching data).
TRAIN_SETS: tuple[str, ...] = ("forget_a", "retain", "unrelated", "forget_b")

#: Optimizer steps after which half B is measured (0: before any update).
DEFAULT_SCHEDULE: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32)

#: The default AdamW learning rate of :func:`relearn` (how it was chosen: the module docstring); ten times the
#: unlearning default (:data:`unpact.unlearn.TRAIN_DEFAULTS`), which in 32 steps cannot even teach half B itself.
DEFAULT_LR: float = 1e-3

#: Text between the solved examples (and before the question) in :func:`in_context`.
SHOT_SEPARATOR = "\n"

#: Plain sentences about nobody (weather, cooking, tools...): the ``unrelated`` train set.
UNRELATED_TEXT: tuple[str, ...] = (
    "Rain falls when water droplets in a cloud grow too heavy to stay in the air.",
    "A cold front often brings a sudden drop in temperature and gusty winds.",
    "Fog forms when moist air cools near the ground on a calm night.",
    "Thunder is the sound of air expanding quickly around a lightning bolt.",
    "Snow is more likely when the air near the ground stays below freezing.",
    "A barometer measures air pressure, which tends to fall before a storm.",
    "Dew collects on grass when the air cools overnight and can hold less water.",
    "Strong sunlight in summer can make the afternoon the hottest part of the day.",
    "To make bread, mix flour, water, salt and yeast, then let the dough rise.",
    "Onions soften and turn sweet when they are cooked slowly in a little oil.",
    "Rice is usually cooked in about twice its volume of water.",
    "A pinch of salt brings out the flavour of most soups and sauces.",
    "Boiled eggs are easier to peel after they are cooled in cold water.",
    "Vegetables keep more of their colour when they are steamed instead of boiled.",
    "A sharp knife is safer than a dull one because it slips less.",
    "Dough should rest before it is rolled out so that it does not shrink back.",
    "Tomatoes, garlic and olive oil make a simple sauce for pasta.",
    "Soup often tastes better on the second day, after the flavours have mixed.",
    "A hammer drives nails, and its claw pulls them back out.",
    "A level shows whether a shelf is straight by the bubble in its tube.",
    "Screws hold wood together more firmly than nails do.",
    "A saw cuts on the push stroke or the pull stroke, depending on its teeth.",
    "Sandpaper with a higher number has finer grit and leaves a smoother surface.",
    "A wrench turns nuts and bolts, and an adjustable one fits many sizes.",
    "Measure twice and cut once is an old rule in woodworking.",
    "A drill needs a smaller bit for a pilot hole than for the screw itself.",
    "Tomato plants need plenty of sun and regular watering to grow well.",
    "Leaves change colour in autumn as the green pigment breaks down.",
    "Most houseplants grow best in bright light that is not direct sun.",
    "Bees carry pollen from flower to flower while they collect nectar.",
    "Compost turns kitchen scraps and garden waste into rich soil.",
    "A river carries sand and stones downstream and drops them where it slows.",
    "The moon takes about a month to go through all of its phases.",
    "Water boils at a lower temperature high in the mountains.",
    "Ice floats because it is less dense than liquid water.",
    "A bicycle chain runs more smoothly when it is cleaned and oiled.",
    "Trains on long routes often run through the night.",
    "A map uses a scale to show how far apart places really are.",
    "Wool keeps its warmth even when it becomes a little damp.",
    "A candle burns longer in a place without drafts.",
)


# ----- data --------------------------------------------------------------------------------------
def split_halves(items: Sequence[Example], seed: int = 0) -> tuple[list[Example], list[Example]]:
    """Split items into two halves that share no subject.

    Items are grouped by :attr:`Example.subject` (an item without one is its own group, keyed by its id);
    the groups are shuffled with ``seed``, then placed largest first into the half with fewer items,
    so the halves are as equal in items as the groups allow. Each half keeps the input order.

    Args:
        items: The examples (usually the forget set).
        seed: Seed of the shuffle; the same items and seed give the same halves.

    Returns:
        ``(half_a, half_b)``: two non-empty lists with no subject in both.

    Raises:
        InputError: Items that are not examples, or fewer than two groups (nothing to split).
    """
    items = check_items("items", items, Example, where="split_halves")
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(items):
        groups.setdefault(f"subject:{e.subject}" if e.subject is not None else f"id:{e.id}", []).append(i)
    if len(groups) < 2:
        what = "no items" if not items else f"{len(items)} items about one subject ({next(iter(groups))})"
        raise InputError(
            f"cannot split {what} into two halves that share no subject",
            source="split_halves",
            fix="pass items about at least two subjects (Example.subject), or items without a subject",
        )
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    keys.sort(key=lambda k: -len(groups[k]))  # stable: equal sizes keep the seeded order
    halves: tuple[list[int], list[int]] = ([], [])
    for k in keys:
        a, b = halves
        target = a if (len(a), 0) <= (len(b), 1) else b
        target.extend(groups[k])
    return [items[i] for i in sorted(halves[0])], [items[i] for i in sorted(halves[1])]


def relearn_sets(
    forget: Sequence[Example], retain: Sequence[Example], *, seed: int = 0
) -> tuple[dict[str, list[Example] | list[str]], list[Example]]:
    """The four train sets of :data:`TRAIN_SETS` and the evaluation half.

    Args:
        forget: The forget examples, split by :func:`split_halves` into A and B.
        retain: Retain examples; a seeded sample as large as half A is the ``retain`` train set.
        seed: Seed of the split and of the retain sample.

    Returns:
        ``(train_sets, half_b)``: train set name -> examples (``unrelated``: :data:`UNRELATED_TEXT`),
        and half B, the items every curve measures.

    Raises:
        InputError: Too few subjects in ``forget`` to split, or no retain examples.
    """
    half_a, half_b = split_halves(forget, seed)
    retain = check_items("retain", retain, Example, where="relearn_sets")
    if not retain:
        raise InputError("no retain examples given", source="relearn_sets", fix="pass the retain set")
    rng = random.Random(seed)
    sample = sorted(rng.sample(range(len(retain)), min(len(retain), len(half_a))))
    sets: dict[str, list[Example] | list[str]] = {
        "forget_a": half_a,
        "retain": [retain[i] for i in sample],
        "unrelated": list(UNRELATED_TEXT),
        "forget_b": half_b,
    }
    return sets, half_b


# ----- the result --------------------------------------------------------------------------------
@dataclass
class RelearnCurve(SavedResult):
    """Half B measured along a fine-tuning run (saved by :class:`~unpact._result.SavedResult`).

    Attributes:
        train_set: Which train set the copy was fine-tuned on (one of :data:`TRAIN_SETS`).
        steps: ``n_steps`` optimizer step counts at which the items were measured (0: before training).
        eval_ids: ``n_eval`` ids of the measured items, in input order.
        correct: ``(n_steps, n_eval)`` bool: the greedy generation lenient-matches the gold answer
            (:func:`unpact.metrics.lenient_match`, as :func:`unpact.evaluate.evaluate` scores).
        logprob: ``(n_steps, n_eval)`` float64 mean log-probability of the gold answer tokens (teacher-forced).
        lr: AdamW learning rate.
        seed: Seed of the batch order and of dropout.
        batch_size: Train items per step.
        n_train: Size of the train set.
        provenance: The input model, its weights hash and the arguments.
    """

    train_set: str
    steps: list[int]
    eval_ids: list[str]
    correct: np.ndarray
    logprob: np.ndarray
    lr: float
    seed: int
    batch_size: int
    n_train: int
    provenance: Provenance | None = None

    def accuracy(self) -> np.ndarray:
        """``(n_steps,)`` share of items answered right at each measured step."""
        return self.correct.astype(np.float64).mean(axis=1)

    def mean_logprob(self) -> np.ndarray:
        """``(n_steps,)`` mean over items of the mean gold-answer token log-prob at each measured step."""
        return self.logprob.mean(axis=1)

    def first_step_reaching(self, threshold: float) -> int | None:
        """The first measured step whose accuracy is at least ``threshold``, or ``None`` if none reaches it."""
        for step, acc in zip(self.steps, self.accuracy()):
            if acc >= threshold:
                return int(step)
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: every field (arrays as lists) and the accuracy per step."""
        return {**fields_dict(self), "accuracy": self.accuracy().tolist()}


# ----- checks ------------------------------------------------------------------------------------
def _check_schedule(steps: Sequence[int]) -> list[int]:
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
        raise InputError(f"steps must be a non-empty list of step counts, got {steps!r}", source="relearn")
    out = [check_count(f"steps[{i}]", s, where="relearn") for i, s in enumerate(steps)]
    if any(b <= a for a, b in zip(out, out[1:])):
        raise InputError(f"steps must be strictly increasing, got {list(steps)}", source="relearn", fix="sort them")
    return out


def _check_train(train: Sequence[Example] | Sequence[str]) -> list[Example | str]:
    if isinstance(train, (str, bytes, Example)) or not isinstance(train, Sequence):
        raise InputError(f"train must be a list, got a single {type(train).__name__}", source="relearn", fix="wrap it")
    if not train:
        raise InputError("the train set is empty", source="relearn", fix="pass the examples or texts to train on")
    items: list[Example | str] = [*train]
    if all(isinstance(t, Example) for t in items):
        return items
    if all(isinstance(t, str) for t in items):
        for i, t in enumerate(items):
            if not str(t).strip():
                raise InputError(f"train[{i}] is an empty text", source="relearn", fix="drop it")
        return items
    kinds = sorted({type(t).__name__ for t in train})
    raise InputError(f"train mixes {', '.join(kinds)}", source="relearn", fix="pass only Examples or only texts")


def _check_lr(lr: float | None) -> float:
    value = DEFAULT_LR if lr is None else lr
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < math.inf):
        raise InputError(f"lr must be a positive number, got {lr!r}", source="relearn", fix=f"e.g. lr={DEFAULT_LR}")
    return float(value)


# ----- training ----------------------------------------------------------------------------------
def _text_batch(subject: Subject, texts: Sequence[str], device: torch.device) -> TokBatch:
    """Raw texts right-padded into a :class:`TokBatch` whose loss covers every token after the first."""
    tok, limit = subject.tokenizer, subject.n_ctx
    rows = [list(tok(t)["input_ids"])[:limit] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), fill_id(tok), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return TokBatch(ids.to(device), mask.to(device), mask[:, 1:].bool().to(device))


def _with_end(b: TokBatch, end: int, limit: int | None) -> TokBatch:
    """``b`` with token ``end`` after every row, trained on like an answer token (unchanged at the context limit)."""
    n, width = b.input_ids.shape
    if limit is not None and width >= limit:
        return b
    lengths = b.attention_mask.sum(-1)
    ids = torch.cat([b.input_ids, b.input_ids[:, :1]], 1)
    mask = torch.cat([b.attention_mask, torch.zeros_like(b.attention_mask[:, :1])], 1)
    ans = torch.cat([b.answer_mask, torch.zeros_like(b.answer_mask[:, :1])], 1)
    rows = torch.arange(n, device=ids.device)
    ids[rows, lengths], mask[rows, lengths], ans[rows, lengths - 1] = end, 1, True
    return TokBatch(ids, mask, ans)


def _batch(subject: Subject, items: Sequence[Example | str], device: torch.device) -> TokBatch:
    """Examples: answer tokens and the end token (what decoding stops at); texts: all tokens."""
    if isinstance(items[0], Example):
        tb = _tok_batch(subject, [e for e in items if isinstance(e, Example)], device)
        eos = getattr(subject.tokenizer, "eos_token_id", None)
        return tb if eos is None else _with_end(tb, int(eos), subject.n_ctx)
    return _text_batch(subject, [t for t in items if isinstance(t, str)], device)


def _measure(sub: Subject, items: list[Example], max_new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    recs = evaluate(sub, items, max_new_tokens=max_new_tokens).records
    return np.array([r.lenient for r in recs], dtype=bool), np.array([r.answer_logprob for r in recs], np.float64)


def relearn(
    subject: Subject,
    train: Sequence[Example] | Sequence[str],
    eval_items: Sequence[Example],
    *,
    train_set: str,
    steps: Sequence[int] = DEFAULT_SCHEDULE,
    lr: float | None = None,
    batch_size: int = 8,
    seed: int = 0,
    max_new_tokens: int = 16,
    progress: bool = False,
) -> RelearnCurve:
    """Fine-tune a copy of ``subject``'s model on ``train`` and measure ``eval_items`` along the way.

    The caller's model is never changed (weights, mode, ``requires_grad`` flags): a deep copy is trained
    (so the model's memory is needed twice, plus AdamW's two moments). At each step count in ``steps``
    (0: before any update) the copy answers every eval item once, with :func:`unpact.evaluate.evaluate`
    (greedy generation scored by lenient match, and the teacher-forced gold-answer log-prob). Training:
    AdamW (no weight decay, no warm-up), gradient norm clipped at 1, batches cycling over ``train`` in a
    seeded order, dropout (if the model has any) from a forked RNG seeded with ``seed``.

    Args:
        subject: The model to attack (an unlearned model, or the retain-only control).
        train: Examples (encoded in the model's prompt format as the unlearning loop encodes them; loss on
            the answer tokens and the tokenizer's end token after them, which decoding stops at) or raw
            texts (loss on all their tokens).
        eval_items: The items measured at each step (half B).
        train_set: Which train set ``train`` is, one of :data:`TRAIN_SETS` (recorded in the result).
        steps: Strictly increasing step counts to measure at; training runs to the last one.
        lr: AdamW learning rate; default :data:`DEFAULT_LR`.
        batch_size: Train items per step (at most the train set's size is used at once).
        seed: Seed of the batch order and of dropout; the same seed gives the same numbers.
        max_new_tokens: Generation length when measuring.
        progress: Show a tqdm bar over the steps.

    Returns:
        The :class:`RelearnCurve`: ``correct`` and ``logprob`` of shape ``(len(steps), len(eval_items))``.

    Raises:
        UnknownNameError: ``train_set`` is not in :data:`TRAIN_SETS`.
        InputError: An empty or mixed train set, no eval items, a bad schedule, ``lr``, ``batch_size`` or
            ``max_new_tokens``, an item longer than the context, or a loss that becomes NaN/inf.
    """
    require_gradients(subject.model, "relearning")
    from tqdm.auto import tqdm

    if train_set not in TRAIN_SETS:
        raise UnknownNameError(
            f"unknown relearning train set {train_set!r}",
            source="train_set",
            fix=f"choose from {', '.join(TRAIN_SETS)}",
        )
    items = _check_train(train)
    evals = check_items("eval_items", eval_items, Example, where="relearn")
    if not evals:
        raise InputError("no eval items given", source="relearn", fix="pass the items to measure (half B)")
    schedule = _check_schedule(steps)
    lr = _check_lr(lr)
    batch_size = check_positive("batch_size", batch_size, where="relearn")
    max_new_tokens = check_positive("max_new_tokens", max_new_tokens, where="relearn")
    if subject.tokenizer is None:
        raise InputError("the subject has no tokenizer", source="relearn", fix="load the model with its tokenizer")
    if train_set != "forget_b" and isinstance(items[0], Example):
        shared = {e.id for e in items if isinstance(e, Example)} & {e.id for e in evals}
        if shared:
            logger.warning("relearn %s: %d train items are also eval items: %s", train_set, len(shared), min(shared))
    args = dict(steps=schedule, lr=lr, batch_size=batch_size, seed=seed, max_new_tokens=max_new_tokens)
    prov = Provenance.of(subject, "relearn", train_set=train_set, n_train=len(items), n_eval=len(evals), **args)

    t0 = time.perf_counter()
    model = copy.deepcopy(subject.model)
    sub = dataclasses.replace(subject, model=model, bridge=None, name=f"{subject.name}+relearn", _hash_cache=None)
    dev = sub.device
    correct = np.zeros((len(schedule), len(evals)), dtype=bool)
    logprob = np.zeros((len(schedule), len(evals)), dtype=np.float64)
    rng = random.Random(seed)
    batches = _cycle(items, batch_size, rng)
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.train()
        params = list(model.parameters())
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        bar = tqdm(total=schedule[-1], desc=f"relearn {train_set}", disable=not progress, leave=False)
        done = 0
        for row, target in enumerate(schedule):
            while done < target:
                loss = nll(model, _batch(sub, next(batches), dev))
                if not torch.isfinite(loss):
                    raise InputError(f"loss {float(loss)} at step {done + 1}", source="relearn", fix=f"lower lr ({lr})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                done += 1
                bar.update(1)
                if progress:
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            correct[row], logprob[row] = _measure(sub, evals, max_new_tokens)
            logger.debug("relearn %s step %d: accuracy %.3f", train_set, target, correct[row].mean())
        bar.close()
    acc, took = np.round(correct.mean(axis=1), 3).tolist(), time.perf_counter() - t0
    logger.info("relearn %s on %s: accuracy %s at steps %s (%.1f s)", train_set, subject.name, acc, schedule, took)
    ids = [e.id for e in evals]
    return RelearnCurve(train_set, schedule, ids, correct, logprob, lr, int(seed), batch_size, len(items), prov)


# ----- in context --------------------------------------------------------------------------------
def in_context(
    subject: Subject,
    shots: Sequence[Example],
    eval_items: Sequence[Example],
    *,
    n_shots: int = 4,
    seed: int = 0,
    max_new_tokens: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Ask each eval item after ``n_shots`` solved examples, without changing any weight.

    Each item gets its own prompt template: ``n_shots`` examples drawn from ``shots`` (seeded; never the
    item itself, by id), each written as its question in the item's template followed by its answer
    (the model's own separator), joined and followed by :data:`SHOT_SEPARATOR`, then the item's template.
    A chat format keeps the whole text, examples included, in the user turn. The items are then scored by
    :func:`unpact.evaluate.evaluate`; with ``n_shots=0`` the items are asked unchanged.

    Args:
        subject: The model.
        shots: The solved examples to draw from (typically half A: facts disjoint from the items).
        eval_items: The items to ask (half B).
        n_shots: Solved examples before each item.
        seed: Seed of the draw.
        max_new_tokens: Generation length.

    Returns:
        ``(correct, logprob)``: ``(n_eval,)`` bool lenient match and ``(n_eval,)`` float64 mean gold-answer
        token log-prob.

    Raises:
        InputError: No eval items, a negative ``n_shots``, fewer than ``n_shots`` shots to draw from, a shot
            holding the literal text ``{question}``, or a prompt longer than the model's context.
    """
    evals = check_items("eval_items", eval_items, Example, where="in_context")
    pool = check_items("shots", shots, Example, where="in_context")
    n_shots = check_count("n_shots", n_shots, where="in_context")
    if not evals:
        raise InputError("no eval items given", source="in_context", fix="pass the items to ask (half B)")
    if n_shots:
        for i, s in enumerate(pool):
            if QUESTION_FIELD in s.prompt or QUESTION_FIELD in s.answer:
                raise InputError(
                    f"shot {s.id!r} holds the literal text {QUESTION_FIELD}, which marks the question in a template",
                    source=f"in_context shots[{i}]",
                    fix=f"remove {QUESTION_FIELD} from its text or leave the shot out",
                )
        rng = random.Random(seed)
        fmt = subject.prompt_format
        asked = []
        for e in evals:
            others = [s for s in pool if s.id != e.id]
            if len(others) < n_shots:
                raise InputError(
                    f"item {e.id!r} needs {n_shots} shots but only {len(others)} other examples are given",
                    source="in_context",
                    fix="pass more shots or lower n_shots",
                )
            item_fmt = fmt.for_template(e.template)
            questions = [(item_fmt.fill(s.prompt)[0], s.answer) for s in rng.sample(others, n_shots)]
            texts = [q + fmt.separator(q, answer) + answer for q, answer in questions]
            prefix = SHOT_SEPARATOR.join(texts) + SHOT_SEPARATOR
            asked.append(dataclasses.replace(e, template=prefix + item_fmt.template))
            try:
                subject.encode(asked[-1])
            except InputError as exc:
                msg = f"with {n_shots} shots, {exc.message}"
                raise InputError(msg, source="in_context", fix="lower n_shots") from None
        evals = asked
    return _measure(subject, evals, max_new_tokens)
