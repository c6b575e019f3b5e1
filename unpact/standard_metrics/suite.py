"""The standard metrics of one model, and the comparison of an unlearned model with the retain-only model.

:func:`standard_metrics` computes, once per model, every per-item number the field's metrics are built
from: truth ratios on forget and retain items, the retain items' answer probability and ROUGE-L, and the
membership-inference scores of forget and holdout items. :func:`compare_standard_metrics` turns an
unlearned model's numbers and the retain-only model's (same items) into TOFU's forget quality and MUSE's
PrivLeak. Both results are frozen dataclasses with a JSON round trip (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from unpact.data import Example
from unpact.errors import InputError, check_count, check_items, check_positive
from unpact.evaluate import evaluate
from unpact.models import Subject
from unpact.provenance import Provenance
from unpact.standard_metrics._checks import fraction
from unpact.standard_metrics._tokens import Tokens
from unpact.standard_metrics.ks import KSResult, forget_quality
from unpact.standard_metrics.mia import MIA_SCORES, mia_scores, privleak, roc_auc
from unpact.standard_metrics.truth_ratio import model_truth_ratios, truth_ratio_forget_score, truth_ratio_retain_score
from unpact.standard_metrics.utility import model_utility
from unpact.standard_metrics.variants import AnswerVariants, answer_variants

__all__ = ["StandardMetrics", "StandardComparison", "standard_metrics", "compare_standard_metrics"]

_T = TypeVar("_T")


def _floats(xs: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in xs)


@dataclass(frozen=True)
class StandardMetrics:
    """Per-item numbers of one model, from which TOFU's and MUSE's metrics are computed.

    Attributes:
        forget_ids: Ids of the forget items scored (truth ratio, MIA members).
        retain_ids: Ids of the retain items scored (model utility).
        holdout_ids: Ids of the holdout items scored (MIA non-members).
        forget_truth_ratio: ``(n_forget,)`` truth ratios ``R`` on the forget items.
        retain_truth_ratio: ``(n_retain,)`` truth ratios on the retain items.
        retain_prob: ``(n_retain,)`` ``P(a|q)^(1/|a|)`` of the gold retain answers.
        retain_rouge_l: ``(n_retain,)`` ROUGE-L recall of the greedy retain answers.
        mia_forget: MIA score name -> ``(n_forget,)`` scores (higher = member).
        mia_holdout: MIA score name -> ``(n_holdout,)`` scores.
        settings: How they were computed (``k``, ``tokens``, ``n_perturbed``, ``seed``, ``max_items``,
            ``max_new_tokens``, and ``variants_digest``: a hash of the paraphrased/perturbed answers).
        provenance: Model, weights hash and arguments.
    """

    forget_ids: tuple[str, ...]
    retain_ids: tuple[str, ...]
    holdout_ids: tuple[str, ...]
    forget_truth_ratio: tuple[float, ...]
    retain_truth_ratio: tuple[float, ...]
    retain_prob: tuple[float, ...]
    retain_rouge_l: tuple[float, ...]
    mia_forget: Mapping[str, tuple[float, ...]]
    mia_holdout: Mapping[str, tuple[float, ...]]
    settings: Mapping[str, Any] = field(default_factory=dict)
    provenance: Provenance | None = None

    def __post_init__(self) -> None:
        sizes = {
            "forget_truth_ratio": (len(self.forget_truth_ratio), len(self.forget_ids)),
            "retain_truth_ratio": (len(self.retain_truth_ratio), len(self.retain_ids)),
            "retain_prob": (len(self.retain_prob), len(self.retain_ids)),
            "retain_rouge_l": (len(self.retain_rouge_l), len(self.retain_ids)),
            **{f"mia_forget[{k!r}]": (len(v), len(self.forget_ids)) for k, v in self.mia_forget.items()},
            **{f"mia_holdout[{k!r}]": (len(v), len(self.holdout_ids)) for k, v in self.mia_holdout.items()},
        }
        for name, (got, want) in sizes.items():
            if got != want:
                raise InputError(f"{name} has {got} values for {want} items", source="StandardMetrics")
        if set(self.mia_forget) != set(self.mia_holdout):
            raise InputError("mia_forget and mia_holdout hold different scores", source="StandardMetrics")

    # ----- aggregates --------------------------------------------------------------------------
    def utility_components(self) -> dict[str, float]:
        """The retain components of model utility (see :mod:`unpact.standard_metrics.utility`)."""
        if not self.retain_ids:
            return {}
        return {
            "retain_prob": float(np.mean(self.retain_prob)),
            "retain_rouge_l": float(np.mean(self.retain_rouge_l)),
            "retain_truth_ratio": truth_ratio_retain_score(self.retain_truth_ratio),
        }

    def model_utility(self) -> float:
        """Harmonic mean of :meth:`utility_components` (``nan`` without retain items)."""
        comps = self.utility_components()
        return model_utility(comps) if comps else math.nan

    def forget_truth_ratio_score(self) -> float:
        """``mean(min(R, 1/R))`` on the forget items (1 = right and wrong answers equally likely)."""
        return truth_ratio_forget_score(self.forget_truth_ratio) if self.forget_ids else math.nan

    def mia_auc(self) -> dict[str, float]:
        """Per MIA score, the AUC of forget items (members) against holdout items (non-members)."""
        if not self.forget_ids or not self.holdout_ids:
            return {k: math.nan for k in self.mia_forget}
        return {k: roc_auc(self.mia_forget[k], self.mia_holdout[k]) for k in self.mia_forget}

    def summary(self) -> dict[str, float]:
        """Item counts, model utility and its components, the forget truth-ratio score and the MIA AUCs."""
        return {
            "n_forget": len(self.forget_ids),
            "n_retain": len(self.retain_ids),
            "n_holdout": len(self.holdout_ids),
            "model_utility": self.model_utility(),
            **self.utility_components(),
            "forget_truth_ratio": self.forget_truth_ratio_score(),
            **{f"auc_{k}": v for k, v in self.mia_auc().items()},
        }

    # ----- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the summary is included for reading; :meth:`from_dict` ignores it)."""
        return {
            "summary": self.summary(),
            "forget_ids": list(self.forget_ids),
            "retain_ids": list(self.retain_ids),
            "holdout_ids": list(self.holdout_ids),
            "forget_truth_ratio": list(self.forget_truth_ratio),
            "retain_truth_ratio": list(self.retain_truth_ratio),
            "retain_prob": list(self.retain_prob),
            "retain_rouge_l": list(self.retain_rouge_l),
            "mia_forget": {k: list(v) for k, v in self.mia_forget.items()},
            "mia_holdout": {k: list(v) for k, v in self.mia_holdout.items()},
            "settings": dict(self.settings),
            "provenance": self.provenance.to_dict() if self.provenance else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StandardMetrics:
        """Inverse of :meth:`to_dict`."""
        prov = d.get("provenance")
        return cls(
            forget_ids=tuple(str(x) for x in d["forget_ids"]),
            retain_ids=tuple(str(x) for x in d["retain_ids"]),
            holdout_ids=tuple(str(x) for x in d["holdout_ids"]),
            forget_truth_ratio=_floats(d["forget_truth_ratio"]),
            retain_truth_ratio=_floats(d["retain_truth_ratio"]),
            retain_prob=_floats(d["retain_prob"]),
            retain_rouge_l=_floats(d["retain_rouge_l"]),
            mia_forget={k: _floats(v) for k, v in d["mia_forget"].items()},
            mia_holdout={k: _floats(v) for k, v in d["mia_holdout"].items()},
            settings=dict(d.get("settings") or {}),
            provenance=Provenance.from_dict(prov) if prov else None,
        )


@dataclass(frozen=True)
class StandardComparison:
    """An unlearned model against the retain-only model on the same items.

    Attributes:
        forget_quality: TOFU's KS test of the two models' forget truth ratios (``pvalue`` is the forget
            quality; ``n_a``, ``n_b`` the item counts it depends on).
        auc: MIA score -> the unlearned model's forget-vs-holdout AUC.
        auc_reference: The same for the retain-only model.
        privleak: MIA score -> MUSE's PrivLeak in percent (MUSE's own is the ``min_k`` entry: Min-40%).
        model_utility: The unlearned model's model utility.
        model_utility_reference: The retain-only model's.
        n_forget: Forget items (MIA members, truth ratios).
        n_holdout: Holdout items (MIA non-members).
        model: The unlearned model's name.
        reference_model: The retain-only model's name.
    """

    forget_quality: KSResult
    auc: Mapping[str, float]
    auc_reference: Mapping[str, float]
    privleak: Mapping[str, float]
    model_utility: float
    model_utility_reference: float
    n_forget: int
    n_holdout: int
    model: str = ""
    reference_model: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "forget_quality": self.forget_quality.to_dict(),
            "auc": dict(self.auc),
            "auc_reference": dict(self.auc_reference),
            "privleak": dict(self.privleak),
            "model_utility": self.model_utility,
            "model_utility_reference": self.model_utility_reference,
            "n_forget": self.n_forget,
            "n_holdout": self.n_holdout,
            "model": self.model,
            "reference_model": self.reference_model,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StandardComparison:
        """Inverse of :meth:`to_dict`."""
        return cls(
            forget_quality=KSResult.from_dict(d["forget_quality"]),
            auc={k: float(v) for k, v in d["auc"].items()},
            auc_reference={k: float(v) for k, v in d["auc_reference"].items()},
            privleak={k: float(v) for k, v in d["privleak"].items()},
            model_utility=float(d["model_utility"]),
            model_utility_reference=float(d["model_utility_reference"]),
            n_forget=int(d["n_forget"]),
            n_holdout=int(d["n_holdout"]),
            model=str(d.get("model", "")),
            reference_model=str(d.get("reference_model", "")),
        )


def _spread(items: list[_T], max_items: int | None) -> list[_T]:
    """At most ``max_items`` items, evenly spaced over the list (all people and attributes of a toy world)."""
    if max_items is None or len(items) <= max_items:
        return items
    return [items[(i * len(items)) // max_items] for i in range(max_items)]


def _digest(items: Sequence[Example], variants: Sequence[AnswerVariants]) -> str:
    rows = [[e.id, v.paraphrased, list(v.perturbed)] for e, v in zip(items, variants)]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()[:16]


def standard_metrics(
    subject: Subject,
    forget: Sequence[Example],
    holdout: Sequence[Example],
    retain: Sequence[Example],
    *,
    perturb_pool: Sequence[Example] | None = None,
    max_items: int | None = 100,
    n_perturbed: int = 3,
    k: float = 0.4,
    tokens: Tokens = "answer",
    seed: int = 0,
    max_new_tokens: int = 16,
    batch_size: int = 32,
) -> StandardMetrics:
    """Every per-item number of TOFU's and MUSE's metrics for one model.

    Truth ratios on the forget and retain items (paraphrased/perturbed answers from ``meta``, or built for
    the toy world with perturbations drawn from ``perturb_pool``, by default the holdout people: see
    :func:`~unpact.standard_metrics.answer_variants`), the retain items' answer probability and greedy
    ROUGE-L, and the four MIA scores of the forget and holdout items. Run it on the unlearned and on the
    retain-only model with the same arguments, then :func:`compare_standard_metrics`.

    Args:
        subject: The model.
        forget: Forget items (the MIA members, for a model trained on them).
        holdout: Items about people no model was trained on (the MIA non-members; a toy world's
            ``world.holdout``); may be empty (no MIA).
        retain: Retain items (model utility); may be empty.
        perturb_pool: Items whose answers the toy-world perturbed answers are drawn from (all of it, not
            cut by ``max_items``); ``None``: ``holdout`` (people no model saw), or each list itself when
            ``holdout`` is empty. Items with TOFU's ``meta["perturbed_answer"]`` keep theirs.
        max_items: At most this many items of each list, evenly spaced over it (``None``: all). The forget
            quality p-value depends on it: keep it equal across the models compared.
        n_perturbed: Toy-world perturbed answers per item.
        k: Min-K% / Min-K%++ fraction (0.4 as in open-unlearning and MUSE).
        tokens: MIA tokens: ``"answer"`` (given the question, open-unlearning's TOFU setting) or ``"full"``
            (question and answer text).
        seed: Seed of the toy-world perturbations.
        max_new_tokens: Greedy generation length for ROUGE-L.
        batch_size: Items per forward pass.

    Returns:
        The :class:`StandardMetrics`.

    Raises:
        InputError: No forget items, bad settings, or items without paraphrased/perturbed answers.
    """
    where = "standard_metrics"
    forget_all = check_items("forget", forget, Example, where=where)
    holdout_all = check_items("holdout", holdout, Example, where=where)
    retain_all = check_items("retain", retain, Example, where=where)
    if not forget_all:
        raise InputError("no forget items given", source=where)
    if max_items is not None:
        check_positive("max_items", max_items, where=where)
    check_positive("n_perturbed", n_perturbed, where=where)
    check_count("seed", seed, where=where)
    check_positive("max_new_tokens", max_new_tokens, where=where)
    check_positive("batch_size", batch_size, where=where)
    k = fraction("k", k, where)
    if tokens not in ("answer", "full"):
        raise InputError(f"tokens must be 'answer' or 'full', got {tokens!r}", source=where)
    f_items, r_items, h_items = (_spread(x, max_items) for x in (forget_all, retain_all, holdout_all))
    pool = check_items("perturb_pool", perturb_pool, Example, where=where) if perturb_pool is not None else holdout_all
    f_vars = answer_variants(f_items, pool=pool or forget_all, n_perturbed=n_perturbed, seed=seed)
    r_vars = answer_variants(r_items, pool=pool or retain_all, n_perturbed=n_perturbed, seed=seed) if r_items else []
    settings: dict[str, Any] = {
        "max_items": max_items,
        "n_perturbed": n_perturbed,
        "k": k,
        "tokens": tokens,
        "seed": seed,
        "max_new_tokens": max_new_tokens,
        "variants_digest": _digest([*f_items, *r_items], [*f_vars, *r_vars]),
    }
    f_tr = model_truth_ratios(subject, f_items, variants=f_vars, batch_size=batch_size)
    r_tr: Any = ()
    r_prob: Any = ()
    r_rouge: Any = ()
    if r_items:
        recs = evaluate(subject, r_items, max_new_tokens=max_new_tokens, batch_size=batch_size).records
        r_prob, r_rouge = [math.exp(r.answer_logprob) for r in recs], [r.rouge_l for r in recs]
        r_tr = model_truth_ratios(subject, r_items, variants=r_vars, batch_size=batch_size)
    mia_f = mia_scores(subject, f_items, tokens=tokens, k=k, batch_size=batch_size)
    mia_h = (
        mia_scores(subject, h_items, tokens=tokens, k=k, batch_size=batch_size)
        if h_items
        else {name: np.zeros(0) for name in MIA_SCORES}
    )
    return StandardMetrics(
        forget_ids=tuple(e.id for e in f_items),
        retain_ids=tuple(e.id for e in r_items),
        holdout_ids=tuple(e.id for e in h_items),
        forget_truth_ratio=_floats(f_tr),
        retain_truth_ratio=_floats(r_tr),
        retain_prob=_floats(r_prob),
        retain_rouge_l=_floats(r_rouge),
        mia_forget={name: _floats(v) for name, v in mia_f.items()},
        mia_holdout={name: _floats(v) for name, v in mia_h.items()},
        settings=settings,
        provenance=Provenance.of(subject, "standard_metrics", **settings),
    )


def compare_standard_metrics(unlearned: StandardMetrics, reference: StandardMetrics) -> StandardComparison:
    """TOFU's forget quality and MUSE's PrivLeak of ``unlearned`` against the retain-only ``reference``.

    Args:
        unlearned: :func:`standard_metrics` of the audited model.
        reference: :func:`standard_metrics` of the retain-only model, same items and settings.

    Returns:
        The :class:`StandardComparison`.

    Raises:
        InputError: The two were computed on other items, answers or settings.
    """
    where = "compare_standard_metrics"
    for name in ("forget_ids", "holdout_ids"):
        if getattr(unlearned, name) != getattr(reference, name):
            raise InputError(
                f"the two results have different {name}", source=where, fix="run standard_metrics with equal arguments"
            )
    for key in ("variants_digest", "k", "tokens"):
        if unlearned.settings.get(key) != reference.settings.get(key):
            raise InputError(
                f"the two results differ in {key!r} ({unlearned.settings.get(key)!r} vs "
                f"{reference.settings.get(key)!r})",
                source=where,
                fix="run standard_metrics with equal arguments and items",
            )
    auc, auc_ref = unlearned.mia_auc(), reference.mia_auc()
    leak = {
        name: math.nan if math.isnan(auc[name]) or math.isnan(auc_ref[name]) else privleak(auc[name], auc_ref[name])
        for name in auc
    }
    return StandardComparison(
        forget_quality=forget_quality(unlearned.forget_truth_ratio, reference.forget_truth_ratio),
        auc=auc,
        auc_reference=auc_ref,
        privleak=leak,
        model_utility=unlearned.model_utility(),
        model_utility_reference=reference.model_utility(),
        n_forget=len(unlearned.forget_ids),
        n_holdout=len(unlearned.holdout_ids),
        model=unlearned.provenance.model if unlearned.provenance else "",
        reference_model=reference.provenance.model if reference.provenance else "",
    )
