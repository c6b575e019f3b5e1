"""Per-layer linear probes: is the forgotten answer still decodable from the residual stream?

At every layer (and the embedding) the residual stream at the prompt's last token is read; a probe
trained on **retain** people is tested on **forget** people. Answers are mostly unique per person, so a
classifier over answer labels would sit at chance for every model; the probe scores candidates instead,
label-agnostically: a low-rank bilinear score between the standardised hidden state ``h`` and each
candidate's embedding ``e``,

    ``score(h, e) = (h U) . (e V)``,  ``U, V: (d_model, rank)``,

ranked among the candidates of the item's attribute (``meta["attribute"]``; one group when absent). The
state at the prompt's last token predicts the answer's **first token**, so the candidates are the
distinct first tokens of the attribute's values in the data and ``e`` is the model's own input embedding
of that token (a probe fit on answer-level features, e.g. the mean embedding of all the answer's tokens,
memorised the retain people's answers and did not generalise to new people on the toy world: 97% train,
7% held-out rank accuracy). The reported number is rank accuracy: the share of items whose gold first
token ranks first; chance is one over the attribute's distinct first tokens.

* **Layer choice** without the forget set: the retain people are split by subject; the probe is fit on
  four fifths and the layer with the best rank accuracy on the other fifth is the model's probe layer.
* **Selectivity control** (Hewitt & Liang 2019): the same probe fit on shuffled labels (each retain fact
  mapped to another value of its attribute, the same for all its phrasings); what it gets right on the
  forget people is what the probe's capacity alone explains.
* **Floor**: the same procedure on the retain-only model (in the audit): what can be guessed about the
  forget people without ever having seen their facts.

Nothing here changes the model: states are read in one no-grad pass per batch
(:func:`unpact.hooks.run_with_cache`), the probes are separate tensors. The probe reads the states, not
the model's output: a mask on the output logits (``unpact.known_truth``'s ``masked`` model) hides
nothing from it.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from unpact._result import SavedResult
from unpact.data import Example
from unpact.errors import InputError, check_items, check_positive
from unpact.hooks import run_with_cache
from unpact.models import Subject, check_finite
from unpact.provenance import Provenance

logger = logging.getLogger(__name__)

__all__ = [
    "ProbeResult",
    "fit_probes",
    "last_token_states",
    "subject_token_index",
    "first_tokens",
    "candidate_sets",
    "POSITIONS",
]

Position = Literal["last", "subject"]
#: Where a probe reads the residual stream: the prompt's last token, or the last token of the subject's name.
POSITIONS: tuple[str, ...] = ("last", "subject")

#: Probe rank (bilinear: ``U, V`` are ``(d_model, rank)``); at most the model width.
PROBE_RANK = 32
#: Full-batch Adam steps per probe fit, and its learning rate and L2 penalty.
PROBE_STEPS = 300
PROBE_LR = 1e-2
PROBE_L2 = 1e-3
#: Share of retain subjects held out to choose the probe layer.
VAL_SHARE = 0.2


@dataclass
class ProbeResult(SavedResult):
    """Per-layer probe scores of one model (``representations/MODEL/probe/last.npz`` in an audit).

    Attributes:
        layer_names: ``(L + 1,)``: ``embed``, then each block's output.
        forget_ids: The forget items probed.
        forget_rank: ``(L + 1, n_forget)`` rank of the gold answer's first token among its attribute's (0: first).
        n_candidates: ``(n_forget,)`` distinct first tokens of each item's attribute (chance: ``1 / n_candidates``).
        val_accuracy: ``(L + 1,)`` rank accuracy on the held-out retain people (chooses the layer).
        shuffled_rank: ``(L + 1, n_forget)`` the same ranks from probes fit on shuffled labels (selectivity).
        layer: The chosen layer's row (argmax of ``val_accuracy``; the earliest on ties).
        n_train: Retain items the probe was fit on.
        provenance: Model and settings.
    """

    layer_names: list[str]
    forget_ids: list[str]
    forget_rank: np.ndarray
    n_candidates: np.ndarray
    val_accuracy: np.ndarray
    shuffled_rank: np.ndarray
    layer: int
    n_train: int
    provenance: Provenance | None = None

    @property
    def accuracy(self) -> np.ndarray:
        """``(L + 1,)`` rank accuracy on the forget items per layer."""
        return (self.forget_rank == 0).mean(axis=1) if self.forget_rank.size else np.zeros(len(self.layer_names))

    @property
    def shuffled_accuracy(self) -> np.ndarray:
        """``(L + 1,)`` rank accuracy on the forget items of the shuffled-label probes."""
        return (self.shuffled_rank == 0).mean(axis=1) if self.shuffled_rank.size else np.zeros(len(self.layer_names))

    @property
    def hits(self) -> np.ndarray:
        """``(n_forget,)`` the gold first token ranks first at the chosen layer."""
        return self.forget_rank[self.layer] == 0

    @property
    def chance(self) -> float:
        """Mean chance rank accuracy ``mean(1 / n_candidates)``."""
        return float(np.mean(1.0 / self.n_candidates)) if self.n_candidates.size else float("nan")


def subject_token_index(subject: Subject, example: Example) -> int:
    """Index in the prompt ids of the last token of the first mention of ``example.subject`` in its question
    (case ignored).

    Raises:
        InputError: The example has no subject, or its question does not mention it.
    """
    name = example.subject or ""
    found = re.search(re.escape(name), example.prompt, re.IGNORECASE) if name else None  # "FAGRO SAIKOUDEI" too
    if found is None:
        raise InputError(
            f"item {example.id!r}: its question does not mention its subject {name!r}",
            source="position='subject'",
            fix="give every item its subject as written in the question, or probe at position='last'",
        )
    hit = subject.encode(example).positions_of([found.span()], example.prompt)
    if not hit:
        raise InputError(f"item {example.id!r}: no prompt token covers its subject {name!r}", source="subject")
    return hit[-1]


def last_token_states(
    subject: Subject,
    items: Sequence[Example],
    *,
    batch_size: int = 16,
    progress: bool = False,
    position: Position = "last",
) -> torch.Tensor:
    """The residual stream at each prompt's last token (or its subject's), at the embedding and after every block.

    Args:
        subject: The model (left unchanged).
        items: The prompts (encoded with the model's prompt format; the answers are not fed).
        batch_size: Prompts per forward pass.
        progress: Show a progress bar.
        position: ``"last"`` (the prompt's last token) or ``"subject"`` (the last token of the first
            mention of the item's subject in its question: :func:`subject_token_index`).

    Returns:
        ``(n, L + 1, d_model)`` float32 states on the CPU.

    Raises:
        InputError: With ``position="subject"``, an item whose question does not mention its subject.
    """
    check_positive("batch_size", batch_size, where="last_token_states")
    if position not in POSITIONS:
        raise InputError(f"unknown position {position!r}", source="position", fix="choose 'last' or 'subject'")
    sites = ["resid_pre.0"] + [f"resid_post.{i}" for i in range(subject.n_layers)]
    encoded = [subject.encode(e).prompt_ids for e in items]
    where = [subject_token_index(subject, e) for e in items] if position == "subject" else [len(r) - 1 for r in encoded]
    tok = subject.tokenizer
    fill = getattr(tok, "pad_token_id", None)
    fill = int(fill if fill is not None else getattr(tok, "eos_token_id", None) or 0)
    out = torch.empty(len(items), len(sites), subject.d_model)
    starts = range(0, len(items), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="probe states", leave=False)
    for s in starts:
        rows = encoded[s : s + batch_size]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), fill, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):  # right-padded: the causal model never reads the padding
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        _, cache = run_with_cache(subject, ids, sites, attention_mask=mask)
        last = torch.tensor(where[s : s + batch_size])
        resid = torch.stack([cache[n] for n in sites], dim=1)  # (batch, L + 1, seq, d)
        states = resid[torch.arange(len(rows)), :, last].float().cpu()
        out[s : s + len(rows)] = check_finite(subject, states, "probe states")
    return out


def first_tokens(subject: Subject, items: Sequence[Example]) -> dict[str, int]:
    """Answer text -> the id of its first token, as the model reads it after the prompt."""
    out: dict[str, int] = {}
    for e in items:
        if e.answer not in out:
            out[e.answer] = int(subject.encode(e).answer_ids[0])
    return out


def _attribute(e: Example) -> str:
    return str(e.meta.get("attribute", "")) if isinstance(e.meta, dict) else ""


def candidate_sets(items: Sequence[Example], first: dict[str, int]) -> dict[str, list[int]]:
    """Attribute -> the distinct first tokens of its values in ``items``, sorted (what an item is ranked among)."""
    out: dict[str, set[int]] = {}
    for e in items:
        out.setdefault(_attribute(e), set()).add(first[e.answer])
    return {k: sorted(v) for k, v in out.items()}


def _standardise(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Standardise ``x`` feature by feature with ``ref``'s mean and standard deviation (over dim 0).

    A feature that does not vary in ``ref`` (beyond float round-off relative to its size: e.g. the
    embedding row when every prompt ends in the same token) becomes 0 instead of scaled-up round-off.
    """
    mu, sd = ref.mean(0, keepdim=True), ref.std(0, keepdim=True, correction=0)
    varies = sd > 1e-5 * (mu.abs() + 1e-3)
    return torch.where(varies, (x - mu) / sd.clamp_min(1e-12), torch.zeros_like(x))


def _fit(h: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor, gold: torch.Tensor, *, seed: int) -> tuple:
    """Fit one bilinear probe per layer at once.

    Args:
        h: ``(n, L, d)`` standardised states.
        emb: ``(k, d)`` standardised candidate embeddings.
        mask: ``(n, k)`` True where candidate j is a value of item i's attribute.
        gold: ``(n,)`` index of each item's answer among the candidates.
        seed: Initialisation seed.

    Returns:
        ``(U, V)``, each ``(L, d, rank)``.
    """
    gen = torch.Generator().manual_seed(seed)
    n_layers, d = h.shape[1], h.shape[2]
    r = min(PROBE_RANK, d, emb.shape[1])
    u = (torch.randn(n_layers, d, r, generator=gen) / d**0.5).requires_grad_()
    v = (torch.randn(n_layers, emb.shape[1], r, generator=gen) / emb.shape[1] ** 0.5).requires_grad_()
    opt = torch.optim.Adam([u, v], lr=PROBE_LR)
    neg = torch.finfo(torch.float32).min
    with torch.enable_grad():
        for _ in range(PROBE_STEPS):
            opt.zero_grad()
            s = _scores(h, emb, u, v).masked_fill(~mask[:, None], neg)  # (n, L, k)
            loss = torch.nn.functional.cross_entropy(s.flatten(0, 1), gold.repeat_interleave(n_layers))
            loss = loss + PROBE_L2 * (u.square().mean() + v.square().mean())
            loss.backward()
            opt.step()
    return u.detach(), v.detach()


def _scores(h: torch.Tensor, emb: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(n, L, d)`` states, ``(k, d)`` candidates -> ``(n, L, k)`` bilinear scores."""
    hu = torch.einsum("nld,ldr->nlr", h, u)
    ev = torch.einsum("kd,ldr->lkr", emb, v)
    return torch.einsum("nlr,lkr->nlk", hu, ev)


def _ranks(h: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor, gold: torch.Tensor, uv: tuple) -> torch.Tensor:
    """``(L, n)`` rank of the gold candidate among the item's attribute values (0: first)."""
    with torch.no_grad():
        s = _scores(h, emb, *uv).masked_fill(~mask[:, None], float("-inf"))  # (n, L, k)
        g = s.gather(-1, gold[:, None, None].expand(-1, s.shape[1], 1))
        # ties count against the gold candidate (a tie is not a decoded answer)
        return ((s > g).sum(-1) + (s == g).sum(-1) - 1).T


def _split_by_subject(items: Sequence[Example], share: float, seed: int) -> tuple[list[int], list[int]]:
    subjects = sorted({e.subject or e.id for e in items})
    random.Random(seed).shuffle(subjects)
    held = set(subjects[: max(1, round(share * len(subjects)))])
    val = [i for i, e in enumerate(items) if (e.subject or e.id) in held]
    return [i for i in range(len(items)) if i not in set(val)], val


def _shuffled_answers(items: Sequence[Example], seed: int) -> list[str]:
    """Each fact (subject, attribute) mapped to another value of its attribute, the same for all its phrasings."""
    rng = random.Random(seed)
    values: dict[str, list[str]] = {}
    for e in items:
        values.setdefault(_attribute(e), []).append(e.answer)
    values = {k: sorted(set(v)) for k, v in values.items()}
    facts = sorted({(e.subject or e.id, _attribute(e)) for e in items})
    own = {(e.subject or e.id, _attribute(e)): e.answer for e in items}
    new = {}
    for f in facts:  # another value than the fact's own where the attribute has one
        others = [v for v in values[f[1]] if v != own[f]]
        new[f] = rng.choice(others or values[f[1]])
    return [new[(e.subject or e.id, _attribute(e))] for e in items]


def fit_probes(
    subject: Subject,
    train: Sequence[Example],
    test: Sequence[Example],
    *,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
    position: Position = "last",
) -> ProbeResult:
    """Fit per-layer probes on ``train`` (retain people) and rank ``test``'s gold answers (see the module docstring).

    Args:
        subject: The model (left unchanged).
        train: Items about the people the probe learns from (the retain set); at least two subjects.
        test: Items to decode (the forget set); their answers join the candidates of their attribute.
        seed: Seed of the validation split, the shuffled labels and the probes' initialisation.
        batch_size: Prompts per forward pass.
        progress: Show a progress bar while reading the states.
        position: Where the states are read: ``"last"`` prompt token or the ``"subject"``'s last token.

    Returns:
        The :class:`ProbeResult`.

    Raises:
        InputError: Fewer than two train subjects, no test item, or (``"subject"``) an item not naming its subject.
    """
    train = check_items("train", train, Example, where="fit_probes")
    test = check_items("test", test, Example, where="fit_probes")
    if not test:
        raise InputError("fit_probes: no test item given", fix="pass the forget items to decode")
    fit_idx, val_idx = _split_by_subject(train, VAL_SHARE, seed)
    if not fit_idx or not val_idx:
        raise InputError(
            f"fit_probes: the {len(train)} train items are about fewer than two subjects",
            fix="give retain items about several people (the probe is validated on held-out people)",
        )
    everything = list(train) + list(test)
    first = first_tokens(subject, everything)
    cands = candidate_sets(everything, first)
    names = [(a, t) for a in sorted(cands) for t in cands[a]]
    col = {k: j for j, k in enumerate(names)}
    weight = subject.embed.weight
    if not isinstance(weight, torch.Tensor):
        raise InputError(f"fit_probes: {subject.name}'s token embedding has no weight matrix")
    table = weight.detach()
    emb = table[torch.tensor([t for _, t in names], device=table.device)].float().cpu()
    emb = _standardise(emb, emb)

    def masks(xs: Sequence[Example], answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        attr = [_attribute(e) for e in xs]
        m = torch.tensor([[a == n[0] for n in names] for a in attr], dtype=torch.bool)
        return m, torch.tensor([col[(a, first[v])] for a, v in zip(attr, answers)])

    states = last_token_states(subject, everything, batch_size=batch_size, progress=progress, position=position)
    fit_h = states[fit_idx]
    h = _standardise(states, fit_h)
    tr = [train[i] for i in fit_idx]
    va = [train[i] for i in val_idx]
    m_tr, g_tr = masks(tr, [e.answer for e in tr])
    m_va, g_va = masks(va, [e.answer for e in va])
    m_te, g_te = masks(test, [e.answer for e in test])
    h_tr, h_va, h_te = h[fit_idx], h[val_idx], h[len(train) :]
    uv = _fit(h_tr, emb, m_tr, g_tr, seed=seed)
    val_acc = (_ranks(h_va, emb, m_va, g_va, uv) == 0).float().mean(1).numpy()
    forget_rank = _ranks(h_te, emb, m_te, g_te, uv).numpy()
    m_sh, g_sh = masks(tr, _shuffled_answers(tr, seed + 1))
    uv_sh = _fit(h_tr, emb, m_sh, g_sh, seed=seed)
    shuffled = _ranks(h_te, emb, m_te, g_te, uv_sh).numpy()
    n_cand = m_te.sum(1).numpy()
    return ProbeResult(
        layer_names=["embed"] + [str(i) for i in range(subject.n_layers)],
        forget_ids=[e.id for e in test],
        forget_rank=forget_rank.astype(np.int64),
        n_candidates=n_cand.astype(np.int64),
        val_accuracy=val_acc.astype(np.float64),
        shuffled_rank=shuffled.astype(np.int64),
        layer=int(np.argmax(val_acc)),
        n_train=len(tr),
        provenance=Provenance.of(subject, "probe", rank=PROBE_RANK, steps=PROBE_STEPS, seed=seed, position=position),
    )
