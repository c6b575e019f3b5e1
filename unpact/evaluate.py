"""Evaluate a model on question/answer examples: generation, teacher-forced scores, accuracy.

* :func:`generate`: batched generation from the prompts (left-padded), greedy or sampled.
* :func:`answer_logprob`: teacher-forced log-probability of the gold answer tokens.
* :func:`first_token_rank`: rank of the gold answer's first token in the next-token distribution.
* :func:`evaluate`: all of the above per item -> :class:`EvalResult` (exact / lenient accuracy,
  ROUGE-L recall, mean answer log-prob), with ``save``/``load`` and provenance.

Lenient matching (see :mod:`unpact.metrics`) counts an answer that is present but followed by more
text as right: unlearned small models often stop emitting their end token.

None of these functions changes the model's weights, mode or ``requires_grad`` flags.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from unpact._result import SavedResult
from unpact.data import Example, encode_prompt, fill_id
from unpact.errors import InputError, UnknownNameError, check_items, check_positive
from unpact.forward import decode, prompt_pass
from unpact.metrics import exact_match, lenient_match, rouge_l_recall, wilson_interval
from unpact.models import Subject
from unpact.provenance import Provenance

logger = logging.getLogger(__name__)

__all__ = ["generate", "answer_logprob", "first_token_rank", "evaluate", "EvalRecord", "EvalResult"]


def _prompts(items: Sequence[Example | str]) -> list[Example | str]:
    if isinstance(items, (str, Example)):
        raise InputError(
            f"got a single {type(items).__name__} where a list of prompts or examples is expected",
            source="generate",
            fix="wrap it in a list",
        )
    out: list[Example | str] = []
    for i, it in enumerate(items):
        if isinstance(it, (Example, str)):
            out.append(it)
        else:
            raise InputError(
                f"examples_or_prompts[{i}] is {type(it).__name__}; expected Examples or prompt strings",
                source="generate",
            )
    return out


def generate(
    subject: Subject,
    examples_or_prompts: Sequence[Example | str],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    num_samples: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    do_sample: bool | None = None,
) -> list[list[str]]:
    """Generate continuations of each prompt.

    Decoding rule: greedy if ``temperature == 0`` or ``do_sample is False``; otherwise, with the
    default ``do_sample=None``, greedy when ``num_samples == 1`` and sampling at ``temperature``
    when ``num_samples > 1``; ``do_sample=True`` samples even a single answer. Sampling is seeded
    (``seed``, one generator) and does not touch the global RNG state. Examples are encoded as they are
    scored (:func:`unpact.data.encode`); decoding continues from the prompt's KV cache
    (:func:`unpact.forward.decode`). Generation stops at the end token; the
    returned text is the decoded new tokens without special tokens, stripped.

    Args:
        subject: The model.
        examples_or_prompts: Examples (their ``prompt`` is used) or prompt strings.
        max_new_tokens: Tokens to generate at most.
        batch_size: Prompts per forward batch.
        num_samples: Samples per prompt.
        temperature: Sampling temperature.
        seed: Sampling seed.
        do_sample: Force sampling on/off (see above).

    Returns:
        ``[item][sample]`` generated strings (outer length = number of prompts, inner = ``num_samples``).

    Raises:
        InputError: A bad count or temperature, no tokenizer, something else than prompts, or NaN/inf logits.
    """
    check_positive("max_new_tokens", max_new_tokens, where="generate")
    check_positive("batch_size", batch_size, where="generate")
    check_positive("num_samples", num_samples, where="generate")
    if not temperature >= 0:
        raise InputError(f"temperature must be >= 0, got {temperature}", source="generate")
    prompts = _prompts(examples_or_prompts)
    tok = subject.tokenizer
    if tok is None:
        raise InputError("the subject has no tokenizer; load the model with its tokenizer")
    sample = (do_sample if do_sample is not None else num_samples > 1) and temperature > 0
    if not sample and num_samples > 1:
        logger.warning("greedy decoding with num_samples=%d gives identical samples", num_samples)
    gen = torch.Generator().manual_seed(int(seed))
    out: list[list[str]] = []
    for start in range(0, len(prompts), batch_size):
        ids = [_prompt_ids(subject, p) for p in prompts[start : start + batch_size]]
        first = prompt_pass(subject, ids, keep_cache=True, fill=fill_id(tok))
        new = decode(
            subject,
            first,
            max_new_tokens=max_new_tokens,
            sample=sample,
            temperature=temperature,
            num_samples=num_samples,
            generator=gen,
        )
        texts = [tok.decode(row, skip_special_tokens=True).strip() for row in new]
        out += [texts[i : i + num_samples] for i in range(0, len(texts), num_samples)]
    return out


def _prompt_ids(subject: Subject, item: Example | str) -> torch.Tensor:
    """``(n_prompt,)`` ids of a prompt string, or of an example's prompt exactly as it is scored."""
    if isinstance(item, Example):
        return subject.encode(item).prompt_ids
    return encode_prompt(subject.tokenizer, item, fmt=subject.prompt_format)


