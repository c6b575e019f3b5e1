"""Membership-inference scores, their AUC, and MUSE's PrivLeak.

Every score here is oriented so that **higher = more likely a training member** (the convention of the
Min-K%++ code, ``zjysteven/mink-plus-plus`` ``run.py``). open-unlearning and MUSE store the negated,
loss-like scores and flip the labels instead; the AUCs are the same numbers. Per item, over its ``T``
scored tokens with log-probabilities ``lp_t = log p(x_t | x_<t)``:

* ``loss`` (LOSS; Yeom et al. 2018): ``mean_t lp_t``, minus the mean token NLL (open-unlearning
  ``src/evals/metrics/mia/loss.py`` returns ``avg_loss``).
* ``zlib`` (Carlini et al. 2021, *Extracting Training Data from Large Language Models*, USENIX Security):
  ``mean_t lp_t / len(zlib.compress(text.encode("utf-8")))``, the log-perplexity over the zlib entropy in
  bytes of the scored text. The *mean* NLL, as in open-unlearning ``mia/zlib.py`` (``avg_loss /
  zlib_entropy``), MUSE ``metrics/privleak.py`` (``PPL/zlib`` from the mean loss) and Min-K%++ ``run.py``.
* ``min_k`` (Min-K% Prob; Shi et al. 2024, *Detecting Pretraining Data from Large Language Models*, ICLR,
  arXiv:2310.16789): the mean of the ``max(1, int(k * T))`` lowest ``lp_t``; ``k = 0.4`` as in
  open-unlearning's TOFU and MUSE configs (``configs/eval/*_metrics/mia_min_k.yaml``) and MUSE's PrivLeak
  (``Min-40%``).
* ``min_k_plus_plus`` (Min-K%++; Zhang et al. 2024, arXiv:2404.02936): per token
  ``(lp_t - mu_t) / sigma_t`` with ``mu_t``, ``sigma_t`` the mean and standard deviation of ``log p(z)``
  for ``z ~ p(. | x_<t)``; the mean of the ``max(1, int(k * T))`` lowest; ``k = 0.4`` (open-unlearning
  ``mia/min_k_plus_plus.py`` and ``mia_min_k_plus_plus.yaml``).

AUC: the area under the ROC curve separating members (forget items, for a model trained on them) from
non-members (holdout items), ``P(score(member) > score(non-member)) + P(tie) / 2`` (Mann-Whitney; the value
``sklearn.metrics.roc_auc_score`` gives, which open-unlearning ``mia/utils.py::mia_auc`` uses). 0.5: the
score cannot tell them apart.

PrivLeak (Shi et al. 2024, *MUSE: Machine Unlearning Six-Way Evaluation for Language Models*,
arXiv:2407.06460): the relative change of the Min-40% AUC against the retrained model's, in percent. MUSE
computes its AUC with the *holdout* as the positive class (``swj0419/muse_bench`` ``metrics/privleak.py``,
key ``forget_holdout_Min-40%``), i.e. ``1 - AUC`` in the orientation used here, and ``eval.py`` takes
``(AUC_unlearn - AUC_retrain) / AUC_retrain * 100``; open-unlearning ``src/evals/metrics/privacy.py::
privleak`` converts its conventional AUCs the same way (``score = 1 - score``). So, with the AUCs of this
module::

    PrivLeak = ((1 - AUC_unlearned) - (1 - AUC_retrain)) / (1 - AUC_retrain) * 100

Near 0: the unlearned model leaks as much (or as little) membership as the retrained one. **Negative:
under-unlearning** (forget items still look like members; the floor, -100, is reached when every forget
item scores above every holdout item). Positive: over-unlearning (forget items look *less* like members
than they would had they never been trained on, itself a signal). MUSE's README: in the key
``forget_holdout_Min-40%`` "the first keyword (forget) corresponds to the non-member data".
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from unpact.data import Example
from unpact.errors import InputError
from unpact.models import Subject
from unpact.standard_metrics._checks import finite, fraction, vector
from unpact.standard_metrics._tokens import Tokens, TokenScores, token_scores

__all__ = [
    "MIA_SCORES",
    "loss_score",
    "zlib_score",
    "min_k_score",
    "min_k_plus_plus_score",
    "mia_scores",
    "roc_auc",
    "privleak",
]

#: The membership-inference scores computed per item, all oriented higher = member.
MIA_SCORES: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k_plus_plus")


def loss_score(logprobs: ArrayLike) -> float:
    """LOSS: the mean token log-probability ``mean_t lp_t`` (minus the mean NLL; higher = member).

    Args:
        logprobs: ``(T,)`` log-probabilities of the scored tokens.
    """
    return float(vector("logprobs", logprobs, "loss_score").mean())


def zlib_score(logprobs: ArrayLike, text: str) -> float:
    """zlib: ``mean_t lp_t / len(zlib.compress(text.encode("utf-8")))`` (higher = member).

    Args:
        logprobs: ``(T,)`` log-probabilities of the scored tokens.
        text: The scored text.

    Raises:
        InputError: ``text`` is not a non-empty string.
    """
    if not isinstance(text, str) or not text:
        raise InputError(f"text must be a non-empty string, got {text!r}", source="zlib_score")
    return loss_score(logprobs) / len(zlib.compress(text.encode("utf-8")))


def _lowest_mean(values: NDArray[np.float64], k: float) -> float:
    n = max(1, int(values.size * k))
    return float(np.sort(values)[:n].mean())


def min_k_score(logprobs: ArrayLike, k: float = 0.4) -> float:
    """Min-K%: the mean of the ``max(1, int(k * T))`` lowest token log-probabilities (higher = member).

    Args:
        logprobs: ``(T,)`` log-probabilities of the scored tokens.
        k: Fraction of tokens kept, in ``(0, 1]``.
    """
    return _lowest_mean(vector("logprobs", logprobs, "min_k_score"), fraction("k", k, "min_k_score"))


def min_k_plus_plus_score(logprobs: ArrayLike, mu: ArrayLike, sigma: ArrayLike, k: float = 0.4) -> float:
    """Min-K%++: the mean of the ``max(1, int(k * T))`` lowest ``(lp_t - mu_t) / sigma_t`` (higher = member).

    Args:
        logprobs: ``(T,)`` log-probabilities of the scored tokens.
        mu: ``(T,)`` mean of ``log p(z)`` under each position's next-token distribution.
        sigma: ``(T,)`` its standard deviation (> 0).
        k: Fraction of tokens kept, in ``(0, 1]``.

    Raises:
        InputError: Lengths differ or a ``sigma`` is not positive.
    """
    where = "min_k_plus_plus_score"
    lp, m, s = vector("logprobs", logprobs, where), vector("mu", mu, where), vector("sigma", sigma, where)
    if not lp.size == m.size == s.size:
        raise InputError(f"logprobs, mu and sigma differ in length ({lp.size}, {m.size}, {s.size})", source=where)
    if float(s.min()) <= 0:
        raise InputError(f"sigma must be > 0, got {float(s.min())}", source=where)
    return _lowest_mean((lp - m) / s, fraction("k", k, where))


def _scores_of(t: TokenScores, k: float) -> dict[str, float]:
    return {
        "loss": loss_score(t.logprobs),
        "zlib": zlib_score(t.logprobs, t.text or " "),
        "min_k": min_k_score(t.logprobs, k),
        "min_k_plus_plus": min_k_plus_plus_score(t.logprobs, t.mu, t.sigma, k),
    }


def mia_scores(
    subject: Subject,
    examples: Sequence[Example],
    *,
    tokens: Tokens = "answer",
    k: float = 0.4,
    batch_size: int = 16,
) -> dict[str, NDArray[np.float64]]:
    """Every score of :data:`MIA_SCORES` for each item, from one forward pass per batch.

    Args:
        subject: The model.
        examples: The items, encoded in the model's prompt format.
        tokens: Which tokens are scored: ``"answer"`` (given the question; open-unlearning's TOFU setting)
            or ``"full"`` (the question and answer text after the first token); see
            :func:`unpact.standard_metrics._tokens.token_scores`.
        k: Min-K% / Min-K%++ fraction.
        batch_size: Items per forward pass.

    Returns:
        Score name -> ``(n,)`` float64 scores (higher = member).
    """
    k = fraction("k", k, "mia_scores")
    per_item = [_scores_of(t, k) for t in token_scores(subject, examples, tokens=tokens, batch_size=batch_size)]
    return {name: np.array([s[name] for s in per_item], dtype=np.float64) for name in MIA_SCORES}


def roc_auc(members: ArrayLike, nonmembers: ArrayLike) -> float:
    """ROC AUC of telling members from non-members by a score (higher = member), ties counting one half.

    ``AUC = (R_members - n_m (n_m + 1) / 2) / (n_m n_n)`` with ``R_members`` the sum of the members' ranks in
    the pooled sample (average ranks for ties): the Mann-Whitney U over ``n_m n_n``, equal to
    ``sklearn.metrics.roc_auc_score(labels, scores)``.

    Args:
        members: ``(n_m,)`` scores of the members (e.g. forget items).
        nonmembers: ``(n_n,)`` scores of the non-members (holdout items).

    Returns:
        The AUC in ``[0, 1]``.

    Raises:
        InputError: An empty or non-finite sample.
    """
    m = vector("members", members, "roc_auc")
    n = vector("nonmembers", nonmembers, "roc_auc")
    pooled = np.concatenate([m, n])
    order = np.argsort(pooled, kind="mergesort")
    ranks = np.empty(pooled.size, dtype=np.float64)
    sorted_vals = pooled[order]
    i = 0
    while i < pooled.size:  # average 1-based ranks over runs of ties
        j = i
        while j + 1 < pooled.size and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = float(ranks[: m.size].sum()) - m.size * (m.size + 1) / 2.0
    return u / (m.size * n.size)


def privleak(auc_unlearned: float, auc_reference: float) -> float:
    """MUSE's PrivLeak from two AUCs of this module (members = forget items, higher = member).

    ``((1 - AUC_unlearned) - (1 - AUC_reference)) / (1 - AUC_reference) * 100``: 0 = as much membership
    signal as the retrained (retain-only) model, negative = under-unlearning, positive = over-unlearning.
    MUSE reads it against its own AUCs (holdout as the positive class), which are ``1 - AUC`` here.

    Args:
        auc_unlearned: The audited model's forget-vs-holdout AUC.
        auc_reference: The retain-only model's AUC on the same items (MUSE's ``AUC_RETRAIN``; open-unlearning
            falls back to 0.5 without one).

    Returns:
        PrivLeak in percent; ``nan`` when ``auc_reference`` is 1 (no room to compare against: MUSE would
        divide by 0).

    Raises:
        InputError: An AUC outside ``[0, 1]``.
    """
    u = finite("auc_unlearned", auc_unlearned, "privleak")
    r = finite("auc_reference", auc_reference, "privleak")
    for name, v in (("auc_unlearned", u), ("auc_reference", r)):
        if not 0.0 <= v <= 1.0:
            raise InputError(f"{name} must be an AUC in [0, 1], got {v}", source="privleak")
    if r == 1.0:
        return math.nan
    return ((1.0 - u) - (1.0 - r)) / (1.0 - r) * 100.0
