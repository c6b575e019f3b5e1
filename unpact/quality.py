"""Answer quality after unlearning, as in ReLearn: Linguistic Score, KFR / KRR with a pluggable judge.

* **Linguistic Score** of a response: N words, V distinct words, V1 words used once;
  Brunet's index ``W = N ** (V ** -0.165)`` (lower = richer vocabulary), Honore's statistic
  ``H = 100 * ln N / (1 - V1 / V)`` (higher = richer; when ``V1 == V`` the denominator is
  floored at ``1 / (V + 1)``), and the response's perplexity under the *base* model.
  ``LS = harmonic_mean(sigmoid(-ln PPL), sigmoid(-ln W), sigmoid(ln H))``.
* **KFR / KRR** (knowledge forgetting / retention rate): the share of forget items judged
  forgotten and of retain items judged kept. ReLearn's judge is an NLI model plus LLM-extracted
  entities; unpact ships an offline :class:`EntityOverlapJudge` (content words and numbers of the
  gold answer found in the response; forgotten if the overlap is <= 0.3, or <= 0.5 when the gold
  answer has at most three entities). Any object with ``judge(prediction, gold) -> Judgement``
  can replace it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from unpact.data import Example
from unpact.errors import InputError, check_positive

logger = logging.getLogger(__name__)

__all__ = [
    "brunet_index",
    "honore_statistic",
    "linguistic_score",
    "response_perplexity",
    "Judgement",
    "Judge",
    "EntityOverlapJudge",
    "knowledge_rates",
    "Quality",
]

_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def brunet_index(text: str) -> float:
    """Brunet's W = N ** (V ** -0.165) over lower-cased words; ``nan`` for an empty text."""
    w = _words(text)
    if not w:
        return float("nan")
    n, v = len(w), len(set(w))
    return float(n ** (v**-0.165))


def honore_statistic(text: str) -> float:
    """Honore's H = 100 ln N / (1 - V1/V); ``V1 == V`` floors the denominator at ``1/(V+1)``; ``nan`` if empty."""
    w = _words(text)
    if not w:
        return float("nan")
    n = len(w)
    counts: dict[str, int] = {}
    for x in w:
        counts[x] = counts.get(x, 0) + 1
    v = len(counts)
    v1 = sum(1 for c in counts.values() if c == 1)
    denom = max(1.0 - v1 / v, 1.0 / (v + 1))
    return float(100.0 * math.log(n) / denom)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def linguistic_score(text: str, perplexity: float) -> float:
    """ReLearn's Linguistic Score: harmonic mean of sigmoid(-ln PPL), sigmoid(-ln W), sigmoid(ln H).

    Args:
        text: The response.
        perplexity: Its perplexity under the base model (see :func:`response_perplexity`).

    Returns:
        A score in (0, 1); ``nan`` for an empty response or a non-finite perplexity.
    """
    w, h = brunet_index(text), honore_statistic(text)
    if not all(math.isfinite(x) and x > 0 for x in (w, h, perplexity)):
        return float("nan")
    parts = [_sigmoid(-math.log(perplexity)), _sigmoid(-math.log(w)), _sigmoid(math.log(h))]
    return float(len(parts) / sum(1.0 / p for p in parts))


def response_perplexity(
    base: Any, prompts: Sequence[str | Example], responses: Sequence[str], *, batch_size: int = 32
) -> np.ndarray:
    """Perplexity of each response given its prompt, under ``base`` (a Subject), teacher-forced.

    Args:
        base: The reference model (usually the base model before unlearning).
        prompts: ``(n,)`` prompts.
        responses: ``(n,)`` responses; empty ones get ``nan``.

    Returns:
        ``(n,)`` ``exp(-mean log p(response tokens | prompt))``.

    Raises:
        InputError: Prompts and responses of different lengths, a bad batch size, or NaN/inf logits.
    """
    from unpact.data import fill_id
    from unpact.forward import prompt_pass

    check_positive("batch_size", batch_size, where="response_perplexity")
    if len(prompts) != len(responses):
        raise InputError(
            f"{len(prompts)} prompts but {len(responses)} responses",
            source="response_perplexity",
            fix="pass one response per prompt",
        )
    out = np.full(len(prompts), np.nan)
    questions = [p if isinstance(p, Example) else Example(str(i), p, "x") for i, p in enumerate(prompts)]
    todo = [i for i, r in enumerate(responses) if r and r.strip() and questions[i].prompt.strip()]
    for s in range(0, len(todo), batch_size):
        idx = todo[s : s + batch_size]
        # an item's own template stays: only the answer is replaced by the response
        encs = [base.encode(dataclasses.replace(questions[i], answer=responses[i].strip())) for i in idx]
        lps = prompt_pass(
            base, [e.prompt_ids for e in encs], [e.answer_ids for e in encs], fill=fill_id(base.tokenizer)
        ).answer_logprobs
        for j, lp in zip(idx, lps):
            out[j] = math.exp(-float(lp.mean()))
    return out


