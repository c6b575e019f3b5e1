"""Logit lens: what would the model predict if it stopped after layer ``l``?

Each layer's residual stream is decoded through the model's own final norm and unembedding
(``logits_l = unembed(final_norm(resid_l))``). For every layer and every position of
prompt + answer (teacher-forced), :func:`logit_lens` records the probability and rank of the gold
next token and the top-k decoded tokens. Row 0 is the embedding output entering block 0
(``resid_pre.0``: token plus position embeddings), row ``l + 1`` is the residual leaving block ``l``;
the last row is the model's own output distribution, exactly.

Position ``t`` predicts token ``t + 1``, so a sequence of ``n`` tokens has ``n - 1`` positions; the
answer positions are ``answer_start - 1 .. answer_stop - 2``. ReLearn's "cross-layer decoding" uses
this view to show gradient-ascent-style unlearning erases the answer only after the middle layers.

:meth:`LensTrajectory.diff` compares two models on the same example: change of the gold token's
probability and rank per layer, and the KL divergence between the two models' per-layer
distributions (when the trajectories kept them, see ``keep_distributions``).

**Tuned lens** (``method="tuned"``, Belrose et al. 2023): each layer's residual first goes through the
model's own trained affine translator (:class:`~unpact.representations.tuned_lens.TunedLens`, fit with
:func:`~unpact.representations.tuned_lens.fit_tuned_lens` on text without the forget items), then through
the final norm and unembedding. The trajectory records the method; :func:`lens_diff` compares only
trajectories of the same method (each model decoded through its own lens).

A :class:`~unpact.models.Subject` built from a TransformerLens ``TransformerBridge``
(``load_model(bridge)``) works the same way: the hooks sit on the bridge's underlying Hugging Face
modules.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from unpact._devices import gather, module_device
from unpact._result import SavedResult, fields_dict
from unpact.data import Example
from unpact.errors import InputError, check_items, check_positive
from unpact.hooks import run_with_cache
from unpact.models import Subject, check_finite, frozen
from unpact.provenance import Provenance
from unpact.representations.tuned_lens import TunedLens, check_lens_ok, lens_sites

logger = logging.getLogger(__name__)

__all__ = ["LensTrajectory", "LensDiff", "logit_lens", "lens_diff"]

#: The lenses :func:`logit_lens` decodes with.
LENS_METHODS: tuple[str, ...] = ("logit", "tuned")

# Keep full per-layer distributions when layers x positions x vocab is at most this many floats.
_AUTO_KEEP_MAX = 4_000_000


@dataclass
class LensTrajectory(SavedResult):
    """Logit-lens decoding of one example, layer by position (saved by :class:`~unpact._result.SavedResult`).

    ``L = n_layers + 1`` rows (embeddings, then each block's output), ``P = n_tokens - 1`` positions.

    Attributes:
        example: The example (answer teacher-forced).
        tokens: ``n_tokens`` decoded tokens of prompt + answer.
        token_ids: ``(n_tokens,)`` their ids.
        prompt_span: ``(start, stop)`` of the prompt tokens; ``answer_span`` likewise of the answer.
        layer_names: ``L`` names: ``"embed"``, ``"0"``, ..., ``str(n_layers - 1)``.
        logprob: ``(L, P)`` log-probability of the gold next token.
        rank: ``(L, P)`` its rank (0 = top-1).
        topk_ids: ``(L, P, k)`` top-k predicted token ids; ``topk_logprob`` their log-probabilities;
            ``topk_tokens`` their decoded strings.
        kl_to_final: ``(L, P)`` ``KL(final || layer)`` in nats (0 on the last row).
        entropy: ``(L, P)`` entropy of each layer's distribution in nats.
        logprobs: ``(L, P, vocab)`` full log-distributions (float32), or ``None`` if not kept.
        provenance: Model, weights hash, method and arguments.
        method: The lens: ``"logit"`` or ``"tuned"`` (trajectories saved before the tuned lens load as ``"logit"``).
    """

    example: Example
    tokens: list[str]
    token_ids: np.ndarray
    prompt_span: tuple[int, int]
    answer_span: tuple[int, int]
    layer_names: list[str]
    logprob: np.ndarray
    rank: np.ndarray
    topk_ids: np.ndarray
    topk_logprob: np.ndarray
    topk_tokens: np.ndarray
    kl_to_final: np.ndarray
    entropy: np.ndarray
    logprobs: np.ndarray | None = None
    provenance: Provenance | None = None
    method: str = "logit"

    # ----- views --------------------------------------------------------------------------------
    @property
    def prob(self) -> np.ndarray:
        """``(L, P)`` probability of the gold next token."""
        return np.exp(self.logprob)

    @property
    def answer_positions(self) -> np.ndarray:
        """Positions predicting the answer tokens, ``(n_answer,)``."""
        return np.arange(self.answer_span[0] - 1, self.answer_span[1] - 1)

    def answer_prob(self) -> np.ndarray:
        """``(L, n_answer)`` probability of each gold answer token, per layer."""
        return self.prob[:, self.answer_positions]

    def answer_rank(self) -> np.ndarray:
        """``(L, n_answer)`` rank of each gold answer token, per layer."""
        return self.rank[:, self.answer_positions]

    def answer_logprob(self) -> np.ndarray:
        """``(L,)`` mean log-probability of the answer tokens per layer (the last row is ``LP(x, y)``)."""
        return self.logprob[:, self.answer_positions].mean(-1)

    def first_token_rank(self) -> np.ndarray:
        """``(L,)`` rank of the first answer token per layer."""
        return self.rank[:, self.answer_span[0] - 1]

    def diff(self, other: LensTrajectory) -> LensDiff:
        """Change from this trajectory to ``other`` (same example on another model)."""
        return lens_diff(self, other)

    def _repr_html_(self) -> str:
        """Jupyter rendering: rank of each gold answer token per layer, as a table (escaped)."""
        from unpact._html import result_html, table_html

        ranks = self.answer_rank()
        answer = self.tokens[self.answer_span[0] : self.answer_span[1]]
        rows = [
            {"layer": name, **{f"{j}:{tok}": int(r) for j, (tok, r) in enumerate(zip(answer, row))}}
            for name, row in zip(self.layer_names, ranks)
        ]
        fields = {"prompt": self.example.prompt, "answer": self.example.answer}
        if self.provenance is not None:
            fields["model"] = self.provenance.model
        return result_html(
            f"{self.method.capitalize()} lens of example {self.example.id} (rank of gold token; 0 = top-1)",
            fields,
            table_html(rows),
        )

    def to_dict(self, *, answer_only: bool = False) -> dict[str, Any]:
        """JSON-ready dict (without the full distributions)."""
        cols = self.answer_positions if answer_only else np.arange(self.logprob.shape[1])
        return {
            "example": self.example.to_dict(),
            "tokens": list(self.tokens),
            "prompt_span": list(self.prompt_span),
            "answer_span": list(self.answer_span),
            "layer_names": list(self.layer_names),
            "positions": cols.tolist(),
            "prob": self.prob[:, cols].tolist(),
            "rank": self.rank[:, cols].tolist(),
            "topk_tokens": [[[str(t) for t in c] for c in row] for row in self.topk_tokens[:, cols]],
            "topk_prob": np.exp(self.topk_logprob[:, cols]).tolist(),
            "kl_to_final": self.kl_to_final[:, cols].tolist(),
            "method": self.method,
            "provenance": None if self.provenance is None else self.provenance.to_dict(),
        }


@dataclass
class LensDiff:
    """Change of a logit-lens trajectory between two models on one example (``after - before``).

    Attributes:
        example: The example.
        layer_names: ``L`` layer names.
        before_model, after_model: The two models' names.
        logprob_change: ``(L, P)`` change of the gold token's log-probability.
        prob_change: ``(L, P)`` change of its probability.
        rank_change: ``(L, P)`` change of its rank (positive: the gold token fell).
        answer_prob_change: ``(L,)`` change of the mean answer-token probability.
        answer_rank_change: ``(L,)`` change of the mean answer-token rank.
        kl: ``(L, P)`` ``KL(before || after)`` of the per-layer distributions, or ``None`` when a
            trajectory was made without ``keep_distributions``.
        kl_answer: ``(L,)`` mean of ``kl`` over the answer positions, or ``None``.
        answer_span: ``(start, stop)`` of the answer tokens.
        method: The lens both trajectories used (``"logit"`` or ``"tuned"``).
    """

    example: Example
    layer_names: list[str]
    before_model: str
    after_model: str
    answer_span: tuple[int, int]
    logprob_change: np.ndarray
    prob_change: np.ndarray
    rank_change: np.ndarray
    answer_prob_change: np.ndarray
    answer_rank_change: np.ndarray
    kl: np.ndarray | None = None
    kl_answer: np.ndarray | None = None
    method: str = "logit"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return fields_dict(self)


def lens_diff(before: LensTrajectory, after: LensTrajectory) -> LensDiff:
    """Compare two trajectories of the same example (e.g. base vs unlearned model).

    Raises:
        InputError: If the token sequences, layer counts or lens methods differ.
    """
    if before.method != after.method:
        raise InputError(
            f"cannot diff a {before.method}-lens trajectory with a {after.method}-lens one: "
            "their per-layer distributions are not comparable",
            source="lens_diff",
            fix=f'decode both models with the same method (logit_lens(..., method="{before.method}"))',
        )
    if not np.array_equal(before.token_ids, after.token_ids):
        raise InputError(
            "cannot diff lens trajectories of different token sequences; use the same example and tokenizer"
        )
    if before.layer_names != after.layer_names:
        raise InputError(
            f"the models have different layers ({len(before.layer_names)} vs {len(after.layer_names)} rows)"
        )
    ans = before.answer_positions
    kl = kl_answer = None
    if before.logprobs is not None and after.logprobs is not None:
        p = before.logprobs.astype(np.float64)
        kl = (np.exp(p) * (p - after.logprobs.astype(np.float64))).sum(-1)
        kl_answer = kl[:, ans].mean(-1)
    else:
        logger.info("lens diff without KL: make both trajectories with keep_distributions=True")
    name = lambda t: t.provenance.model if t.provenance else "?"
    return LensDiff(
        example=before.example,
        layer_names=list(before.layer_names),
        before_model=name(before),
        after_model=name(after),
        answer_span=before.answer_span,
        logprob_change=after.logprob - before.logprob,
        prob_change=after.prob - before.prob,
        rank_change=after.rank - before.rank,
        answer_prob_change=after.answer_prob().mean(-1) - before.answer_prob().mean(-1),
        answer_rank_change=after.answer_rank().mean(-1) - before.answer_rank().mean(-1),
        kl=kl,
        kl_answer=kl_answer,
        method=before.method,
    )


def _layer_logprobs(subject: Subject, resid: torch.Tensor) -> torch.Tensor:
    """``(..., seq, d_model)`` residual -> ``(..., seq, vocab)`` float32 log-probabilities (NaN/inf refused)."""
    normed = subject.final_norm(resid.to(module_device(subject.final_norm)))
    logits = check_finite(subject, subject.decode_resid(normed).float(), "lens logits")
    return torch.log_softmax(logits, dim=-1)


def _translators(
    subject: Subject, method: str, tuned: TunedLens | None
) -> Callable[[int, torch.Tensor], torch.Tensor] | None:
    """The tuned lens's translators on the model's device, ``None`` for the logit lens; refuse bad combinations."""
    fix_fit = (
        "train one on this model's retain text (unpact.representations.fit_tuned_lens(subject, corpus)) "
        "or load it (TunedLens.load(path))"
    )
    if method not in LENS_METHODS:
        raise InputError(
            f"unknown lens method {method!r}", source="logit_lens", fix=f"use one of {', '.join(LENS_METHODS)}"
        )
    if method == "logit":
        if tuned is not None:
            raise InputError(
                'a tuned lens was given with method="logit"', source="logit_lens", fix='pass method="tuned" to use it'
            )
        return None
    if tuned is None:
        raise InputError('method="tuned" needs the model\'s TunedLens (tuned=...)', source="logit_lens", fix=fix_fit)
    if not isinstance(tuned, TunedLens):
        raise InputError(f"tuned must be a TunedLens, got {type(tuned).__name__}", source="logit_lens", fix=fix_fit)
    tuned.check_subject(subject, where="logit_lens")
    return tuned.translators(subject.device)


def logit_lens(
    subject: Subject,
    examples: Sequence[Example],
    *,
    top_k: int = 5,
    batch_size: int = 8,
    keep_distributions: bool | None = None,
    progress: bool = False,
    method: Literal["logit", "tuned"] = "logit",
    tuned: TunedLens | None = None,
) -> list[LensTrajectory]:
    """Decode every layer's residual stream through the final norm and unembedding.

    With ``method="tuned"`` each layer's residual ``(seq, d_model)`` first goes through its translator in
    ``tuned`` (``h @ weight[l].T + bias[l]``; the last row is the identity, so the last row is still the
    model's own distribution).

    Args:
        subject: The model (a Hugging Face model or a TransformerLens bridge via ``load_model``).
        examples: Examples; prompt + answer are fed teacher-forced.
        top_k: Number of top decoded tokens kept per layer and position.
        batch_size: Examples per forward pass.
        keep_distributions: Keep the full ``(L, P, vocab)`` log-distributions (needed for the KL in
            :meth:`LensTrajectory.diff`). Default: keep them when they hold at most 4M floats.
        progress: Show a progress bar.
        method: ``"logit"`` (the residual as it is) or ``"tuned"`` (through ``tuned``'s translators).
        tuned: The model's :class:`~unpact.representations.tuned_lens.TunedLens`; required by, and only
            allowed with, ``method="tuned"``.

    Returns:
        One :class:`LensTrajectory` per example.

    Raises:
        InputError: If ``top_k`` or ``batch_size`` is not a positive integer, for malformed
            examples, or when a layer decodes to NaN/inf logits; an unknown ``method``, ``"tuned"``
            without a lens, or a lens trained on another model or with another number of layers.
        ArchitectureError: The architecture's final norm and unembedding do not decode an earlier
            layer's residual (``ArchSpec.lens_ok`` or ``decode_ok`` False; the message says why).
    """
    check_lens_ok(subject, "logit_lens", "logit lens")
    translate = _translators(subject, method, tuned)
    check_positive("top_k", top_k, where="logit_lens")
    check_positive("batch_size", batch_size, where="logit_lens")
    if subject.tokenizer is None:
        raise InputError("this Subject has no tokenizer; load the model with its tokenizer")
    examples = check_items("examples", examples, Example, where="logit_lens")
    if not examples:
        raise InputError("no examples given")
    tok = subject.tokenizer
    k = min(top_k, subject.vocab_size)
    encoded = [subject.encode(ex) for ex in examples]
    sites, names = lens_sites(subject)
    extra = {} if tuned is None or tuned.provenance is None else {"tuned_lens_created": tuned.provenance.created}
    prov = Provenance.of(subject, f"{method}_lens", top_k=top_k, **extra)
    out: list[LensTrajectory] = []
    fill = getattr(tok, "pad_token_id", None)
    fill = int(fill if fill is not None else getattr(tok, "eos_token_id", None) or 0)
    starts = range(0, len(encoded), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="logit lens", leave=False)
    token_text = functools.lru_cache(maxsize=None)(lambda t: tok.decode([t]))  # each id decoded once per call
    with frozen(subject.model), torch.no_grad():
        for s in starts:
            encs = encoded[s : s + batch_size]
            width = max(len(e.input_ids) for e in encs)
            ids = torch.full((len(encs), width), fill, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, e in enumerate(encs):
                ids[i, : len(e.input_ids)] = e.input_ids
                mask[i, : len(e.input_ids)] = 1
            _, cache = run_with_cache(subject, ids, sites, attention_mask=mask.to(subject.device))
            resid = torch.stack(gather([cache[n] for n in sites], subject.device))  # (L, batch, seq, d)
            for i, (ex, e) in enumerate(zip(examples[s : s + batch_size], encs)):
                n = len(e.input_ids)
                r = resid[:, i, : n - 1]  # (L, P, d)
                if translate is not None:
                    r = torch.stack([translate(layer, r[layer]) for layer in range(r.shape[0])])
                lp = _layer_logprobs(subject, r)  # (L, P, vocab)
                gold = e.input_ids[1:].to(lp.device)
                g = lp.gather(-1, gold[None, :, None].expand(lp.shape[0], -1, 1)).squeeze(-1)
                rank = (lp > g[..., None]).sum(-1)
                top_lp, top_ids = lp.topk(k, dim=-1)
                p = lp.exp()
                ent = -(p * lp).sum(-1)
                kl_final = (p[-1:] * (lp[-1:] - lp)).sum(-1)
                keep = keep_distributions
                if keep is None:
                    keep = lp.numel() <= _AUTO_KEEP_MAX
                top_np = top_ids.cpu().numpy()
                flat = [token_text(int(t)) for t in top_np.reshape(-1)]
                out.append(
                    LensTrajectory(
                        example=ex,
                        tokens=[token_text(int(t)) for t in e.input_ids.tolist()],
                        token_ids=e.input_ids.numpy().astype(np.int64),
                        prompt_span=tuple(e.prompt_span),  # type: ignore[arg-type]
                        answer_span=tuple(e.answer_span),  # type: ignore[arg-type]
                        layer_names=list(names),
                        logprob=g.cpu().numpy(),
                        rank=rank.cpu().numpy().astype(np.int64),
                        topk_ids=top_np.astype(np.int64),
                        topk_logprob=top_lp.cpu().numpy(),
                        topk_tokens=np.array(flat, dtype=str).reshape(top_np.shape),
                        kl_to_final=kl_final.clamp_min(0).cpu().numpy(),
                        entropy=ent.cpu().numpy(),
                        logprobs=lp.cpu().numpy() if keep else None,
                        provenance=prov,
                        method=method,
                    )
                )
    return out
