"""TOFU's truth ratio, its two aggregate scores, and the per-item ratios of a model.

Truth ratio (Maini et al. 2024, *TOFU: A Task of Fictitious Unlearning for LLMs*, arXiv:2401.06121),
per item with question ``q``, paraphrased answer ``a~`` and ``m`` perturbed answers ``a^_1..a^_m``, each
probability normalised by its answer's length in tokens::

    R_truth = ( prod_j P(a^_j | q) ^ (1 / |a^_j|) ) ^ (1 / m)  /  P(a~ | q) ^ (1 / |a~|)
            = exp( mean_j lp(a^_j) - lp(a~) ),   lp(a) = (1 / |a|) sum_t log P(a_t | q, a_<t)

i.e. the geometric mean of the perturbed answers' per-token probabilities over the paraphrase's. This is
what ``locuslab/tofu`` (``aggregate_eval_stat.py``: ``exp(mean(perturb_loss) - paraphrased_loss)``, there
inverted) and ``locuslab/open-unlearning`` (``src/evals/metrics/memorization.py::truth_ratio``:
``wrong_prob / correct_prob`` with ``prob = exp(-mean(avg_loss))``) compute. ``R < 1``: the model prefers
the right fact; ``R ~ 1``: it cannot tell right from wrong.

Two aggregates, both means over items (both repositories agree):

* retain-type sets (retain, real authors, world facts; open-unlearning's ``aggregator: true_better``):
  ``mean(max(0, 1 - R))``, high = the model knows the facts (a model-utility component);
* the forget set (``aggregator: closer_to_1_better``): ``mean(min(R, 1 / R))``, 1 = right and wrong answers
  equally likely (nothing known), low = the model still prefers one. TOFU's forget quality does not use
  this mean but the per-item ``R`` (:func:`unpact.standard_metrics.forget_quality`).

Differences from the reference code: log-probabilities come from :func:`unpact.evaluate.answer_logprob`
(the project's one forward path; answer tokens only, without the end token TOFU's labels also score) and
the ratio is taken in log space (no ``1e-10`` in the denominator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from unpact.data import Example
from unpact.errors import InputError, check_items, check_positive
from unpact.evaluate import answer_logprob
from unpact.models import Subject
from unpact.standard_metrics._checks import vector
from unpact.standard_metrics.variants import AnswerVariants, answer_variants

__all__ = [
    "mean_logprob",
    "truth_ratio",
    "truth_ratio_forget_score",
    "truth_ratio_retain_score",
    "model_truth_ratios",
]


def mean_logprob(logprob_sum: ArrayLike, n_tokens: ArrayLike) -> NDArray[np.float64]:
    """Length-normalised log-probability ``sum / n`` (``log P(a|q)^(1/|a|)``).

    Args:
        logprob_sum: ``(...)`` summed answer-token log-probabilities.
        n_tokens: ``(...)`` answer lengths in tokens (>= 1), same shape.

    Returns:
        ``(...)`` float64 mean log-probabilities.

    Raises:
        InputError: Shapes differ, or a length below 1.
    """
    s, n = np.asarray(logprob_sum, dtype=np.float64), np.asarray(n_tokens, dtype=np.float64)
    if s.shape != n.shape:
        raise InputError(f"logprob_sum has shape {s.shape} but n_tokens {n.shape}", source="mean_logprob")
    if n.size and float(n.min()) < 1:
        raise InputError("every answer needs at least one token (n_tokens >= 1)", source="mean_logprob")
    return s / n


def truth_ratio(paraphrased: ArrayLike, perturbed: ArrayLike | Sequence[ArrayLike]) -> NDArray[np.float64]:
    """Per-item TOFU truth ratio ``R = exp(mean_j lp(a^_j) - lp(a~))`` from mean log-probabilities.

    Args:
        paraphrased: ``(n,)`` mean (per-token) log-probabilities of the paraphrased answers.
        perturbed: ``(n, m)`` mean log-probabilities of ``m`` perturbed answers per item, or ``n`` sequences of
            them (one or more per item, not necessarily as many).

    Returns:
        ``(n,)`` float64 truth ratios (``> 0``; ``< 1`` where the paraphrase is preferred).

    Raises:
        InputError: Lengths differ, an item without perturbed answers, or non-finite values.
    """
    para = vector("paraphrased", paraphrased, "truth_ratio")
    if isinstance(perturbed, np.ndarray) and perturbed.ndim == 2:
        rows: list[NDArray[np.float64]] = [vector(f"perturbed[{i}]", r, "truth_ratio") for i, r in enumerate(perturbed)]
    elif isinstance(perturbed, (str, bytes)) or not isinstance(perturbed, (Sequence, np.ndarray)):
        raise InputError(
            f"perturbed must be an (n, m) array or n sequences of log-probs, got {type(perturbed).__name__}",
            source="truth_ratio",
        )
    else:
        rows = [
            vector(f"perturbed[{i}]", np.atleast_1d(np.asarray(r, dtype=np.float64)), "truth_ratio")
            for i, r in enumerate(perturbed)
        ]
    if len(rows) != para.size:
        raise InputError(
            f"{para.size} paraphrased answers but perturbed answers for {len(rows)} items", source="truth_ratio"
        )
    pert = np.array([r.mean() for r in rows], dtype=np.float64)
    return np.exp(pert - para)


def truth_ratio_forget_score(ratios: ArrayLike) -> float:
    """Forget-set aggregate ``mean(min(R, 1/R))`` (open-unlearning's ``closer_to_1_better``; TOFU's forget column).

    1 when right and wrong answers are equally likely on every item (nothing left to prefer), toward 0 when
    the model strongly prefers either. Not forget quality (that is a KS test on the per-item ``R``).

    Args:
        ratios: ``(n,)`` truth ratios (> 0).

    Returns:
        The mean, in ``(0, 1]``.
    """
    r = _ratios(ratios, "truth_ratio_forget_score")
    return float(np.mean(np.minimum(r, 1.0 / r)))


def truth_ratio_retain_score(ratios: ArrayLike) -> float:
    """Retain-set aggregate ``mean(max(0, 1 - R))`` (open-unlearning's ``true_better``; a model-utility component).

    High when the model prefers the right answer (``R`` near 0), 0 where it prefers the wrong ones.

    Args:
        ratios: ``(n,)`` truth ratios (> 0).

    Returns:
        The mean, in ``[0, 1)``.
    """
    r = _ratios(ratios, "truth_ratio_retain_score")
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def _ratios(ratios: ArrayLike, where: str) -> NDArray[np.float64]:
    r = vector("ratios", ratios, where)
    if float(r.min()) <= 0:
        raise InputError(f"truth ratios must be > 0, got {float(r.min())}", source=where)
    return r


def model_truth_ratios(
    subject: Subject,
    examples: Sequence[Example],
    *,
    variants: Sequence[AnswerVariants] | None = None,
    pool: Sequence[Example] | None = None,
    n_perturbed: int = 3,
    seed: int = 0,
    batch_size: int = 32,
) -> NDArray[np.float64]:
    """The per-item truth ratios of a model: two teacher-forced scorings per item set, no generation.

    The paraphrased and each perturbed answer are scored as the answer to the item's own question, in the
    model's prompt format, by :func:`unpact.evaluate.answer_logprob` (``reduce="mean"``).

    Args:
        subject: The model.
        examples: The items (their questions).
        variants: Their answers (:func:`~unpact.standard_metrics.answer_variants`); ``None``: built from
            ``pool``, ``n_perturbed`` and ``seed``.
        pool: See :func:`~unpact.standard_metrics.answer_variants`.
        n_perturbed: Toy-world perturbed answers per item.
        seed: Seed of the toy-world perturbations.
        batch_size: Examples per forward pass.

    Returns:
        ``(n,)`` float64 truth ratios.

    Raises:
        InputError: No items, variants not one per item, or items without paraphrased/perturbed answers.
    """
    items = check_items("examples", examples, Example, where="model_truth_ratios")
    if not items:
        raise InputError("no examples given", source="model_truth_ratios")
    check_positive("batch_size", batch_size, where="model_truth_ratios")
    if variants is None:
        variants = answer_variants(items, pool=pool, n_perturbed=n_perturbed, seed=seed)
    vs = list(variants)
    if len(vs) != len(items):
        raise InputError(f"{len(items)} examples but {len(vs)} answer variants", source="model_truth_ratios")
    para = [replace(e, id=f"{e.id}#para", answer=v.paraphrased) for e, v in zip(items, vs)]
    pert = [replace(e, id=f"{e.id}#pert{j}", answer=a) for e, v in zip(items, vs) for j, a in enumerate(v.perturbed)]
    lp_para = answer_logprob(subject, para, reduce="mean", batch_size=batch_size)
    lp_pert = answer_logprob(subject, pert, reduce="mean", batch_size=batch_size)
    bounds = np.cumsum([0] + [len(v.perturbed) for v in vs])
    return truth_ratio(lp_para, [lp_pert[bounds[i] : bounds[i + 1]] for i in range(len(vs))])
