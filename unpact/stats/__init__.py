"""Clustered, paired statistics for the audit's verdict (issue 12, part 3).

The data: one paired binary outcome per forget item, ``a`` for the unlearned model (recovered by an
attack, or by relearning) and ``b`` for the control model (the retain-only model, same item, same
attack). Items are **not** independent: the phrasings of one fact and the facts of one person succeed
or fail together. The cluster key is the person (``Example.subject``; :func:`cluster_keys` builds the
keys from examples). Every interval and test here resamples or permutes whole clusters, never items,
so a person with twenty phrasings counts as one unit of evidence, not twenty.

* :class:`Estimate`: a point estimate with its interval, item and cluster counts, effective sample
  size and the method used; JSON-ready.
* :func:`clustered_rate`: a rate with a cluster-bootstrap percentile interval (Wilson on the
  effective ``n`` when the bootstrap cannot say anything: a rate of 0 or 1, or a single cluster).
* :func:`paired_difference`: ``mean(a - b)`` with a paired cluster-bootstrap interval (Newcombe's
  paired score interval on the effective ``n`` as the degenerate-case fallback).
* :func:`cluster_sign_flip_test`: a paired permutation test that flips the sign of each cluster's
  summed difference (exact enumeration for few clusters).
* :func:`mcnemar_exact`: the exact binomial test on discordant pairs, item level (ignores clustering:
  exploratory only).
* :func:`holm`: Holm-Bonferroni adjusted p-values over a family of tests (one per attack).
* :func:`effective_n`: items divided by the design effect ``1 + (m_bar - 1) * ICC``.

Only numpy (and the standard library) is used; nothing here imports scipy.
"""

from __future__ import annotations

from unpact.stats.curves import first_crossing
from unpact.stats.intervals import (
    Estimate,
    cluster_keys,
    clustered_rate,
    effective_n,
    icc_anova,
    paired_difference,
    wilson_bounds,
)
from unpact.stats.significance import cluster_sign_flip_test, holm, mcnemar_exact

__all__ = [
    "Estimate",
    "cluster_keys",
    "clustered_rate",
    "paired_difference",
    "cluster_sign_flip_test",
    "mcnemar_exact",
    "holm",
    "effective_n",
    "icc_anova",
    "wilson_bounds",
    "first_crossing",
]
