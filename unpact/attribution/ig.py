"""Integrated gradients of the answer log-probability w.r.t. the prompt token embeddings.

The output of the token-embedding module is interpolated between a baseline ``x'`` and the input
``x`` *at the prompt positions only* (BOS and answer tokens, and position embeddings, stay as they
are), and ``attr_i = (x_i - x'_i) . sum_k w_k dF(x' + alpha_k (x - x'))/dx_i`` with captum's quadrature
nodes ``alpha_k`` and weights ``w_k`` (``method``: ``"gausslegendre"``, ``"riemann_left"``,
``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``). One IG run attributes the whole
multi-token answer (captum's ``LLMGradientAttribution`` runs one IG per answer token). Many examples
and many alphas share one forward/backward, in chunks sized to a memory budget (examples sorted by
length, each chunk cut to its longest row); the model's parameters never require gradients, so
autograd keeps only what the input gradient needs. Completeness error
``sum_i attr_i - (F(x) - F(x'))`` is reported; it shrinks as ``n_steps`` grows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from unpact._devices import require_gradients
from unpact.attribution._batching import (
    Target,
    answer_index,
    answer_logprobs,
    check_target,
    encode_all,
    make_result,
    pad_rows,
    progress_bar,
    reduce_answer,
)
from unpact.attribution.results import Attribution
from unpact.data import Encoded, Example, fill_id
from unpact.errors import InputError, UnknownNameError, UnsupportedFeatureError, check_positive
from unpact.models import Subject, frozen
from unpact.provenance import Provenance

logger = logging.getLogger(__name__)

__all__ = [
    "integrated_gradients",
    "ig_nodes",
    "default_memory_budget_mb",
    "row_bytes",
    "IG_METHODS",
    "BASELINES",
    "DEFAULT_N_STEPS",
]

IG_METHODS: tuple[str, ...] = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
)
BASELINES: tuple[str, ...] = ("pad", "eos", "bos", "unk", "mask", "zero")
DEFAULT_N_STEPS = 50
# Activations a forward keeps for the input gradient, per token and layer, in d_model-sized vectors:
# measured with saved-tensor hooks at 24 (GPT-2), 14 (Llama) and 9 (GPT-NeoX), plus the backward's
# transient gradients (tests/test_attribution.py checks the estimate stays above the measurement).
_ACT_VECTORS_PER_LAYER = 28
# Vectors per token a no-grad forward holds at once (a block's input, output and MLP hidden state).
_NO_GRAD_VECTORS = 8
# Default activation budget: this fraction of the weights' bytes, at least _MIN_BUDGET_MB.
_BUDGET_FRACTION = 0.5
_MIN_BUDGET_MB = 64.0


def ig_nodes(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes ``alphas`` and weights, each ``(n_steps,)``, of the IG ``method`` on ``[0, 1]``.

    The same numbers as captum's ``approximation_parameters``: Gauss-Legendre nodes and weights
    mapped from ``[-1, 1]`` to ``[0, 1]``; Riemann sums with ``n_steps`` equal steps of ``1 / n_steps``
    (halved at both ends for ``riemann_trapezoid``) at the left ends, right ends or midpoints of the
    intervals, or at ``n_steps`` evenly spaced points from 0 to 1 (trapezoid). Riemann nodes are
    computed with ``torch.linspace`` in torch's default dtype, exactly as captum does.

    Raises:
        UnknownNameError: Unknown method.
        InputError: ``n_steps < 1`` (``< 2`` for the Riemann rules).
    """
    if method not in IG_METHODS:
        raise UnknownNameError(
            f"unknown IG method {method!r}", source="method", fix=f"choose from {', '.join(IG_METHODS)}"
        )
    n = check_positive("n_steps", n_steps, where="integrated gradients")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1 + nodes), 0.5 * weights
    if n < 2:
        raise InputError(
            f"n_steps must be >= 2 for {method}, got {n}",
            source="integrated gradients",
            fix="use more steps or method='gausslegendre'",
        )
    ends = {
        "riemann_left": (0.0, 1 - 1 / n),
        "riemann_right": (1 / n, 1.0),
        "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
        "riemann_trapezoid": (0.0, 1.0),
    }[method]
    alphas = np.asarray(torch.linspace(ends[0], ends[1], n).tolist(), dtype=np.float64)
    weights = np.full(n, 1 / n, dtype=np.float64)
    if method == "riemann_trapezoid":
        weights[[0, -1]] /= 2
    return alphas, weights


