"""TOFU's model utility: the harmonic mean of retain-type scores.

Model utility (Maini et al. 2024, arXiv:2401.06121) is the harmonic mean of nine numbers:
answer probability, ROUGE-L recall and truth-ratio score on each of the retain set, the real-authors set
and the world-facts set (``locuslab/tofu`` ``aggregate_eval_stat.py::get_model_utility`` with
``scipy.stats.hmean``; ``locuslab/open-unlearning`` ``configs/eval/tofu_metrics/model_utility.yaml`` and
``src/evals/metrics/utility.py::hm_aggregate``). The harmonic mean is dragged down by its weakest
component: one score at 0 makes the utility 0.

On the retain set the components are:

* ``retain_prob``: ``mean_i P(a_i | q_i) ^ (1 / |a_i|)`` (TOFU's ``Prob.``: ``exp(-avg_gt_loss)``);
* ``retain_rouge_l``: mean ROUGE-L recall of the greedy answer against the gold answer
  (:func:`unpact.metrics.rouge_l_recall`, word-level after unpact's normalisation; TOFU uses the
  ``rouge_score`` package's ``rougeL`` recall);
* ``retain_truth_ratio``: ``mean_i max(0, 1 - R_i)`` (:func:`~unpact.standard_metrics.truth_ratio_retain_score`).

The real-authors and world-facts sets (where the probability component is normalised over the
options, ``P(a) / (P(a) + sum_j P(a^_j))``) have no counterpart in the toy world: there the utility is the
harmonic mean of the three retain components only, and is not comparable with TOFU's nine-component number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from unpact.data import Example
from unpact.errors import InputError, check_positive
from unpact.evaluate import evaluate
from unpact.models import Subject
from unpact.standard_metrics._checks import finite
from unpact.standard_metrics.truth_ratio import model_truth_ratios, truth_ratio_retain_score
from unpact.standard_metrics.variants import AnswerVariants

__all__ = ["harmonic_mean", "model_utility", "utility_components", "UTILITY_COMPONENTS"]

#: The retain-set components of model utility unpact computes.
UTILITY_COMPONENTS: tuple[str, ...] = ("retain_prob", "retain_rouge_l", "retain_truth_ratio")


def harmonic_mean(values: Sequence[float]) -> float:
    """``n / sum_i (1 / v_i)``; 0 when any value is 0 (as ``scipy.stats.hmean``).

    Args:
        values: ``(n,)`` non-negative finite numbers (n >= 1).

    Returns:
        The harmonic mean.

    Raises:
        InputError: No values, a negative or non-finite one.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise InputError(f"values must be a sequence of numbers, got {type(values).__name__}", source="harmonic_mean")
    vs = [finite(f"values[{i}]", v, "harmonic_mean") for i, v in enumerate(values)]
    if not vs:
        raise InputError("no values to average", source="harmonic_mean")
    if min(vs) < 0:
        raise InputError(f"harmonic mean of a negative value ({min(vs)})", source="harmonic_mean")
    if min(vs) == 0:
        return 0.0
    return len(vs) / math.fsum(1.0 / v for v in vs)


def model_utility(components: Mapping[str, float]) -> float:
    """TOFU's model utility: the harmonic mean of the given component scores (each in ``[0, 1]``).

    Args:
        components: Name -> score, e.g. :func:`utility_components`' output (TOFU's nine, or the toy
            world's three retain components).

    Returns:
        The harmonic mean (0 if any component is 0).

    Raises:
        InputError: No components, or one outside ``[0, 1]``.
    """
    if not isinstance(components, Mapping) or not components:
        raise InputError("model_utility needs a non-empty mapping of component scores", source="model_utility")
    for name, v in components.items():
        x = finite(f"components[{name!r}]", v, "model_utility")
        if not 0.0 <= x <= 1.0:
            raise InputError(f"component {name!r} = {x} is outside [0, 1]", source="model_utility")
    return harmonic_mean(list(components.values()))


def utility_components(
    subject: Subject,
    retain: Sequence[Example],
    *,
    variants: Sequence[AnswerVariants] | None = None,
    pool: Sequence[Example] | None = None,
    n_perturbed: int = 3,
    seed: int = 0,
    max_new_tokens: int = 16,
    batch_size: int = 32,
) -> dict[str, float]:
    """The retain-set components of model utility for a model (see :data:`UTILITY_COMPONENTS`).

    ``model_utility(utility_components(subject, retain))`` is the toy world's model utility.

    Args:
        subject: The model.
        retain: Retain items (gold answers; paraphrased/perturbed answers as for
            :func:`~unpact.standard_metrics.model_truth_ratios`).
        variants: Their paraphrased/perturbed answers; ``None``: built from ``pool`` (default ``retain``).
        pool: Items the toy-world perturbations are drawn from.
        n_perturbed: Toy-world perturbed answers per item.
        seed: Seed of the perturbations.
        max_new_tokens: Greedy generation length for ROUGE-L.
        batch_size: Examples per forward pass.

    Returns:
        ``{"retain_prob", "retain_rouge_l", "retain_truth_ratio"}`` -> score in ``[0, 1]``.
    """
    check_positive("batch_size", batch_size, where="utility_components")
    recs = evaluate(subject, retain, max_new_tokens=max_new_tokens, batch_size=batch_size).records
    ratios = model_truth_ratios(
        subject, retain, variants=variants, pool=pool, n_perturbed=n_perturbed, seed=seed, batch_size=batch_size
    )
    return {
        "retain_prob": float(np.mean([math.exp(r.answer_logprob) for r in recs])),
        "retain_rouge_l": float(np.mean([r.rouge_l for r in recs])),
        "retain_truth_ratio": truth_ratio_retain_score(ratios),
    }
