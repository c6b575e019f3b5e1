"""Paraphrased and perturbed answers: the inputs of TOFU's truth ratio.

TOFU (Maini et al. 2024, arXiv:2401.06121) ships, per question, a paraphrased answer (the gold answer
reworded) and five perturbed answers (wrong answers worded like the paraphrase), in the dataset fields
``paraphrased_answer`` and ``perturbed_answer``. unpact reads them from ``Example.meta`` under those names
(:func:`unpact.data.load_examples` puts a TOFU file's extra fields there).

The toy world has no such fields, so they are built, deterministically:

* **paraphrased**: the gold answer inside a short sentence per attribute (:data:`PARAPHRASE_TEMPLATES`,
  e.g. ``"{name}'s birthplace is {answer}."``), given as the answer to the item's question. The sentences
  differ from the ``default`` world's biography sentences (``"X was born in C in Y."``, ``"X wrote the book
  B."``...), so the paraphrase is text no model was trained on, as TOFU's are;
* **perturbed**: ``n_perturbed`` (default 3) other values of the same attribute taken from the people of a
  pool, never equal to the gold answer after normalisation, put in the same sentence, so that paraphrase
  and perturbations differ only in the fact. Drawn with ``random.Random(f"{seed}:{example.id}")`` from the
  sorted distinct values: the same for every model given the same pool and seed.
  :func:`unpact.standard_metrics.standard_metrics` draws them from the holdout people (fictitious people
  no model was trained on; TOFU's perturbed answers are invented wrong answers too). Values of trained
  people are answers the model knows for someone else, which hides part of what it knows: on the
  ``default`` world's 480 forget items the base model's median ``log R`` was -1.11 with the other forget
  people's values and -2.32 with the holdout people's (retain-only model: +0.04 and +0.07); see
  ``docs/standard_metrics.md`` for the command.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from unpact.data import Example
from unpact.errors import InputError, check_count, check_positive
from unpact.metrics import normalize_text

__all__ = ["PARAPHRASE_TEMPLATES", "AnswerVariants", "answer_variants"]

#: Toy-world attribute -> the sentence the paraphrased (and perturbed) answers are put in.
PARAPHRASE_TEMPLATES: dict[str, str] = {
    "birth_city": "{name}'s birthplace is {answer}.",
    "birth_year": "{name} was born in the year {answer}.",
    "profession": "By profession, {name} is {article} {answer}.",
    "employer": "{name} is employed by {answer}.",
    "book": "{name} is the author of {answer}.",
    "mother": "{name}'s mother is {answer}.",
}

_FIX = (
    "give each item meta['paraphrased_answer'] (a string) and meta['perturbed_answer'] (a list of strings), "
    "as TOFU's *_perturbed files have them, or use toy-world items (meta['attribute'] and a subject)"
)


@dataclass(frozen=True)
class AnswerVariants:
    """The paraphrased and perturbed answers of one item.

    Attributes:
        paraphrased: The gold answer reworded.
        perturbed: Wrong answers worded like it (at least one).
        source: ``"meta"`` (both from the item's TOFU fields), ``"toyworld"`` (both built here) or ``"mixed"``.
    """

    paraphrased: str
    perturbed: tuple[str, ...]
    source: Literal["meta", "toyworld", "mixed"]


def _sentence(attribute: str, name: str, answer: str) -> str:
    article = "an" if answer[:1].lower() in "aeiou" else "a"
    return PARAPHRASE_TEMPLATES[attribute].format(name=name, answer=answer, article=article)


def _toy_ok(example: Example) -> bool:
    return example.meta.get("attribute") in PARAPHRASE_TEMPLATES and bool(example.subject)


def _meta_strings(example: Example, key: str, *, single: bool) -> list[str] | None:
    """``meta[key]`` as a list of non-empty strings (one string where ``single``); ``None`` when absent."""
    value = example.meta.get(key)
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    ok = isinstance(values, (list, tuple)) and values and all(isinstance(v, str) and v.strip() for v in values)
    if not ok or (single and not isinstance(value, str)):
        kind = "a non-empty string" if single else "a non-empty string or list of non-empty strings"
        raise InputError(
            f"item {example.id!r}: meta[{key!r}] must be {kind}, got {value!r}", source="answer_variants", fix=_FIX
        )
    return list(values)


def answer_variants(
    examples: Sequence[Example],
    *,
    pool: Sequence[Example] | None = None,
    n_perturbed: int = 3,
    seed: int = 0,
) -> list[AnswerVariants]:
    """The paraphrased and perturbed answers of each item (from its meta, else built for the toy world).

    Args:
        examples: The items.
        pool: Items whose answers the toy-world perturbations are drawn from (same ``meta["attribute"]``,
            another value than the gold one); ``None``: ``examples``.
        n_perturbed: Perturbed answers per toy-world item (items with ``meta["perturbed_answer"]`` keep all
            of theirs); fewer where the pool has fewer other values.
        seed: Seed of the toy-world draws.

    Returns:
        One :class:`AnswerVariants` per item, in order.

    Raises:
        InputError: An item with neither TOFU fields nor toy-world metadata, malformed fields, or a pool
            without another value of the item's attribute.
    """
    n_perturbed = check_positive("n_perturbed", n_perturbed, where="answer_variants")
    seed = check_count("seed", seed, where="answer_variants")
    values: dict[str, list[str]] = {}
    for e in examples if pool is None else pool:
        attr = e.meta.get("attribute")
        if isinstance(attr, str):
            values.setdefault(attr, []).append(e.answer)
    distinct = {a: sorted(set(v)) for a, v in values.items()}
    out = []
    for e in examples:
        para = _meta_strings(e, "paraphrased_answer", single=True)
        pert = _meta_strings(e, "perturbed_answer", single=False)
        from_meta = (para is not None) + (pert is not None)
        if (para is None or pert is None) and not _toy_ok(e):
            missing = "paraphrased_answer" if para is None else "perturbed_answer"
            raise InputError(
                f"item {e.id!r} has no meta[{missing!r}] and is not a toy-world item: its truth ratio needs a "
                "paraphrased answer and perturbed answers",
                source="answer_variants",
                fix=_FIX,
            )
        attr, name = str(e.meta.get("attribute")), str(e.subject)
        if pert is None:
            gold = normalize_text(e.answer)
            others = [v for v in distinct.get(attr, []) if normalize_text(v) != gold]
            if not others:
                raise InputError(
                    f"item {e.id!r}: the pool holds no other value of {attr!r} to perturb the answer with",
                    source="answer_variants",
                    fix="pass a pool with more people",
                )
            rng = random.Random(f"{seed}:{e.id}")
            pert = [_sentence(attr, name, v) for v in rng.sample(others, min(n_perturbed, len(others)))]
        source: Literal["meta", "toyworld", "mixed"] = ("toyworld", "mixed", "meta")[from_meta]
        paraphrased = para[0] if para is not None else _sentence(attr, name, e.answer)
        out.append(AnswerVariants(paraphrased, tuple(pert), source))
    return out