def _baseline_token(subject: Subject, baseline: str | int) -> int | None:
    """Token id for a baseline name (``None`` for the zero embedding)."""
    if isinstance(baseline, (int, np.integer)) and not isinstance(baseline, bool):
        if not 0 <= int(baseline) < subject.vocab_size:
            raise InputError(
                f"baseline token id {baseline} is outside the vocabulary (0..{subject.vocab_size - 1})",
                source="baseline",
                fix=f"choose a token id in range or one of {', '.join(BASELINES)}",
            )
        return int(baseline)
    if baseline == "zero":
        return None
    if baseline not in BASELINES:
        raise UnknownNameError(
            f"unknown baseline {baseline!r}",
            source="baseline",
            fix=f"choose from {', '.join(BASELINES)} or pass a token id",
        )
    tok = subject.tokenizer
    value = getattr(tok, f"{baseline}_token_id", None)
    if value is None and baseline == "pad":
        # The default baseline on a tokenizer with no pad token (GPT-2, Llama): eos, then unk, then zeros.
        for alt in ("eos", "unk"):
            alt_id = getattr(tok, f"{alt}_token_id", None)
            if alt_id is not None:
                logger.warning("the tokenizer has no pad token; using the %s token as the IG baseline", alt)
                return int(alt_id)
        logger.warning("the tokenizer has no pad, eos or unk token; using the zero embedding as the IG baseline")
        return None
    if value is None:
        have = [b for b in BASELINES[:-1] if getattr(tok, f"{b}_token_id", None) is not None]
        raise InputError(
            f"the tokenizer has no {baseline} token",
            source="baseline",
            fix=f"use one of {', '.join(have + ['zero'])} or pass a token id as baseline",
        )
    return int(value)


def default_memory_budget_mb(subject: Subject) -> float:
    """The default activation budget of :func:`integrated_gradients`, in MB.

    Half the model's weight bytes, at least 64 MB. Any forward holds the weights, so IG's peak stays
    under 1.5x the peak of a plain inference forward over the same examples (``bench/attribution.py``
    measures both).
    """
    weights = sum(p.numel() * p.element_size() for p in subject.model.parameters())
    return max(_MIN_BUDGET_MB, _BUDGET_FRACTION * weights / 2**20)


def row_bytes(subject: Subject, seq: int, n_answer: int, *, grad: bool = True) -> int:
    """Estimated bytes one (example, alpha) row of a forward holds.

    Args:
        subject: The model.
        seq: Tokens in the row.
        n_answer: Answer positions sent through the unembedding.
        grad: A forward whose input gradient follows (else a no-grad forward).

    Returns:
        With ``grad``: ``seq`` tokens x ``n_layers`` x (``_ACT_VECTORS_PER_LAYER`` d_model-vectors +
        two attention rows per head) in the model's dtype, plus the float32 logits, log-softmax and
        their gradient at the answer positions. Without: a few d_model-vectors per token and two
        float32 ``(n_answer, vocab)`` tensors.
    """
    elt = torch.empty((), dtype=subject.dtype).element_size()
    d, vocab = subject.d_model, subject.vocab_size
    if not grad:
        return seq * (_NO_GRAD_VECTORS * d + 2 * subject.n_heads * seq) * elt + 2 * n_answer * vocab * 4
    per_token = subject.n_layers * (_ACT_VECTORS_PER_LAYER * d + 2 * subject.n_heads * seq) * elt
    return seq * per_token + 3 * n_answer * vocab * 4


