"""ReLearn: unlearning by learning (Xu et al. 2025, "ReLearn: Unlearning via Learning for Large Language
Models", arXiv 2502.11190; code https://github.com/zjunlp/unlearn).

Instead of pushing the forget answers' likelihood down, ReLearn *learns* new answers: every forget
question is augmented with paraphrases and paired with a relevant but vague, harmless answer, and the
model is fine-tuned on those with cross-entropy, while a KL term to the reference keeps its retain
behaviour and cross-entropy on general data keeps it fluent. Minimised per step::

    NLL(F') + kl_weight * KL(pi_ref || pi) on R + retain_weight * NLL(R)

``F'`` is the augmented forget set (:func:`augment`): each forget question, plus ``n_augment`` of its
paraphrases, each with a vague answer drawn from :data:`VAGUE_ANSWERS`. The paper's general data (a
generic instruction set) is replaced by the retain set's own answers (the toy world has no other text);
the paper generates paraphrases and vague answers with an LLM, which this offline toolkit cannot, so:

* paraphrases come from a user file (``paraphrases=PATH``: JSON ``{item id: [question, ...]}``), else,
  for toy-world items, from the world's own templates for the same attribute (its *trained* phrasings
  only: held-out phrasings stay unseen, so the audit's held-out test stays honest), plus simple built-in
  rewritings (:data:`REWRITES`);
* vague answers are fixed: for toy-world items, value-shaped ones per attribute ("a small town" for a
  birth city: :data:`unpact.toyworld.kb.VAGUE_VALUES`), else sentences naming the item's subject
  (:data:`VAGUE_ANSWERS`).

KFR, KRR and the Linguistic Score, the paper's metrics, are in
:mod:`unpact.quality` (the audit's ``quality`` stage).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import numbers
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from unpact.data import Example
from unpact.errors import DataFileError, InputError, MissingFileError
from unpact.unlearn.methods import LossContext, Method, TokBatch, kl_to_ref, nll, without_sensitive

logger = logging.getLogger(__name__)

__all__ = [
    "RELEARN_DEFAULTS",
    "VAGUE_ANSWERS",
    "REWRITES",
    "augment",
    "paraphrases_of",
    "relearn_method",
    "vague_answers",
]

RELEARN_DEFAULTS: dict[str, Any] = {
    "n_augment": 3,
    "kl_weight": 1.0,
    "retain_weight": 1.0,
    "paraphrases": None,
}

#: Vague, harmless replacement answers (``{name}``: the item's subject, else "this person").
VAGUE_ANSWERS: tuple[str, ...] = (
    "{name} has not made that public.",
    "There is no reliable record of that for {name}.",
    "That detail about {name} is not widely known.",
    "Sources differ on that point about {name}.",
    "{name} keeps that part of life private.",
)

#: Built-in rewritings of a question (``{q}``), used after any file or template paraphrases.
REWRITES: tuple[str, ...] = ("Tell me: {q}", "{q} Answer briefly.", "Quick question. {q}", "I wonder: {q}")


_PARA_FIX = 'give a UTF-8 JSON file {item id: [question, ...]}, e.g. {"p1.birth_city.p0": ["Where was Ann Lee born?"]}'


def _load_paraphrases(spec: str | Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """The user's paraphrases ``{item id: [question, ...]}`` from a mapping or a JSON file path.

    Raises:
        MissingFileError: No file at the path.
        DataFileError: A directory, a file that is not UTF-8 or not valid JSON (with its line), or JSON
            that is not ``{id: [question, ...]}``.
        InputError: A mapping that is not ``{id: [question, ...]}``.
    """
    if spec is None:
        return {}
    path: Path | None = None
    if isinstance(spec, Mapping):
        data: Any = spec
    else:
        path = Path(str(spec))
        if not path.exists():
            raise MissingFileError("no paraphrase file here (relearn paraphrases=...)", path=path, fix=_PARA_FIX)
        if path.is_dir():
            raise DataFileError("is a directory, not a paraphrase file", path=path, fix=_PARA_FIX)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise DataFileError("the paraphrase file is not UTF-8 text", path=path, fix=_PARA_FIX) from exc
        except json.JSONDecodeError as exc:
            raise DataFileError(
                f"the paraphrase file is not valid JSON ({exc.msg}, column {exc.colno})",
                path=path,
                line=exc.lineno,
                fix=_PARA_FIX,
            ) from exc
    if not isinstance(data, Mapping) or not all(
        isinstance(v, list) and all(isinstance(q, str) and q.strip() for q in v) for v in data.values()
    ):
        message = "relearn paraphrases must map item ids to lists of non-empty questions"
        if path is not None:
            raise DataFileError(message, path=path, fix=_PARA_FIX)
        raise InputError(message, source="relearn paraphrases", fix=_PARA_FIX)
    return {str(k): list(v) for k, v in data.items()}


def vague_answers(e: Example) -> tuple[str, ...]:
    """Vague answers for ``e``: the toy world's value-shaped ones for its attribute, else :data:`VAGUE_ANSWERS`."""
    from unpact.toyworld.kb import VAGUE_VALUES

    attr = e.meta.get("attribute")
    if attr in VAGUE_VALUES:
        return VAGUE_VALUES[str(attr)]
    name = e.subject or "this person"
    return tuple(a.format(name=name)[0].upper() + a.format(name=name)[1:] for a in VAGUE_ANSWERS)


