"""Prompt attribution: which prompt tokens make the model give its answer?

Two attributions of the teacher-forced answer log-probability

``LP(x, y) = (1/T) * sum_k log p(y_k | x, y_<k)``  (``target="mean"``; ``"sum"`` drops the ``1/T``)

to the prompt tokens ``x_i``:

* **Integrated gradients** (:func:`integrated_gradients`) on the input embeddings. The output of the
  token-embedding module is interpolated between a baseline ``x'`` and the input ``x`` *at the prompt
  positions only* (BOS and answer tokens, and position embeddings, stay as they are), and
  ``attr_i = (x_i - x'_i) . sum_k w_k dF(x' + alpha_k (x - x'))/dx_i`` with captum's quadrature
  nodes ``alpha_k`` and weights ``w_k`` (``method``: ``"gausslegendre"``, ``"riemann_left"``,
  ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``). One IG run attributes the whole
  multi-token answer (captum's ``LLMGradientAttribution`` runs one IG per answer token). Many examples
  and many alphas share one forward/backward, in chunks sized to a memory budget
  (``memory_budget_mb``); the model's parameters never require gradients, so autograd keeps only
  what the input gradient needs. Completeness error
  ``sum_i attr_i - (F(x) - F(x'))`` is reported; it shrinks as ``n_steps`` grows.
* **Leave-one-out** (:func:`leave_one_out`), the unPact paper's contribution
  ``C(x_i, y) = LP(x, y) - LP(x without x_i, y)``: each prompt token is deleted in turn (the
  sequence gets one token shorter), and all deletions of a batch of examples run in one forward.

Both return :class:`Attribution` objects: prompt tokens and their scores, the same summed per word
(keywords are words, see :mod:`unpact.words`), optionally the answer-token x prompt-token matrix, and
provenance. :meth:`Attribution.diff` compares the same example on two models (base vs unlearned).

To attribute the model's own generation instead of the gold answer, pass examples whose ``answer``
is the generated text (e.g. from ``unpact.evaluate.generate``).

Modules: :mod:`~unpact.attribution.ig` (integrated gradients), :mod:`~unpact.attribution.loo`
(leave-one-out; the file names are the ``method`` tags), :mod:`~unpact.attribution.results` (the result
types and :func:`diff`), ``_batching`` (encoding, padding and answer log-probs both share). Import the
public names from here.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from unpact.attribution._batching import Target as Target
from unpact.attribution.ig import BASELINES, IG_METHODS, ig_nodes, integrated_gradients
from unpact.attribution.ig import DEFAULT_N_STEPS as DEFAULT_N_STEPS
from unpact.attribution.loo import leave_one_out
from unpact.attribution.results import Attribution, AttributionDiff, diff
from unpact.data import Example
from unpact.errors import InputError, UnknownNameError
from unpact.models import Subject

__all__ = [
    "Attribution",
    "AttributionDiff",
    "integrated_gradients",
    "leave_one_out",
    "attribute",
    "diff",
    "ig_nodes",
    "IG_METHODS",
    "BASELINES",
]


def attribute(subject: Subject, example: Example, method: Literal["ig", "loo"] = "ig", **kw: Any) -> Attribution:
    """Attribute one example with integrated gradients (``"ig"``) or leave-one-out (``"loo"``).

    Keyword arguments go to :func:`integrated_gradients` or :func:`leave_one_out`; since ``method``
    names the attribution here, IG's quadrature rule is passed as ``ig_method``.

    Raises:
        UnknownNameError: ``method`` is neither ``"ig"`` nor ``"loo"``.
        InputError: An argument the chosen method does not take (the message lists its arguments),
            and everything :func:`integrated_gradients` / :func:`leave_one_out` raise.
    """
    if isinstance(example, (list, tuple)):
        raise InputError(
            "attribute() takes one Example",
            source="example",
            fix="use integrated_gradients or leave_one_out for a list of examples",
        )
    if method == "ig":
        if "ig_method" in kw:
            kw["method"] = kw.pop("ig_method")
        accepted = [p for p in inspect.signature(integrated_gradients).parameters if p not in ("subject", "examples")]
        unknown = sorted(set(kw) - set(accepted))
        if unknown:
            shown = ", ".join(a if a != "method" else "ig_method" for a in accepted)
            raise InputError(
                f"integrated gradients takes no argument {', '.join(unknown)}",
                source="attribute",
                fix=f"its arguments are {shown}",
            )
        return integrated_gradients(subject, [example], **kw)[0]
    if method == "loo":
        return leave_one_out(subject, [example], **kw)[0]
    hint = f"; {method!r} is an IG quadrature rule: pass it as ig_method" if method in IG_METHODS else ""
    raise UnknownNameError(
        f"unknown attribution method {method!r}{hint}",
        source="method",
        fix="choose 'ig' (integrated gradients) or 'loo' (leave-one-out)",
    )