def integrated_gradients(
    subject: Subject,
    examples: Sequence[Example],
    *,
    n_steps: int = DEFAULT_N_STEPS,
    method: str = "gausslegendre",
    baseline: str | int = "pad",
    target: Target = "mean",
    internal_batch_size: int | None = None,
    memory_budget_mb: float | None = None,
    batch_size: int = 16,
    per_answer_token: bool = False,
    progress: bool = False,
) -> list[Attribution]:
    """Integrated gradients of the answer log-probability w.r.t. the prompt token embeddings.

    Examples are sorted by length; ``batch_size`` of them at a time are embedded, and their
    ``examples x n_steps`` interpolation rows go through forward/backward passes in chunks of
    ``internal_batch_size`` rows, each cut to its longest row. Only the gradient w.r.t. the
    interpolated embeddings is computed; the results do not depend on the chunking (up to float
    round-off).

    Args:
        subject: The model (its weights, mode and grad flags are left as they were).
        examples: Examples to attribute; their answers are teacher-forced.
        n_steps: Number of quadrature nodes (captum's ``n_steps``).
        method: ``"gausslegendre"`` (default, converges fastest) or ``"riemann_{left,right,middle,trapezoid}"``.
        baseline: What replaces each prompt token at ``alpha = 0``: ``"pad"``, ``"eos"``, ``"bos"``,
            ``"unk"``, ``"mask"`` (the tokenizer's token of that name), ``"zero"`` (zero embedding)
            or a token id.
        target: ``"mean"`` (unPact's ``LP``) or ``"sum"`` of the answer tokens' log-probabilities.
        internal_batch_size: Rows (example x alpha) per forward pass; overrides ``memory_budget_mb``.
        memory_budget_mb: About how many MB the activations kept for one backward pass may take;
            the rows per forward follow from it (:func:`row_bytes`). Default
            :func:`default_memory_budget_mb` (half the weights' bytes, at least 64 MB).
        batch_size: Examples embedded and padded together.
        per_answer_token: Also compute the ``(n_answer, n_prompt)`` matrix (one extra backward per
            answer token on the same forward). ``token_scores`` then equal its mean (or sum) over rows.
        progress: Show a progress bar.

    Returns:
        One :class:`Attribution` per example, in order.

    Raises:
        UnknownNameError: Unknown method or baseline name.
        InputError: Bad target, step, batch sizes or budget, a baseline token the tokenizer lacks,
            malformed examples (empty prompt, too long for the model, ...) or NaN/inf logits.
        UnsupportedFeatureError: The architecture's detection found that gradients through its
            input embeddings are not usable (e.g. CTRL scales the embedding output in place); the message
            says why. Leave-one-out needs no gradients.
    """
    require_gradients(subject.model, "integrated gradients")
    why = subject.spec.disabled_reason("ig")
    if why is not None:
        raise UnsupportedFeatureError(
            f"integrated gradients are off for {subject.spec.model_type}: {why}",
            source="integrated_gradients",
            fix="use leave-one-out (method='loo', --attribution loo), which needs no gradients",
        )
    check_target(target)
    alphas_np, weights_np = ig_nodes(method, n_steps)
    if internal_batch_size is not None:
        check_positive("internal_batch_size", internal_batch_size, where="integrated_gradients")
    if memory_budget_mb is not None and not memory_budget_mb > 0:
        raise InputError(
            f"memory_budget_mb must be > 0, got {memory_budget_mb!r}",
            source="integrated_gradients",
            fix="give a positive number of MB (or leave it unset)",
        )
    check_positive("batch_size", batch_size, where="integrated_gradients")
    base_tok = _baseline_token(subject, baseline)
    encoded = encode_all(subject, examples)
    budget = float(memory_budget_mb or default_memory_budget_mb(subject)) * 2**20
    prov = Provenance.of(
        subject,
        "integrated_gradients",
        n_steps=n_steps,
        ig_method=method,
        baseline=baseline,
        target=target,
        per_answer_token=per_answer_token,
    )
    # Similar lengths together: less padding, and chunks of short rows are cut shorter.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    results: list[Attribution | None] = [None] * len(encoded)
    nodes = (alphas_np, weights_np)
    with frozen(subject.model):
        starts = range(0, len(order), batch_size)
        for s in progress_bar(starts, progress, "integrated gradients", total=len(starts)):
            idx = order[s : s + batch_size]
            batch = [(examples[i], encoded[i]) for i in idx]
            out = _ig_batch(
                subject, batch, nodes, base_tok, target, internal_batch_size, budget, per_answer_token, prov
            )
            for i, r in zip(idx, out):
                results[i] = r
    return [r for r in results if r is not None]


def _values(
    subject: Subject,
    ids: torch.Tensor,
    mask: torch.Tensor,
    pos: torch.Tensor,
    tgt: torch.Tensor,
    valid: torch.Tensor,
    embs: torch.Tensor,
    target: str,
    rows_per_forward: int,
) -> torch.Tensor:
    """``F`` of ``(rows, seq, d)`` embeddings in no-grad chunks: ``(rows,)`` float64 on the CPU."""
    out = []
    with torch.no_grad():
        for r0 in range(0, len(ids), rows_per_forward):
            r = slice(r0, r0 + rows_per_forward)
            width = int(mask[r].sum(1).max())  # padding past the longest row is dropped
            lp = answer_logprobs(subject, ids[r, :width], mask[r, :width], pos[r], tgt[r], embs[r, :width])
            out.append(reduce_answer(lp, valid[r], target).double().cpu())
    return torch.cat(out)


