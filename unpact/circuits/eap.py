"""Edge attribution patching (EAP, EAP-IG), exact edge patching and circuit faithfulness."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from unpact._devices import module_device, require_gradients
from unpact.circuits._graph import Graph, Patcher
from unpact.circuits._inputs import Metric, Prepared, metric_from_logits, prepare
from unpact.circuits.results import Circuit, EdgeScores, Faithfulness
from unpact.data import Example
from unpact.errors import InputError, UnknownNameError, check_positive
from unpact.models import Subject, check_finite, frozen
from unpact.provenance import Provenance

logger = logging.getLogger(__name__)

__all__ = ["edge_attribution_patching", "exact_edge_patching", "faithfulness", "faithfulness_curve"]

Method = Literal["eap", "eap-ig"]


def _logits(subject: Subject, ids: torch.Tensor, patcher: Patcher) -> torch.Tensor:
    with patcher.attached():
        logits = subject.model(input_ids=ids.to(subject.device), use_cache=False).logits
    return check_finite(subject, logits)


def _metric(prep: Prepared, logits: torch.Tensor, metric: Metric) -> torch.Tensor:
    a0, a1 = prep.answer_span
    return metric_from_logits(logits, prep.answer_span, prep.input_ids[a0:a1], metric, prep.corrupt_token)


def _outputs(
    subject: Subject, graph: Graph, ids: torch.Tensor, prep: Prepared, metric: Metric
) -> tuple[torch.Tensor, float]:
    """Upstream outputs ``(seq, n_up, d_model)`` and the metric of one unpatched pass."""
    p = Patcher(subject, graph)
    with torch.no_grad():
        logits = _logits(subject, ids[None], p)
    return p.outputs()[0].detach(), float(_metric(prep, logits, metric)[0])


def _run_plans(
    subject: Subject,
    graph: Graph,
    prep: Prepared,
    corrupt: torch.Tensor,
    plans: np.ndarray,
    metric: Metric,
    batch_size: int,
) -> np.ndarray:
    """Metric of the clean input with the edges of each plan patched to corrupt: ``(n_plans,)``."""
    out = np.empty(len(plans), dtype=np.float64)
    ids = prep.input_ids
    valid = torch.as_tensor(graph.valid)
    for start in range(0, len(plans), batch_size):
        chunk = torch.as_tensor(plans[start : start + batch_size]) & valid
        p = Patcher(subject, graph, plan=chunk.to(subject.device), corrupt=corrupt)
        with torch.no_grad():
            logits = _logits(subject, ids[None].expand(len(chunk), -1), p)
        out[start : start + len(chunk)] = _metric(prep, logits, metric).double().cpu().numpy()
    return out


def _corrupt_outputs(
    subject: Subject, graph: Graph, prep: Prepared, clean: torch.Tensor, metric: Metric, batch_size: int
) -> tuple[torch.Tensor, float]:
    """Corrupt upstream outputs ``(seq, n_up, d_model)`` and the corrupt metric."""
    if prep.corruption == "mean":
        corr = clean.mean(0, keepdim=True).expand_as(clean).contiguous()
        m = _run_plans(subject, graph, prep, corr, graph.valid[None], metric, batch_size)[0]
        return corr, float(m)
    return _outputs(subject, graph, prep.corrupt_ids, prep, metric)


def _node_devices(subject: Subject, graph: Graph) -> list[torch.device]:
    """Per downstream node (attention and MLP input of each block, then the logits): its block's device."""
    blocks = [module_device(b) for b in subject.blocks]
    return [blocks[min(v // 2, len(blocks) - 1)] for v in range(graph.n_down)]  # logits: added after the last MLP


def _input_grads(
    subject: Subject, graph: Graph, prep: Prepared, metric: Metric, x0: torch.Tensor | None, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mean over rows of ``x0`` of ``dMetric/d(input_v)`` through node ``v`` only.

    Args:
        x0: ``(m, seq, d_model)`` block-0 inputs (EAP-IG path) or ``None`` (the clean input).

    Returns:
        ``(grads (n_down, seq, d_model), outputs of the last row (seq, n_up, d_model), metric of the last row)``.
    """
    seq = prep.input_ids.shape[0]
    d_model = subject.d_model
    rows = 1 if x0 is None else x0.shape[0]
    acc = torch.promote_types(subject.dtype, torch.float32)
    total = torch.zeros(graph.n_down, seq, d_model, dtype=acc, device=subject.device)
    devs = _node_devices(subject, graph)
    last_out, last_metric = None, float("nan")
    for start in range(0, rows, batch_size):
        b = min(batch_size, rows - start)
        deltas = {  # each on the device of the module it is added in (hooks would move it there anyway)
            v: torch.zeros(b, seq, d_model, dtype=subject.dtype, device=devs[v], requires_grad=True)
            for v in range(graph.n_down)
        }
        chunk = None if x0 is None else x0[start : start + b]
        p = Patcher(subject, graph, deltas=deltas, x0=chunk)
        with torch.enable_grad():
            logits = _logits(subject, prep.input_ids[None].expand(b, -1), p)
            m = _metric(prep, logits, metric)
            grads = torch.autograd.grad(m.sum(), [deltas[v] for v in range(graph.n_down)], allow_unused=True)
        for v, g in enumerate(grads):
            if g is not None:
                total[v] += g.to(total.device, acc).sum(0)
        last_out = p.outputs()[-1].detach()
        last_metric = float(m[-1].detach())
    assert last_out is not None
    return total / rows, last_out, last_metric


def edge_attribution_patching(
    subject: Subject,
    example: Example,
    *,
    corrupt: str | Example | Sequence[Example] | Literal["mean"] | None = None,
    method: Method = "eap",
    metric: Metric = "logprob",
    corrupt_answer: str | None = None,
    n_steps: int = 16,
    internal_batch_size: int = 16,
    seed: int = 0,
) -> EdgeScores:
    """Score every edge of the model's graph for one example (see :mod:`unpact.circuits`).

    ``score(u -> v) = sum_pos (a_u(corrupt) - a_u(clean)) . dMetric/d(input_v)``, the gradient
    taken through node ``v`` only: at the clean input (EAP: one clean forward+backward, one
    corrupt forward) or averaged over ``n_steps`` points ``k / n_steps`` (k = 1..n_steps) on the
    straight line from the corrupt to the clean block-0 input (EAP-IG).

    Args:
        subject: The model (not changed: weights, mode and grad flags are restored, no hooks left).
        example: The clean prompt and answer (the answer is teacher-forced).
        corrupt: A corrupt prompt (same token length); a donor :class:`Example` or a sequence of
            donors whose subject replaces ``example.subject`` in the prompt (same token length);
            ``"mean"`` for mean ablation over positions; ``None``: mean ablation.
        method: ``"eap"`` or ``"eap-ig"`` (needs a corrupt input, not ``"mean"``).
        metric: ``"logprob"`` (mean answer log-probability) or ``"logit_diff"`` (first answer token
            logit minus the corrupt answer's, needs ``corrupt_answer`` or a donor).
        corrupt_answer: The corrupt answer for ``logit_diff``.
        n_steps: EAP-IG interpolation steps.
        internal_batch_size: Interpolation steps per forward pass.
        seed: Order in which donors are tried.

    Returns:
        :class:`EdgeScores` with ``scores (n_up, n_down)`` and ``position_scores (seq, n_up, n_down)``.

    Raises:
        InputError: Bad corrupt input (see :func:`unpact.circuits._inputs.prepare`) or arguments,
            or NaN/inf logits.
        UnsupportedFeatureError: For architectures whose residual writes are not additive
            (``ArchSpec.additive_writes`` False, e.g. Gemma 2) or post-LN configurations (also a
            ``NotImplementedError``).
    """
    if method not in ("eap", "eap-ig"):
        raise UnknownNameError(f"unknown method {method!r}", source="method", fix="choose 'eap' or 'eap-ig'")
    check_positive("n_steps", n_steps, where="edge_attribution_patching")
    check_positive("internal_batch_size", internal_batch_size, where="edge_attribution_patching")
    require_gradients(subject.model, "edge attribution patching")
    t0 = time.perf_counter()
    graph = Graph.of(subject)
    prep = prepare(subject, example, corrupt=corrupt, metric=metric, corrupt_answer=corrupt_answer, seed=seed)
    if method == "eap-ig" and prep.corruption == "mean":
        raise InputError(
            "EAP-IG interpolates between a corrupt and the clean input; give a corrupt prompt or donors, "
            "or use method='eap' with mean ablation"
        )
    with frozen(subject.model):
        if method == "eap":
            grads, clean, m_clean = _input_grads(subject, graph, prep, metric, None, internal_batch_size)
            corr, m_corr = _corrupt_outputs(subject, graph, prep, clean, metric, internal_batch_size)
        else:
            clean, m_clean = _outputs(subject, graph, prep.input_ids, prep, metric)
            corr, m_corr = _corrupt_outputs(subject, graph, prep, clean, metric, internal_batch_size)
            alphas = torch.arange(1, n_steps + 1, dtype=torch.float32, device=subject.device) / n_steps
            x_clean, x_corr = clean[:, 0], corr[:, 0]
            x0 = x_corr[None] + alphas[:, None, None].to(clean.dtype) * (x_clean - x_corr)[None]
            grads, _, _ = _input_grads(subject, graph, prep, metric, x0, internal_batch_size)
    delta = (corr - clean).to(grads.dtype)  # (seq, n_up, d)
    pos = torch.einsum("sud,vsd->suv", delta, grads).cpu().numpy().astype(np.float32)
    pos *= graph.valid[None]
    tok = subject.tokenizer
    ids = prep.input_ids.numpy()
    result = EdgeScores(
        upstream=list(graph.upstream),
        downstream=list(graph.downstream),
        scores=pos.sum(0),
        valid=graph.valid.copy(),
        position_scores=pos,
        metric=metric,
        metric_clean=m_clean,
        metric_corrupt=m_corr,
        method=method,
        corruption=prep.corruption,
        example=example,
        corrupt_prompt=prep.corrupt_prompt,
        tokens=[tok.decode([int(i)]) for i in ids],
        input_ids=ids,
        corrupt_ids=prep.corrupt_ids.numpy(),
        answer_span=prep.answer_span,
        key_positions=prep.key_positions,
        corrupt_token=prep.corrupt_token,
        seconds=time.perf_counter() - t0,
        provenance=Provenance.of(
            subject,
            f"circuits.{method}",
            metric=metric,
            corruption=prep.corruption,
            corrupt_prompt=prep.corrupt_prompt,
            donor=prep.donor,
            n_steps=n_steps if method == "eap-ig" else None,
            seed=seed,
        ),
    )
    logger.info(
        "%s: %d edges in %.2fs (metric clean %.3f, corrupt %.3f)",
        method,
        result.n_edges,
        result.seconds,
        m_clean,
        m_corr,
    )
    return result


def _context(subject: Subject, scores: EdgeScores) -> tuple[Graph, Prepared]:
    graph = Graph.of(subject)
    if list(graph.upstream) != scores.upstream or list(graph.downstream) != scores.downstream:
        raise InputError(
            "these EdgeScores belong to a model with another graph (layers/heads)",
            fix="evaluate them on a model of the same architecture and size",
        )
    if scores.provenance.weights_hash != subject.weights_hash():
        logger.info("evaluating edges scored on %s on another model (%s)", scores.provenance.model, subject.name)
    prep = Prepared(
        input_ids=torch.as_tensor(scores.input_ids),
        corrupt_ids=torch.as_tensor(scores.corrupt_ids),
        answer_span=(int(scores.answer_span[0]), int(scores.answer_span[1])),
        corruption=scores.corruption,  # type: ignore[arg-type]
        corrupt_prompt=scores.corrupt_prompt,
        key_positions=scores.key_positions,
        corrupt_token=scores.corrupt_token,
    )
    return graph, prep


def exact_edge_patching(subject: Subject, scores: EdgeScores, *, batch_size: int = 32) -> EdgeScores:
    """Ground truth for EAP: patch each edge alone (one forward per edge, batched).

    ``score(u -> v) = metric(clean, with v reading u's corrupt output) - metric(clean)``; all
    other nodes read clean outputs (nodes after ``v`` see ``v``'s changed output).

    Args:
        subject: The model.
        scores: Any :class:`EdgeScores` of the example (gives the inputs, corruption and metric).
        batch_size: Patched forward passes per batch.

    Returns:
        :class:`EdgeScores` with ``method="exact"`` and no per-position split.
    """
    check_positive("batch_size", batch_size, where="exact_edge_patching")
    t0 = time.perf_counter()
    graph, prep = _context(subject, scores)
    metric: Metric = scores.metric  # type: ignore[assignment]
    us, vs = np.nonzero(graph.valid)
    plans = np.zeros((len(us), graph.n_up, graph.n_down), dtype=bool)
    plans[np.arange(len(us)), us, vs] = True
    with frozen(subject.model):
        clean, m_clean = _outputs(subject, graph, prep.input_ids, prep, metric)
        corr, m_corr = _corrupt_outputs(subject, graph, prep, clean, metric, batch_size)
        patched = _run_plans(subject, graph, prep, corr, plans, metric, batch_size)
    out = np.zeros(graph.valid.shape, dtype=np.float32)
    out[us, vs] = patched - m_clean
    return EdgeScores(
        upstream=list(graph.upstream),
        downstream=list(graph.downstream),
        scores=out,
        valid=graph.valid.copy(),
        position_scores=None,
        metric=metric,
        metric_clean=m_clean,
        metric_corrupt=m_corr,
        method="exact",
        corruption=scores.corruption,
        example=scores.example,
        corrupt_prompt=scores.corrupt_prompt,
        tokens=list(scores.tokens),
        input_ids=scores.input_ids.copy(),
        corrupt_ids=scores.corrupt_ids.copy(),
        answer_span=(int(scores.answer_span[0]), int(scores.answer_span[1])),
        key_positions=scores.key_positions.copy(),
        corrupt_token=scores.corrupt_token,
        seconds=time.perf_counter() - t0,
        provenance=Provenance.of(
            subject, "circuits.exact", metric=metric, corruption=scores.corruption, corrupt_prompt=scores.corrupt_prompt
        ),
    )


def faithfulness_curve(subject: Subject, circuits: Sequence[Circuit], *, batch_size: int = 16) -> list[Faithfulness]:
    """:func:`faithfulness` of several circuits of the same :class:`EdgeScores`, batched."""
    check_positive("batch_size", batch_size, where="faithfulness")
    if not circuits:
        return []
    scores = circuits[0].scores
    if any(c.scores is not scores for c in circuits):
        raise InputError("faithfulness_curve expects circuits of one EdgeScores; call faithfulness() per circuit")
    graph, prep = _context(subject, scores)
    metric: Metric = scores.metric  # type: ignore[assignment]
    plans = np.stack([graph.valid & ~c.mask for c in circuits])
    with frozen(subject.model):
        clean, m_clean = _outputs(subject, graph, prep.input_ids, prep, metric)
        corr, m_corr = _corrupt_outputs(subject, graph, prep, clean, metric, batch_size)
        kept = _run_plans(subject, graph, prep, corr, plans, metric, batch_size)
    return [Faithfulness(len(c), float(k), m_clean, m_corr) for c, k in zip(circuits, kept)]


def faithfulness(subject: Subject, circuit: Circuit, *, batch_size: int = 16) -> Faithfulness:
    """Run the clean input with every edge outside ``circuit`` patched to corrupt.

    Edges inside the circuit carry their upstream node's output *in this run*; edges outside
    carry the corrupt output. ``Faithfulness.share`` is the share of the clean-vs-corrupt metric
    gap the circuit keeps (1 for the full graph, 0 for the empty circuit).

    Args:
        subject: The model (usually the one the circuit was scored on; another model of the same
            architecture evaluates the same edge set there).
        circuit: From :meth:`EdgeScores.top_k` or :meth:`EdgeScores.threshold`.
        batch_size: Unused for one circuit; kept for a uniform signature.
    """
    return faithfulness_curve(subject, [circuit], batch_size=batch_size)[0]