def _template_paraphrases(e: Example) -> list[str]:
    """A toy-world item's question in the world's other *trained* plain phrasings of its attribute."""
    from unpact.toyworld.kb import HELDOUT_FORMS, TEMPLATES

    attr = e.meta.get("attribute")
    if attr not in TEMPLATES or not e.subject:
        return []
    out = []
    for i, (template, _) in enumerate(TEMPLATES[str(attr)]):
        q = template.format(name=e.subject)
        if f"p{i}" not in HELDOUT_FORMS and q != e.prompt:
            out.append(q)
    return out


def paraphrases_of(e: Example, given: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Paraphrases of ``e``'s question, best first: the user's, the toy world's templates, the rewritings."""
    out = list((given or {}).get(e.id, ())) + _template_paraphrases(e) + [r.format(q=e.prompt) for r in REWRITES]
    seen: set[str] = {e.prompt}
    return [q for q in out if not (q in seen or seen.add(q))]  # type: ignore[func-returns-value]


def augment(
    forget: Sequence[Example],
    rng: random.Random,
    *,
    n_augment: int = 3,
    paraphrases: str | Mapping[str, Sequence[str]] | None = None,
) -> list[Example]:
    """ReLearn's training set: each forget item and ``n_augment`` paraphrases, all with vague answers.

    Args:
        forget: The forget items.
        rng: Draws the paraphrases (among those available) and the vague answers.
        n_augment: Paraphrases per item, an integer (fewer when fewer exist): the user's first, then drawn
            from the toy world's templates and the rewritings.
        paraphrases: The user's paraphrases: a mapping or a JSON file ``{item id: [question, ...]}``; ids
            that match no forget item are logged as a warning.

    Returns:
        ``len(forget) * (1 + n_augment)`` examples at most; ids ``"<id>~relearn<k>"`` (``k = 0``: the
        original question); their ``meta`` without ``"sensitive"`` (spans of the old answer).

    Raises:
        InputError: ``n_augment`` not an integer >= 0, or a paraphrase mapping that is not
            ``{id: [question, ...]}`` (:class:`~unpact.errors.DataFileError` for such a file).
        MissingFileError: No paraphrase file at the path given.
    """
    if isinstance(n_augment, bool) or not isinstance(n_augment, numbers.Integral) or n_augment < 0:
        raise InputError(
            f"n_augment must be a whole number of paraphrases >= 0, got {n_augment!r}",
            source="relearn hparams",
            fix=f"e.g. n_augment={RELEARN_DEFAULTS['n_augment']} (0: the original questions only)",
        )
    given = _load_paraphrases(paraphrases)
    unknown = sorted(set(given) - {e.id for e in forget})
    if unknown:
        logger.warning(
            "relearn: %d paraphrase ids match no forget item and are unused: %s",
            len(unknown),
            ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else ""),
        )
    out: list[Example] = []
    for e in forget:
        pool = paraphrases_of(e, given)
        n = min(int(n_augment), len(pool))
        own = [q for q in pool[:n] if q in given.get(e.id, ())]  # the user's paraphrases first
        rest = pool[len(own) :]
        picks = own + rng.sample(rest, min(n - len(own), len(rest)))
        for k, q in enumerate([e.prompt, *picks]):
            vague = rng.choice(vague_answers(e))
            meta = without_sensitive(e.meta)  # a new answer: the old sensitive spans are not in it
            out.append(dataclasses.replace(e, id=f"{e.id}~relearn{k}", prompt=q, answer=vague, keywords=(), meta=meta))
    return out


def _forget_data(ctx: LossContext, forget: list[Example], rng: Any) -> list[Example]:
    return augment(forget, rng, n_augment=ctx.hparams["n_augment"], paraphrases=ctx.hparams.get("paraphrases"))


def _relearn_loss(ctx: LossContext, f: TokBatch, r: TokBatch | None) -> torch.Tensor:
    """``NLL(F') + kl_weight * KL(pi_ref || pi)(R) + retain_weight * NLL(R)`` (scalar)."""
    if r is None:
        raise InputError("relearn needs a retain set", source="retain", fix="pass retain examples")
    loss = nll(ctx.model, f)
    if float(ctx.hparams["kl_weight"]):
        loss = loss + float(ctx.hparams["kl_weight"]) * kl_to_ref(ctx, r)
    if float(ctx.hparams["retain_weight"]):
        loss = loss + float(ctx.hparams["retain_weight"]) * nll(ctx.model, r)
    return loss


def relearn_method() -> Method:
    """The ``relearn`` :class:`~unpact.unlearn.Method` (not registered by this call)."""
    return Method(
        "relearn",
        _relearn_loss,
        dict(RELEARN_DEFAULTS),
        True,
        "learn vague answers to paraphrased forget questions; KL to the reference + NLL on retain",
        forget_data=_forget_data,
    )