def _check_examples(examples: Sequence[Example], subject: Subject, batch_size: int) -> list[Example]:
    check_positive("batch_size", batch_size, where="evaluate")
    examples = check_items("examples", examples, Example, where="evaluate")
    if not examples:
        raise InputError("no examples given")
    if subject.tokenizer is None:
        raise InputError("the subject has no tokenizer; load the model with its tokenizer")
    return examples


def _score_and_generate(
    subject: Subject, examples: Sequence[Example], batch_size: int, max_new_tokens: int | None
) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Per example: answer-token log-probs ``(n_answer,)``, first-answer-token ranks ``(n,)`` and, when
    ``max_new_tokens`` is given, the greedy generation, all from one forward pass per batch."""
    examples = _check_examples(examples, subject, batch_size)
    tok = subject.tokenizer
    lps: list[np.ndarray] = []
    ranks: list[int] = []
    gens: list[str] = []
    for start in range(0, len(examples), batch_size):
        encs = [subject.encode(e) for e in examples[start : start + batch_size]]
        first = prompt_pass(
            subject,
            [e.prompt_ids for e in encs],
            [e.answer_ids for e in encs],
            keep_cache=max_new_tokens is not None,
            fill=fill_id(tok),
        )
        lps += [lp.numpy().astype(np.float64) for lp in first.answer_logprobs]
        ranks += first.first_token_rank()
        if max_new_tokens is not None:
            new = decode(subject, first, max_new_tokens=max_new_tokens)
            gens += [tok.decode(row, skip_special_tokens=True).strip() for row in new]
    return lps, np.asarray(ranks, dtype=np.int64), gens


def answer_logprob(
    subject: Subject, examples: Sequence[Example], *, reduce: Literal["mean", "sum"] = "mean", batch_size: int = 32
) -> np.ndarray:
    """Teacher-forced log-probability of each gold answer given its prompt.

    Args:
        subject: The model.
        examples: The examples (prompt + gold answer, encoded with :func:`unpact.data.encode`).
        reduce: ``"mean"`` (per answer token, the unPact ``LP``) or ``"sum"`` (log p of the whole answer).
        batch_size: Examples per forward pass.

    Returns:
        ``(n,)`` float64 array.
    """
    if reduce not in ("mean", "sum"):
        raise InputError(f"reduce must be 'mean' or 'sum', got {reduce!r}", source="answer_logprob")
    lps, _, _ = _score_and_generate(subject, examples, batch_size, None)
    return np.asarray([lp.mean() if reduce == "mean" else lp.sum() for lp in lps], dtype=np.float64)


def first_token_rank(subject: Subject, examples: Sequence[Example], *, batch_size: int = 32) -> np.ndarray:
    """Rank of the gold answer's first token after the prompt (0 = the model's top-1 choice).

    Returns:
        ``(n,)`` int64 array.
    """
    return _score_and_generate(subject, examples, batch_size, None)[1]


@dataclass(frozen=True)
class EvalRecord:
    """Scores of one example.

    Attributes:
        id: The example id.
        generated: The greedy generation.
        exact: Exact match after normalisation.
        lenient: The gold answer is a whole-word prefix of / span in the generation.
        rouge_l: ROUGE-L recall against the gold answer.
        answer_logprob: Mean teacher-forced log-prob of the gold answer tokens.
        first_token_top1: The gold answer's first token is the model's top-1 next token.
    """

    id: str
    generated: str
    exact: bool
    lenient: bool
    rouge_l: float
    answer_logprob: float
    first_token_top1: bool


@dataclass
class EvalResult(SavedResult):
    """Per-item evaluation of one model on one set of examples (``save`` / ``load``: one ``.npz`` bundle).

    Attributes:
        records: One :class:`EvalRecord` per example, in input order.
        provenance: Model, weights hash and arguments.
        meta: Free metadata (JSON-serialisable).
    """

    records: list[EvalRecord]
    provenance: Provenance | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def accuracy(self, kind: Literal["exact", "lenient", "first_token"] = "lenient") -> float:
        """Share of items answered right (``"exact"``, ``"lenient"`` or first-token top-1)."""
        attr = {"exact": "exact", "lenient": "lenient", "first_token": "first_token_top1"}.get(kind)
        if attr is None:
            raise UnknownNameError(
                f"unknown accuracy kind {kind!r}", source="kind", fix="choose 'exact', 'lenient' or 'first_token'"
            )
        if not self.records:
            return float("nan")
        return float(np.mean([getattr(r, attr) for r in self.records]))

    def interval(self, kind: Literal["exact", "lenient", "first_token"] = "lenient") -> tuple[float, float]:
        """95% Wilson interval of :meth:`accuracy`."""
        k = round(self.accuracy(kind) * len(self.records)) if self.records else 0
        return wilson_interval(k, len(self.records))

    @property
    def mean_logprob(self) -> float:
        """Mean over items of the mean answer-token log-prob."""
        return float(np.mean([r.answer_logprob for r in self.records])) if self.records else float("nan")

    @property
    def mean_rouge_l(self) -> float:
        """Mean ROUGE-L recall."""
        return float(np.mean([r.rouge_l for r in self.records])) if self.records else float("nan")

    def summary(self) -> dict[str, float]:
        """Aggregate numbers: n, exact, lenient, first-token accuracy, ROUGE-L, mean log-prob."""
        return {
            "n": len(self.records),
            "exact": self.accuracy("exact"),
            "lenient": self.accuracy("lenient"),
            "first_token": self.accuracy("first_token"),
            "rouge_l": self.mean_rouge_l,
            "answer_logprob": self.mean_logprob,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: summary, records, provenance."""
        return {
            "summary": self.summary(),
            "records": [asdict(r) for r in self.records],
            "provenance": self.provenance.to_dict() if self.provenance else None,
            "meta": dict(self.meta),
        }