def _ig_batch(
    subject: Subject,
    chunk: list[tuple[Example, Encoded]],
    nodes: tuple[np.ndarray, np.ndarray],
    base_tok: int | None,
    target: str,
    internal_batch_size: int | None,
    budget: float,
    per_answer_token: bool,
    prov: Provenance,
) -> list[Attribution]:
    """IG of one batch of examples sorted by length (shortest first)."""
    dev = subject.device
    encs = [e for _, e in chunk]
    ids, mask = pad_rows([e.input_ids for e in encs], fill_id(subject.tokenizer))
    lengths = [len(e.input_ids) for e in encs]
    n_ex, seq = ids.shape
    prompt_mask = torch.zeros((n_ex, seq), dtype=torch.bool)
    for i, e in enumerate(encs):
        prompt_mask[i, e.prompt_span[0] : e.prompt_span[1]] = True
    pos, tgt, valid = answer_index([e.answer_span for e in encs], ids)
    t_max = pos.shape[1]
    rows_per_forward = internal_batch_size or max(1, int(budget // row_bytes(subject, seq, t_max)))
    rows_no_grad = internal_batch_size or max(1, int(budget // row_bytes(subject, seq, t_max, grad=False)))
    with torch.no_grad():
        x_emb = subject.embed(ids.to(dev))  # (n_ex, seq, d)
        if base_tok is None:
            b_emb = torch.where(prompt_mask.to(dev)[..., None], torch.zeros_like(x_emb), x_emb)
        else:
            b_emb = subject.embed(torch.where(prompt_mask, base_tok, ids).to(dev))
        # The path is built and its integral accumulated in float32 (at least): in half precision the
        # quadrature nodes, the interpolation and the gradient . delta sums would round to 8 bits.
        acc_dt = torch.promote_types(x_emb.dtype, torch.float32)
        b_acc = b_emb.to(acc_dt)
        delta = x_emb.to(acc_dt) - b_acc  # zero outside the prompt positions
    # F(x) and F(x'), (n_ex,) each.
    f2 = _values(
        subject,
        ids.repeat(2, 1),
        mask.repeat(2, 1),
        pos.repeat(2, 1),
        tgt.repeat(2, 1),
        valid.repeat(2, 1),
        torch.cat([x_emb, b_emb]),
        target,
        rows_no_grad,
    )
    f_x, f_b = f2[:n_ex], f2[n_ex:]

    alphas_np, weights_np = nodes
    n_steps = len(alphas_np)
    alphas = torch.tensor(alphas_np, dtype=acc_dt, device=dev)
    weights = torch.tensor(weights_np, dtype=torch.float64)
    # Accumulators: (n_ex, seq) for the target, (n_ex, T, seq) for the matrix.
    acc = torch.zeros((n_ex, seq), dtype=torch.float64)
    acc_m = torch.zeros((n_ex, t_max, seq), dtype=torch.float64) if per_answer_token else None
    n_rows = n_ex * n_steps
    for r0 in range(0, n_rows, rows_per_forward):
        r = torch.arange(r0, min(n_rows, r0 + rows_per_forward))
        ex_i, st_i = r // n_steps, r % n_steps  # rows are example-major
        width = max(lengths[int(ex_i[0]) : int(ex_i[-1]) + 1])  # padding past the longest row is dropped
        ex_d = ex_i.to(dev)
        d_rows = delta[ex_d, :width]  # (rows, width, d)
        a = alphas[st_i.to(dev)][:, None, None]
        z = (b_acc[ex_d, :width] + a * d_rows).requires_grad_(True)  # float32 leaf; the model sees its dtype
        w = weights[st_i].to(device=dev, dtype=torch.float32)
        v = valid[ex_i].to(dev)
        with torch.enable_grad():
            lp = answer_logprobs(  # (rows, T)
                subject, ids[ex_i, :width], mask[ex_i, :width], pos[ex_i], tgt[ex_i], z.to(x_emb.dtype)
            )
            if acc_m is not None:
                for k in range(t_max):
                    (g,) = torch.autograd.grad((lp[:, k] * v[:, k] * w).sum(), z, retain_graph=k < t_max - 1)
                    contrib = (g * d_rows).sum(-1).cpu().double() * v[:, k, None].cpu()
                    acc_m[:, k, :width].index_add_(0, ex_i, contrib)
            else:
                (g,) = torch.autograd.grad((reduce_answer(lp, v, target) * w).sum(), z)
                acc[:, :width].index_add_(0, ex_i, (g * d_rows).sum(-1).cpu().double())
        del z, lp
    results = []
    for i, (ex, enc) in enumerate(chunk):
        p0, p1 = enc.prompt_span
        n_ans = enc.answer_span[1] - enc.answer_span[0]
        matrix = None
        if acc_m is not None:
            m = acc_m[i, :n_ans, p0:p1]
            matrix = m.numpy()
            tok_scores = (m.mean(0) if target == "mean" else m.sum(0)).numpy()
        else:
            tok_scores = acc[i, p0:p1].numpy()
        results.append(
            make_result(
                subject,
                ex,
                enc,
                tok_scores,
                method="ig",
                target=target,
                value=float(f_x[i]),
                baseline_value=float(f_b[i]),
                matrix=matrix,
                provenance=prov,
            )
        )
    return results
