"""Tuned lens (Belrose et al. 2023, arXiv 2303.08112): one affine translator per layer, trained per model.

The logit lens decodes a layer's residual ``h_l`` as if it were the last layer's:
``unembed(final_norm(h_l))``. Early layers are not in the last layer's basis, so that reading is biased.
The tuned lens first maps each layer's residual through its own affine translator,

    ``T_l(h) = h + A_l h + b_l``  (``A_l: (d_model, d_model)``, ``b_l: (d_model,)``),

with ``A_l`` and ``b_l`` initialised to zero (the identity translator, i.e. the logit lens), and trains
them to minimise ``KL(final || lens_l)``: the KL divergence from the model's own next-token distribution
(the last layer) to ``softmax(unembed(final_norm(T_l(h_l))))``, averaged over every position of a
corpus. The last layer needs no translator (its row is the identity). Training follows the reference
implementation (the ``tuned-lens`` package, 0.2.0): SGD, Nesterov momentum 0.9, step ``lr * (1 - momentum)``,
weight decay ``1e-3`` (toward the identity translator), the gradient's norm clipped to 1, the learning rate
decayed linearly to zero; each layer's loss is back-propagated on its own (one ``(tokens, vocab)`` at a time).

**The corpus never holds forget items**: on the toy world train on the retain items
(``fit_tuned_lens(subject, world.retain)``), on a real model on a text file the user gives
(:func:`load_text_corpus`); pass ``forget=`` to have a corpus that contains a forget item refused.

Nothing here changes the model: the residual stream is read with :func:`unpact.hooks.run_with_cache`
(no grad, the model :func:`~unpact.models.frozen`, every hook removed), and only the translators,
separate float32 tensors on the model's device, are trained. A :class:`TunedLens` belongs to one set of
weights: its provenance records the weights hash, and :meth:`TunedLens.check_subject` refuses it on any
other model. :func:`unpact.lens.logit_lens` decodes through it with ``method="tuned"``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unpact._devices import gather
from unpact._result import SavedResult
from unpact.data import Example, fill_id
from unpact.errors import ArchitectureError, DataFileError, InputError, MissingFileError, check_positive
from unpact.hooks import run_with_cache
from unpact.models import Subject, check_finite, frozen
from unpact.provenance import Provenance

__all__ = ["TunedLens", "fit_tuned_lens", "layer_kl", "load_text_corpus", "lens_sites", "check_lens_ok"]

#: Defaults of :func:`fit_tuned_lens` (the reference implementation's, except the number of steps and
#: the batch, which it sets to 250 steps of 2**18 tokens).
TUNED_STEPS = 250
TUNED_LR = 1.0
TUNED_MOMENTUM = 0.9
TUNED_WEIGHT_DECAY = 1e-3
TUNED_BATCH = 8
TUNED_MAX_LENGTH = 512
_CLIP_NORM = 1.0


def lens_sites(subject: Subject) -> tuple[list[str], list[str]]:
    """The ``L = n_layers + 1`` sites a lens decodes, ``["resid_pre.0", "resid_post.0", ...]``, and their names."""
    sites = ["resid_pre.0"] + [f"resid_post.{i}" for i in range(subject.n_layers)]
    return sites, ["embed"] + [str(i) for i in range(subject.n_layers)]


@dataclass
class TunedLens(SavedResult):
    """One model's tuned-lens translators (saved by :class:`~unpact._result.SavedResult`).

    ``L = n_layers + 1`` rows (the embeddings, then each block's output), as in
    :class:`~unpact.lens.LensTrajectory`. Row ``l``'s translator is the affine map
    ``h -> h @ weight[l].T + bias[l]`` (``weight[l] = I + A_l``); the last row is the identity
    (``weight[-1] = I``, ``bias[-1] = 0``) and is applied as such.

    Attributes:
        layer_names: ``L`` names: ``"embed"``, ``"0"``, ..., ``str(n_layers - 1)``.
        weight: ``(L, d_model, d_model)`` float32 linear parts of the translators.
        bias: ``(L, d_model)`` float32 offsets.
        start_kl: ``(L,)`` mean ``KL(final || layer)`` in nats on the first batch, before training (the logit lens).
        train_kl: ``(L,)`` the same, averaged over the batches of the last tenth of the steps (0 on the last row).
        steps: Optimizer steps trained.
        lr: Learning rate (the SGD step is ``lr * (1 - momentum)``).
        momentum: Nesterov momentum.
        weight_decay: Weight decay (toward the identity).
        batch_size: Sequences per step.
        n_sequences: Sequences in the training corpus (after splitting texts at ``max_length`` tokens).
        n_tokens: Tokens in the training corpus.
        provenance: Model, weights hash and settings.
    """

    layer_names: list[str]
    weight: np.ndarray
    bias: np.ndarray
    start_kl: np.ndarray
    train_kl: np.ndarray
    steps: int = 0
    lr: float = 0.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 0
    n_sequences: int = 0
    n_tokens: int = 0
    provenance: Provenance | None = None

    @property
    def n_rows(self) -> int:
        """``L = n_layers + 1``."""
        return int(self.weight.shape[0])

    @property
    def d_model(self) -> int:
        """Residual stream width."""
        return int(self.weight.shape[-1])

    @classmethod
    def identity(cls, subject: Subject) -> TunedLens:
        """Identity translators for ``subject`` (decodes exactly as the logit lens); set rows by hand to test."""
        _, names = lens_sites(subject)
        d, rows = subject.d_model, subject.n_layers + 1
        zero = np.zeros(rows, dtype=np.float64)
        return cls(
            layer_names=names,
            weight=np.repeat(np.eye(d, dtype=np.float32)[None], rows, axis=0),
            bias=np.zeros((rows, d), dtype=np.float32),
            start_kl=zero,
            train_kl=zero.copy(),
            provenance=Provenance.of(subject, "tuned_lens", steps=0),
        )

    def check_subject(self, subject: Subject, *, where: str = "tuned lens") -> None:
        """Refuse a lens trained on another model (other weights hash, number of layers or width).

        Raises:
            InputError: Naming the lens's model and weights and ``subject``'s.
        """
        fix = (
            f"train a tuned lens on {subject.name!r} (unpact.representations.fit_tuned_lens(subject, corpus)) "
            "or load the one saved with its results"
        )
        rows, d = subject.n_layers + 1, subject.d_model
        if self.weight.shape != (rows, d, d) or self.bias.shape != (rows, d) or len(self.layer_names) != rows:
            raise InputError(
                f"the tuned lens has translators of shape {self.weight.shape} and {self.bias.shape}, but model "
                f"{subject.name!r} needs ({rows}, {d}, {d}) and ({rows}, {d}): n_layers + 1 rows of width {d}",
                source=where,
                fix=fix,
            )
        if self.provenance is None:
            raise InputError("the tuned lens has no provenance, so its model cannot be checked", source=where, fix=fix)
        mine, theirs = self.provenance.weights_hash, subject.weights_hash()
        if mine != theirs:
            raise InputError(
                f"the tuned lens was trained on model {self.provenance.model!r} (weights {mine[:16]}), "
                f"not on {subject.name!r} (weights {theirs[:16]})",
                source=where,
                fix=fix,
            )

    def translators(self, device: torch.device | str = "cpu") -> _Translators:
        """The translators as float32 tensors on ``device`` (moved layer by layer on first use)."""
        return _Translators(self, torch.device(device))

    def translate(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        """Translate one layer's residual stream: ``resid @ weight[layer].T + bias[layer]``.

        Args:
            layer: Row index, ``0 <= layer < L`` (negative counts from the end); the last row is the identity.
            resid: ``(..., d_model)`` residual of that layer (any dtype and device).

        Returns:
            ``(..., d_model)`` in ``resid``'s dtype and device (computed in float32).

        Raises:
            InputError: A layer out of range or a residual of another width.
        """
        return self.translators(resid.device)(layer, resid)


class _Translators:
    """Float32 torch copies of a :class:`TunedLens`'s translators on one device, made on first use."""

    def __init__(self, lens: TunedLens, device: torch.device) -> None:
        self.lens = lens
        self.device = device
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        rows = self.lens.n_rows
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -rows <= layer < rows:
            raise InputError(
                f"layer {layer!r} out of range for a tuned lens of {rows} rows", source="TunedLens.translate"
            )
        if resid.shape[-1] != self.lens.d_model:
            raise InputError(
                f"a residual of width {resid.shape[-1]} given to a tuned lens of width {self.lens.d_model}",
                source="TunedLens.translate",
            )
        layer = int(layer) % rows
        if layer == rows - 1:
            return resid  # the last layer needs no translator
        if layer not in self._cache:
            w = torch.from_numpy(np.ascontiguousarray(self.lens.weight[layer]))
            b = torch.from_numpy(np.ascontiguousarray(self.lens.bias[layer]))
            self._cache[layer] = (w.to(self.device, torch.float32), b.to(self.device, torch.float32))
        w, b = self._cache[layer]
        return torch.nn.functional.linear(resid.float(), w, b).to(resid.dtype)


def check_lens_ok(subject: Subject, where: str, what: str = "lens") -> None:
    """Refuse an architecture whose final norm and unembedding do not decode an earlier layer's residual.

    Raises:
        ArchitectureError: ``ArchSpec.lens_ok`` or ``decode_ok`` is False; the message says why.
    """
    if not (subject.spec.lens_ok and subject.spec.decode_ok):
        mt = subject.spec.model_type
        why = subject.spec.disabled_reason("lens") or "its ArchSpec says lens_ok=False or decode_ok=False"
        raise ArchitectureError(
            f"the {what} is off for {mt}: {why}",
            source=where,
            fix="register an ArchSpec whose final_norm, unembed and logit_scale_attr / logit_divisor_attr / "
            "logit_softcap_attr reproduce the model's logits (unpact.register_architecture; see docs/models.md)",
        )


def _decode(subject: Subject, resid: torch.Tensor) -> torch.Tensor:
    """``(..., d_model)`` residual -> ``(..., vocab)`` float32 log-probabilities (the logit lens's decoding)."""
    logits = subject.decode_resid(subject.final_norm(resid.to(subject.dtype))).float()
    return torch.log_softmax(check_finite(subject, logits, "lens logits"), dim=-1)


def load_text_corpus(path: str | os.PathLike[str]) -> list[str]:
    """A UTF-8 text file's paragraphs (split at blank lines), as a corpus for :func:`fit_tuned_lens`.

    Raises:
        MissingFileError: No file at ``path``.
        DataFileError: The file holds no text.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError("no text file here", path=p, fix="give the path of a UTF-8 text file")
    paragraphs = [q.strip() for q in re.split(r"\n\s*\n", p.read_text(encoding="utf-8")) if q.strip()]
    if not paragraphs:
        raise DataFileError("the text file is empty", path=p, fix="give a file of text the model can read")
    return paragraphs


def _corpus_ids(
    subject: Subject, corpus: Sequence[Example | str], max_length: int, forget: Sequence[Example], where: str
) -> list[torch.Tensor]:
    """Each corpus item as ``(n,)`` token ids: examples as prompt + answer, texts in chunks of ``max_length``."""
    if isinstance(corpus, (str, bytes, Example, os.PathLike)) or not isinstance(corpus, Iterable):
        raise InputError(
            f"the corpus must be a list of Example objects or texts, got a single {type(corpus).__name__}",
            source=where,
            fix="wrap it in a list, or read a text file with unpact.representations.load_text_corpus(path)",
        )
    if subject.tokenizer is None:
        raise InputError(f"model {subject.name!r} has no tokenizer", source=where, fix="load it with its tokenizer")
    pairs = {(e.prompt, e.answer) for e in forget}
    ids = {e.id for e in forget}
    out: list[torch.Tensor] = []
    for i, item in enumerate(corpus):
        if isinstance(item, Example):
            if item.id in ids or (item.prompt, item.answer) in pairs:
                raise InputError(
                    f"corpus[{i}] ({item.id!r}) is a forget item; the tuned lens must not be trained on them",
                    source=where,
                    fix="train on the retain items (or other text) only",
                )
            out.append(subject.encode(item).input_ids.long())
        elif isinstance(item, str):
            hit = next((e for e in forget if e.prompt in item and e.answer in item), None)
            if hit is not None:
                raise InputError(
                    f"corpus[{i}] holds the question and answer of forget item {hit.id!r}",
                    source=where,
                    fix="remove the forget items' facts from the text",
                )
            toks = list(subject.tokenizer(item, add_special_tokens=True)["input_ids"])
            out.extend(
                torch.tensor(toks[s : s + max_length], dtype=torch.long) for s in range(0, len(toks), max_length)
            )
        else:
            raise InputError(f"corpus[{i}] is {type(item).__name__}, not an Example or a text", source=where)
    if not out:
        raise InputError("the corpus is empty", source=where, fix="give retain items or a text file's paragraphs")
    return out


def _pad(subject: Subject, seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``(n_i,)`` id tensors into ``(batch, width)`` ids and mask (the padding is never read)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), fill_id(subject.tokenizer), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def _residuals(subject: Subject, seqs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(L, tokens, d_model)``: every layer's residual at every real position of ``seqs`` (one no-grad pass)."""
    sites, _ = lens_sites(subject)
    ids, mask = _pad(subject, seqs)
    _, cache = run_with_cache(subject, ids, sites, attention_mask=mask)
    real = mask.bool()
    return torch.stack(gather([cache[s][real.to(cache[s].device)] for s in sites], subject.device))


def fit_tuned_lens(
    subject: Subject,
    corpus: Sequence[Example | str],
    *,
    steps: int = TUNED_STEPS,
    lr: float = TUNED_LR,
    batch_size: int = TUNED_BATCH,
    seed: int = 0,
    momentum: float = TUNED_MOMENTUM,
    weight_decay: float = TUNED_WEIGHT_DECAY,
    max_length: int = TUNED_MAX_LENGTH,
    forget: Sequence[Example] = (),
    progress: bool = False,
) -> TunedLens:
    """Train one affine translator per layer on ``corpus`` (the tuned-lens objective; see the module docstring).

    Each step reads ``batch_size`` corpus sequences (an epoch-wise shuffle seeded by ``seed``), takes the
    last layer's distribution at every position as the target and, per layer ``l < L - 1``, minimises
    the mean over positions of ``KL(final || softmax(unembed(final_norm(T_l(h_l)))))``.

    Args:
        subject: The model (left unchanged).
        corpus: :class:`~unpact.data.Example` items (prompt + answer in the model's prompt format, e.g.
            the toy world's retain items) and/or texts (tokenized with the model's tokenizer, split into
            chunks of ``max_length`` tokens). Never the forget items.
        steps: Optimizer steps.
        lr: Learning rate; the SGD step size is ``lr * (1 - momentum)`` (the reference's convention).
        batch_size: Sequences per step.
        seed: Seed of the batch order.
        momentum: Nesterov momentum.
        weight_decay: Weight decay of ``A_l, b_l`` (toward the identity translator).
        max_length: Tokens per chunk of a text.
        forget: Forget items: a corpus example equal to one (same id, or same question and answer), or a
            text holding one's question and answer, is refused.
        progress: Show a progress bar.

    Returns:
        The :class:`TunedLens` (float32 translators; the last row the identity).

    Raises:
        InputError: Bad counts, an empty or malformed corpus, a forget item in it, or NaN/inf logits.
        ArchitectureError: The architecture's final norm and unembedding cannot decode an earlier layer.
    """
    where = "fit_tuned_lens"
    check_lens_ok(subject, where, "tuned lens")
    steps = check_positive("steps", steps, where=where)
    batch_size = check_positive("batch_size", batch_size, where=where)
    max_length = check_positive("max_length", max_length, where=where)
    numbers = (lr, momentum, weight_decay)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers) or not (
        0 < lr < float("inf") and 0 <= momentum < 1 and 0 <= weight_decay < float("inf")
    ):
        raise InputError(
            f"need 0 < lr, 0 <= momentum < 1 and 0 <= weight_decay, got {lr=}, {momentum=}, {weight_decay=}",
            source=where,
        )
    seqs = _corpus_ids(subject, corpus, max_length, list(forget), where)
    n_rows, d, device = subject.n_layers + 1, subject.d_model, subject.device
    # A_l and b_l of the rows that have a translator (all but the last), trained as one tensor each: the
    # reference's per-layer Linear modules under one optimizer and one global-norm clip are the same thing.
    a = torch.zeros(n_rows - 1, d, d, device=device, dtype=torch.float32, requires_grad=True)
    b = torch.zeros(n_rows - 1, d, device=device, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.SGD(
        [a, b], lr=lr * (1 - momentum), momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (steps - s) / steps))
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses = torch.zeros(steps, n_rows, dtype=torch.float64)
    bar: Iterable[int] = range(steps)
    if progress:
        from tqdm.auto import trange

        bar = trange(steps, desc="tuned lens", leave=False)
    with frozen(subject.model):
        for step in bar:
            batch: list[int] = []
            while len(batch) < min(batch_size, len(seqs)):
                if not order:
                    order = torch.randperm(len(seqs), generator=gen).tolist()
                batch.append(order.pop(0))
            resid = _residuals(subject, [seqs[i] for i in batch])  # (L, tokens, d), no grad
            with torch.no_grad():
                target = _decode(subject, resid[-1])
                p = target.exp()
            step_loss = torch.zeros(n_rows - 1, device=device)
            with torch.enable_grad():
                for layer in range(n_rows - 1):  # one layer's (tokens, vocab) graph at a time
                    h = resid[layer].float()
                    lq = _decode(subject, h + torch.nn.functional.linear(h, a[layer], b[layer]))
                    loss = (p * (target - lq)).sum(-1).mean()
                    loss.backward()
                    step_loss[layer] = loss.detach()
            torch.nn.utils.clip_grad_norm_([a, b], _CLIP_NORM)
            opt.step()
            opt.zero_grad(set_to_none=False)
            sched.step()
            losses[step, :-1] = step_loss.double().cpu()
    tail = max(1, steps // 10)
    eye = torch.eye(d, dtype=torch.float32)
    weight = torch.cat([a.detach().float().cpu() + eye, eye[None]]).numpy()
    bias = torch.cat([b.detach().float().cpu(), torch.zeros(1, d)]).numpy()
    _, names = lens_sites(subject)
    n_tokens = int(sum(len(s) for s in seqs))
    return TunedLens(
        layer_names=names,
        weight=weight,
        bias=bias,
        steps=steps,
        lr=float(lr),
        momentum=float(momentum),
        weight_decay=float(weight_decay),
        batch_size=batch_size,
        n_sequences=len(seqs),
        n_tokens=n_tokens,
        start_kl=losses[0].clamp_min(0).numpy(),
        train_kl=losses[-tail:].mean(0).clamp_min(0).numpy(),
        provenance=Provenance.of(
            subject,
            "tuned_lens",
            steps=steps,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            batch_size=batch_size,
            max_length=max_length,
            seed=seed,
            n_sequences=len(seqs),
            n_tokens=n_tokens,
        ),
    )


def layer_kl(
    subject: Subject,
    examples: Sequence[Example | str],
    lens: TunedLens | None = None,
    *,
    batch_size: int = TUNED_BATCH,
    max_length: int = TUNED_MAX_LENGTH,
) -> np.ndarray:
    """Mean ``KL(final || layer)`` in nats per layer, over every position of ``examples``.

    Args:
        subject: The model (left unchanged).
        examples: Examples (prompt + answer) and/or texts, as in :func:`fit_tuned_lens`.
        lens: The model's :class:`TunedLens`, or ``None`` for the logit lens.
        batch_size: Sequences per forward pass.
        max_length: Tokens per chunk of a text.

    Returns:
        ``(L,)`` float64, ``L = n_layers + 1`` (0 on the last row): the mean over all real token positions.

    Raises:
        InputError: A lens of another model, bad counts, an empty or malformed list.
    """
    where = "layer_kl"
    check_lens_ok(subject, where, "tuned lens")
    batch_size = check_positive("batch_size", batch_size, where=where)
    max_length = check_positive("max_length", max_length, where=where)
    if lens is not None:
        if not isinstance(lens, TunedLens):
            raise InputError(f"lens must be a TunedLens or None, got {type(lens).__name__}", source=where)
        lens.check_subject(subject, where=where)
    seqs = _corpus_ids(subject, examples, max_length, (), where)
    n_rows = subject.n_layers + 1
    tr = lens.translators(subject.device) if lens is not None else None
    total = torch.zeros(n_rows, dtype=torch.float64)
    count = 0
    with frozen(subject.model), torch.no_grad():
        for s in range(0, len(seqs), batch_size):
            resid = _residuals(subject, seqs[s : s + batch_size])
            target = _decode(subject, resid[-1])
            p = target.exp()
            for layer in range(n_rows):
                h = resid[layer] if tr is None else tr(layer, resid[layer])
                kl = (p * (target - _decode(subject, h))).sum(-1)
                total[layer] += kl.double().sum().cpu()
            count += resid.shape[1]
    return (total / count).clamp_min(0).numpy()