@dataclass(frozen=True)
class Judgement:
    """A judge's call on one response.

    Attributes:
        forgotten: The gold knowledge is absent from the response.
        score: The judge's evidence, e.g. the entity overlap in [0, 1] (higher = more kept).
    """

    forgotten: bool
    score: float


@runtime_checkable
class Judge(Protocol):
    """Anything that can tell whether a response still carries the gold answer's knowledge."""

    def judge(self, prediction: str, gold: str) -> Judgement:  # pragma: no cover - protocol
        """Judge one response against the gold answer."""
        ...


@dataclass(frozen=True)
class EntityOverlapJudge:
    """Offline judge: share of the gold answer's entities (content words, numbers) in the response.

    Attributes:
        threshold: Forgotten if overlap <= this (ReLearn: 0.3).
        small_threshold: Threshold for gold answers with at most ``small_n`` entities (ReLearn: 0.5).
        small_n: See ``small_threshold``.
    """

    threshold: float = 0.3
    small_threshold: float = 0.5
    small_n: int = 3

    @staticmethod
    def entities(text: str) -> list[str]:
        """Distinct lower-cased content words and numbers of ``text``."""
        from unpact.keytokens import is_function_word

        return list(dict.fromkeys(w for w in _words(text) if not is_function_word(w)))

    def judge(self, prediction: str, gold: str) -> Judgement:
        """Entity overlap of ``prediction`` with ``gold`` and the forgotten call."""
        ents = self.entities(gold)
        if not ents:
            return Judgement(forgotten=False, score=1.0)
        have = set(_words(prediction))
        overlap = sum(e in have for e in ents) / len(ents)
        thr = self.small_threshold if len(ents) <= self.small_n else self.threshold
        return Judgement(forgotten=overlap <= thr, score=float(overlap))


def knowledge_rates(
    forget_pairs: Sequence[tuple[str, str]],
    retain_pairs: Sequence[tuple[str, str]],
    judge: Judge | None = None,
) -> dict[str, float]:
    """KFR and KRR.

    Args:
        forget_pairs: ``(prediction, gold)`` on forget items.
        retain_pairs: ``(prediction, gold)`` on retain items.
        judge: Any :class:`Judge` (default :class:`EntityOverlapJudge`).

    Returns:
        ``{"kfr": share of forget items judged forgotten, "krr": share of retain items judged kept}``
        (``nan`` for an empty side).
    """
    j = judge or EntityOverlapJudge()
    if not isinstance(j, Judge):
        raise InputError(
            f"judge must have a judge(prediction, gold) method, got {type(j).__name__}",
            source="judge",
            fix="pass an object with judge(prediction, gold) -> Judgement, e.g. EntityOverlapJudge()",
        )
    kfr = [j.judge(p, g).forgotten for p, g in forget_pairs]
    krr = [not j.judge(p, g).forgotten for p, g in retain_pairs]
    return {
        "kfr": float(np.mean(kfr)) if kfr else float("nan"),
        "krr": float(np.mean(krr)) if krr else float("nan"),
    }


@dataclass(frozen=True)
class Quality:
    """Answer quality of one model in an audit (ReLearn's metrics on its plain forget answers).

    Attributes:
        kfr: Knowledge forgetting rate on forget items.
        krr: Knowledge retention rate on retain items.
        brunet_forget: Mean Brunet index of the non-empty forget answers.
        honore_forget: Mean Honore statistic of those answers.
        ppl_forget: Median perplexity of those answers under the base model.
        linguistic_score_forget: Mean Linguistic Score of those answers.
    """

    kfr: float | None
    krr: float | None
    brunet_forget: float | None
    honore_forget: float | None
    ppl_forget: float | None
    linguistic_score_forget: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Quality:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)
