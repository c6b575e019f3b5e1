"""The field's standard unlearning metrics: TOFU, open-unlearning and MUSE, on unpact's forward path.

* Truth ratio (TOFU): :func:`truth_ratio` from log-probabilities, :func:`model_truth_ratios` for a model;
  :func:`truth_ratio_retain_score` (``mean(max(0, 1 - R))``) and :func:`truth_ratio_forget_score`
  (``mean(min(R, 1/R))``); paraphrased/perturbed answers by :func:`answer_variants`.
* Forget quality (TOFU): :func:`forget_quality`, the KS test p-value (:func:`ks_2samp`) between the
  unlearned and the retain-only model's forget truth ratios, with both sample sizes (:class:`KSResult`).
* Model utility (TOFU): :func:`model_utility`, the harmonic mean of the retain components
  (:func:`utility_components`).
* Membership inference: :func:`loss_score`, :func:`zlib_score`, :func:`min_k_score`,
  :func:`min_k_plus_plus_score` (higher = member), :func:`mia_scores` for a model, :func:`roc_auc`, and
  MUSE's :func:`privleak`.
* One model: :func:`standard_metrics` -> :class:`StandardMetrics`; an unlearned model against the
  retain-only model: :func:`compare_standard_metrics` -> :class:`StandardComparison`.

Each module's docstring gives the formula and the source it was checked against; ``docs/standard_metrics.md``
says how these relate to unpact's recovery tests.

Example:
    >>> from unpact.toyworld import build_toyworld
    >>> from unpact.standard_metrics import standard_metrics, compare_standard_metrics
    >>> world = build_toyworld("micro")
    >>> base, ref = world.load_base(), world.load_retain_only()
    >>> args = (world.forget, world.holdout, world.retain)
    >>> cmp = compare_standard_metrics(standard_metrics(base, *args), standard_metrics(ref, *args))
    >>> cmp.forget_quality.pvalue, cmp.privleak["min_k"]
"""

from __future__ import annotations

from unpact.standard_metrics.ks import KSResult, forget_quality, ks_2samp
from unpact.standard_metrics.mia import (
    MIA_SCORES,
    loss_score,
    mia_scores,
    min_k_plus_plus_score,
    min_k_score,
    privleak,
    roc_auc,
    zlib_score,
)
from unpact.standard_metrics.suite import (
    StandardComparison,
    StandardMetrics,
    compare_standard_metrics,
    standard_metrics,
)
from unpact.standard_metrics.truth_ratio import (
    mean_logprob,
    model_truth_ratios,
    truth_ratio,
    truth_ratio_forget_score,
    truth_ratio_retain_score,
)
from unpact.standard_metrics.utility import UTILITY_COMPONENTS, harmonic_mean, model_utility, utility_components
from unpact.standard_metrics.variants import PARAPHRASE_TEMPLATES, AnswerVariants, answer_variants

__all__ = [
    "AnswerVariants",
    "KSResult",
    "MIA_SCORES",
    "PARAPHRASE_TEMPLATES",
    "StandardComparison",
    "StandardMetrics",
    "UTILITY_COMPONENTS",
    "answer_variants",
    "compare_standard_metrics",
    "forget_quality",
    "harmonic_mean",
    "ks_2samp",
    "loss_score",
    "mean_logprob",
    "mia_scores",
    "min_k_plus_plus_score",
    "min_k_score",
    "model_truth_ratios",
    "model_utility",
    "privleak",
    "roc_auc",
    "standard_metrics",
    "truth_ratio",
    "truth_ratio_forget_score",
    "truth_ratio_retain_score",
    "utility_components",
    "zlib_score",
]