def evaluate(
    subject: Subject, examples: Sequence[Example], *, max_new_tokens: int = 16, batch_size: int = 32
) -> EvalResult:
    """Greedy-generate and score every example.

    Args:
        subject: The model.
        examples: Examples with gold answers.
        max_new_tokens: Generation length.
        batch_size: Examples per batch.

    Returns:
        The :class:`EvalResult`.
    """
    check_positive("max_new_tokens", max_new_tokens, where="evaluate")
    check_positive("batch_size", batch_size, where="evaluate")
    lps, ranks, gens = _score_and_generate(subject, examples, batch_size, max_new_tokens)
    records = [
        EvalRecord(
            id=e.id,
            generated=g,
            exact=exact_match(g, e.answer),
            lenient=lenient_match(g, e.answer),
            rouge_l=rouge_l_recall(g, e.answer),
            answer_logprob=float(lp.mean()),
            first_token_top1=bool(r == 0),
        )
        for e, g, lp, r in zip(examples, gens, lps, ranks)
    ]
    prov = Provenance.of(subject, "evaluate", max_new_tokens=max_new_tokens, n=len(examples))
    return EvalResult(records, prov)


def hooked_scores(
    subject: Subject,
    examples: Sequence[Example],
    hooks: Any,
    *,
    max_new_tokens: int = 16,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy answers and gold log-probabilities of ``examples`` under hooks (:func:`unpact.hooks.hooked`).

    The interventions of the representation-level attacks (a direction ablated, heads amplified) run
    through here, so each is scored exactly as :func:`evaluate` scores the model unchanged.

    Args:
        subject: The model (the hooks are removed afterwards).
        examples: Examples with gold answers.
        hooks: ``{site: fn}`` or ``[(site, fn), ...]``; empty for the model as it is.
        max_new_tokens: Generation length.
        batch_size: Examples per batch.

    Returns:
        ``(correct, logprob)``: ``(n,)`` lenient matches and ``(n,)`` mean gold-answer log-probabilities.
    """
    from unpact.hooks import hooked

    with hooked(subject, hooks):
        recs = evaluate(subject, examples, max_new_tokens=max_new_tokens, batch_size=batch_size).records
    return (
        np.array([r.lenient for r in recs], dtype=bool),
        np.array([r.answer_logprob for r in recs], dtype=np.float64),
    )
