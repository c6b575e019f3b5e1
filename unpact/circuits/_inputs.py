"""Clean and corrupt inputs for EAP, and the metric read off the logits.

Corruptions (``EdgeScores.corruption``):

* ``"tokens"`` (default when donors are given): the example's subject string (``Example.subject``)
  is replaced in the prompt by the subject of another example (a *donor*) whose replacement keeps
  the prompt's token length; donors asking about the same attribute are tried first;
* ``"prompt"``: a corrupt prompt supplied by the user (same token length as the clean prompt);
* ``"mean"``: mean ablation: each node's corrupt output is its clean output averaged over all
  positions of the sequence (used when no corrupt prompt and no donors are given).

In every case the answer tokens are the clean answer's, teacher-forced.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from unpact.data import Encoded, Example
from unpact.errors import InputError, UnknownNameError
from unpact.forward import gather_logprobs
from unpact.models import Subject

logger = logging.getLogger(__name__)

Metric = Literal["logprob", "logit_diff"]
Corruption = Literal["tokens", "prompt", "mean"]


@dataclass(frozen=True)
class Prepared:
    """Token ids of one clean/corrupt pair.

    Attributes:
        input_ids: ``(seq,)`` clean prompt + answer ids.
        corrupt_ids: ``(seq,)`` corrupt prompt + the same answer ids (equal to ``input_ids``
            under mean ablation).
        answer_span: ``(start, stop)`` of the answer in both.
        corruption: Which corruption was used.
        corrupt_prompt: The corrupt prompt text, if any.
        key_positions: Indices of the subject / key tokens in the prompt.
        corrupt_token: First token of the corrupt answer (``logit_diff`` metric), else -1.
        donor: Id of the donor example, if any.
    """

    input_ids: torch.Tensor
    corrupt_ids: torch.Tensor
    answer_span: tuple[int, int]
    corruption: Corruption
    corrupt_prompt: str | None
    key_positions: np.ndarray
    corrupt_token: int = -1
    donor: str | None = None


def _prompt_ids(subject: Subject, example: Example) -> torch.Tensor:
    return subject.encode(example).prompt_ids


def _span_positions(enc: Encoded, prompt: str, needles: Sequence[str]) -> np.ndarray:
    """Prompt token indices of every occurrence of the ``needles`` in the question ``prompt``."""
    spans = []
    for needle in needles:
        if not needle:
            continue
        start = prompt.find(needle)
        while start >= 0:
            spans.append((start, start + len(needle)))
            start = prompt.find(needle, start + 1)
    return np.asarray(enc.positions_of(spans, prompt), dtype=np.int64)


def _first_answer_token(subject: Subject, example: Example, prompt: str, answer: str) -> int:
    ex = dataclasses.replace(example, prompt=prompt, answer=answer)  # the item's own template stays
    return int(subject.encode(ex).answer_ids[0])


def prepare(
    subject: Subject,
    example: Example,
    *,
    corrupt: str | Example | Sequence[Example] | Literal["mean"] | None,
    metric: Metric,
    corrupt_answer: str | None,
    seed: int,
) -> Prepared:
    """Encode the clean example and build its corrupt counterpart (see the module docstring).

    Raises:
        InputError: Corrupt prompt of another token length, no donor that fits, or a
            ``logit_diff`` metric without a corrupt answer.
    """
    if subject.tokenizer is None:
        raise InputError("the subject has no tokenizer; load the model with one")
    enc = subject.encode(example)
    ids = enc.input_ids
    n_prompt = enc.answer_span[0]
    answer_ids = enc.answer_ids
    donor: Example | None = None
    corrupt_prompt: str | None = None
    if isinstance(corrupt, str) and corrupt == "mean":
        kind: Corruption = "mean"
    elif isinstance(corrupt, str):
        kind, corrupt_prompt = "prompt", corrupt
    elif isinstance(corrupt, Example):
        kind, donor = "tokens", corrupt
        corrupt_prompt = _swap(subject, example, corrupt, n_prompt)
        if corrupt_prompt is None:
            raise InputError(
                f"donor {corrupt.id!r}: swapping subject {example.subject!r} for {corrupt.subject!r} changes "
                "the prompt's token length; pick a donor whose subject has as many tokens"
            )
    elif corrupt is None:
        kind = "mean"
    else:
        kind = "tokens"
        donor, corrupt_prompt = _pick_donor(subject, example, list(corrupt), n_prompt, seed)
    if kind == "mean":
        corrupt_ids = ids.clone()
        key = _span_positions(enc, example.prompt, [example.subject or "", *example.keywords])
    else:
        assert corrupt_prompt is not None
        c_prompt_ids = _prompt_ids(subject, example.with_prompt(corrupt_prompt))
        if len(c_prompt_ids) != n_prompt:
            raise InputError(
                f"the corrupt prompt is {len(c_prompt_ids)} tokens but the clean prompt is {n_prompt}; "
                "EAP patches position by position, so give a corrupt prompt of the same token length"
            )
        corrupt_ids = torch.cat([c_prompt_ids, answer_ids])
        key = np.nonzero((c_prompt_ids != ids[:n_prompt]).numpy())[0].astype(np.int64)
        if key.size == 0:
            logger.warning("the corrupt prompt tokenizes exactly like the clean one; all scores will be 0")
    c_tok = -1
    if metric == "logit_diff":
        if corrupt_answer is None and donor is not None:
            corrupt_answer = donor.answer
        if corrupt_answer is None:
            raise InputError(
                "metric='logit_diff' needs the corrupt answer: pass corrupt_answer=... (or donors), "
                "or use metric='logprob'"
            )
        c_tok = _first_answer_token(subject, example, corrupt_prompt or example.prompt, corrupt_answer)
        if c_tok == int(answer_ids[0]):
            raise InputError(
                "the clean and corrupt answers start with the same token, so their logit difference is 0; "
                "use metric='logprob' or another corrupt answer"
            )
    elif metric != "logprob":
        raise UnknownNameError(f"unknown metric {metric!r}", source="metric", fix="choose 'logprob' or 'logit_diff'")
    return Prepared(
        input_ids=ids,
        corrupt_ids=corrupt_ids,
        answer_span=enc.answer_span,
        corruption=kind,
        corrupt_prompt=corrupt_prompt,
        key_positions=key,
        corrupt_token=c_tok,
        donor=donor.id if donor is not None else None,
    )


def _swap(subject: Subject, example: Example, donor: Example, n_prompt: int) -> str | None:
    if not example.subject or example.subject not in example.prompt:
        raise InputError(
            f"example {example.id!r}: subject-swap corruption needs Example.subject to occur in the prompt "
            f"(subject={example.subject!r}); pass a corrupt prompt or corrupt='mean'"
        )
    if not donor.subject or donor.subject == example.subject:
        return None
    prompt = example.prompt.replace(example.subject, donor.subject)
    if len(_prompt_ids(subject, example.with_prompt(prompt))) != n_prompt:
        return None
    return prompt


def _pick_donor(
    subject: Subject, example: Example, donors: list[Example], n_prompt: int, seed: int
) -> tuple[Example, str]:
    order = list(range(len(donors)))
    random.Random(seed).shuffle(order)
    attr = example.meta.get("attribute")
    order.sort(key=lambda i: 0 if attr is not None and donors[i].meta.get("attribute") == attr else 1)
    for i in order:
        prompt = _swap(subject, example, donors[i], n_prompt)
        if prompt is not None:
            return donors[i], prompt
    raise InputError(
        f"example {example.id!r}: none of the {len(donors)} donors has a subject with the same token length "
        f"as {example.subject!r}; give more donors, a corrupt prompt, or corrupt='mean'"
    )


def metric_from_logits(
    logits: torch.Tensor, answer_span: tuple[int, int], target: torch.Tensor, metric: Metric, corrupt_token: int
) -> torch.Tensor:
    """The metric per batch row.

    Args:
        logits: ``(batch, seq, vocab)``.
        answer_span: ``(start, stop)`` of the answer tokens.
        target: ``(n_answer,)`` answer token ids.
        metric: ``"logprob"``: mean teacher-forced log-probability of the answer tokens;
            ``"logit_diff"``: logit of the first clean answer token minus that of the corrupt
            answer's first token, at the last prompt position.
        corrupt_token: The corrupt answer's first token (``logit_diff``).

    Returns:
        ``(batch,)`` in float32, or float64 for a float64 model.
    """
    a0, a1 = answer_span
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if metric == "logprob":
        rows = logits[:, a0 - 1 : a1 - 1]
        return gather_logprobs(rows, target.to(logits.device)[None, :].expand(rows.shape[0], -1)).mean(-1)
    last = logits[:, a0 - 1]
    return last[:, int(target[0])] - last[:, corrupt_token]
