"""Answer quality after unlearning, as ReLearn measures it: Knowledge Forgetting / Retention Rate, Linguistic Score.

Xu et al. 2025, *ReLearn: Unlearning via Learning for Large Language Models*, arXiv:2502.11190. Checked
against the published evaluator, ``zjunlp/unlearn`` ``evals/evaluate.py`` (commit 0800fd2), whose
behaviour is followed where it differs from a textbook reading:

* Tokens: ``nltk.word_tokenize(text.lower())``, punctuation included; :func:`words` approximates it
  without nltk (punctuation marks, ``n't`` and ``'s``-style clitics are tokens; ``3.5`` is one token).
* Brunet's index ``W = N ** (V ** -0.165)`` (``calculate_BI``; lower = richer); an empty text gives 1000.
* Honore's ``H = 100 ln N / (1 - V1/V + 0.1)``, capped at 1e6 (``calculate_honores_statistic``; higher =
  richer): the ``+ 0.1`` is always added (``V1 == V`` gives ``1000 ln N``); ``N <= 1`` gives 0.
* Linguistic Score (``as_mean``): the harmonic mean of ``sigmoid(-ln PPL) = 1/(1+PPL)``,
  ``sigmoid(-ln W) = 1/(1+W)`` and ``sigmoid(ln H) = H/(1+H)``, i.e. ``3 / ((1+PPL) + (1+W) + (1+H)/H)``;
  0 when ``H == 0``. Over a set it is taken of the *means* of PPL, W and H (``compute_as``), not as a mean
  of per-response scores, for the forget (``Harmonic_AS_F``) and the retain answers (``Harmonic_AS_R``).
  W and H are averaged over every response (an empty one gives 1000 and 0), PPL over the finite ones.
* PPL (``compute_ppl``): ``exp`` of the mean token NLL of the response given the question, under the model
  *before* the knowledge was injected (``eval_all.sh``: "the HF model before pretraining", Llama-2-7b-chat),
  not the model under audit. An empty or failed response gives NaN / -1 there and is left out of the mean;
  :func:`response_perplexity` gives ``nan`` for it. The published code tokenizes the question and
  question+response without a template; :func:`response_perplexity` scores the response as the item's answer
  in the model's prompt format (:meth:`unpact.models.Subject.encode`).
* KFR (``compute_kfr``): forgotten if an NLI model (DeBERTa-v3, premise = response, hypothesis = gold)
  says *contradiction*, or the entity similarity is ``<= 0.5`` (gold with <= 3 entities) / ``<= 0.3``.
  Entities come from an LLM prompt (excluding the question's words); similarity = (response, gold) entity
  pairs with MiniLM cosine >= 0.8, over the number of gold entities (0 if either side has none, so a gold
  answer without entities counts as forgotten).
* KRR (``compute_krr``): kept if NLI (premise = gold, hypothesis = response) is *not* contradiction **and**
  the entity similarity is ``>= 0.3``; no small-answer rule, so not the complement of the KFR rule.

Offline, :func:`entity_overlap_judge` (forget rule) and :func:`retain_overlap_judge` (retain rule) replace
the LLM entities by the gold answer's content words and numbers and the embedding match by whole-word
equality; there is no NLI, so a response that names the entities only to deny them counts as knowing them
(and a paraphrase or synonym as not). Any ``judge(generated, gold) -> bool`` (True = the gold fact is still
present) can replace them, e.g. one wrapping an NLI model.

:func:`relearn_metrics` gives all of them for one model as a :class:`Quality`, the type the audit's ``quality``
stage stores per model (:mod:`unpact.audit.stages.quality`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from unpact.data import Example
from unpact.errors import InputError, check_positive
from unpact.keytokens import FUNCTION_WORDS

__all__ = [
    "Judge", "words", "brunet_index", "honore_statistic", "linguistic_score", "combine_linguistic_score",
    "LinguisticScore", "linguistic_scores", "gold_entities", "entity_overlap", "entity_overlap_judge",
    "retain_overlap_judge", "kfr", "krr", "response_perplexity", "Quality", "relearn_metrics",
]  # fmt: skip

#: ``judge(generated, gold) -> bool``: True when the gold answer's fact is still present in ``generated``.
Judge = Callable[[str, str], bool]

HONORE_EPSILON = 0.1  #: added to Honore's denominator, as ``calculate_honores_statistic(epsilon=1e-1)`` does
BRUNET_EMPTY = 1000.0  #: Brunet's index of an empty text in the published code

_TOKEN = re.compile(r"\d+(?:[.,:]\d+)+|\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:-\w+)*|\.\.\.|[^\w\s]")


def words(text: str, *, punctuation: bool = True) -> list[str]:
    """Lower-cased tokens of ``text``, close to ``nltk.word_tokenize(text.lower())``.

    ``punctuation=False`` drops the punctuation tokens (``"."``, ``","``), which the published Brunet and
    Honore code counts. Raises :class:`InputError` if ``text`` is not a str."""
    if not isinstance(text, str):
        raise InputError(f"expected a str, got {type(text).__name__}", source="words")
    toks = _TOKEN.findall(text.lower())
    return toks if punctuation else [t for t in toks if re.search(r"\w", t)]


def brunet_index(text: str) -> float:
    """Brunet's ``W = N ** (V ** -0.165)`` over :func:`words`; 1000.0 for a text without tokens (published)."""
    toks = words(text)
    if not toks:
        return BRUNET_EMPTY
    return float(len(toks) ** (len(set(toks)) ** -0.165))


def honore_statistic(text: str) -> float:
    """Honore's ``H = 100 ln N / (1 - V1/V + 0.1)`` over :func:`words`, capped at 1e6; 0.0 when ``N <= 1``.

    ``V1 == V`` (every token used once) gives ``1000 ln N``, through the published ``+ 0.1``."""
    toks = words(text)
    n = len(toks)
    if n <= 1:
        return 0.0
    counts = Counter(toks)
    v1 = sum(1 for c in counts.values() if c == 1)
    return float(min(100.0 * math.log(n) / (1.0 - v1 / len(counts) + HONORE_EPSILON), 1e6))


def _check_ppl(ppl: float, where: str) -> float:
    if isinstance(ppl, bool) or not isinstance(ppl, numbers.Real) or not (math.isfinite(ppl) and ppl > 0):
        fix = "pass exp(mean NLL of the response tokens given the question) under the reference model"
        raise InputError(f"perplexity must be a finite number > 0, got {ppl!r}", source=where, fix=fix)
    return float(ppl)


def combine_linguistic_score(ppl: float, brunet: float, honore: float) -> float:
    """``3 / ((1 + PPL) + (1 + W) + (1 + H) / H)``, the harmonic mean of the three sigmoids; 0 when ``H <= 0``."""
    ppl = _check_ppl(ppl, "combine_linguistic_score")
    if not (math.isfinite(brunet) and brunet > 0 and math.isfinite(honore) and honore >= 0):
        raise InputError(f"need Brunet > 0 and Honore >= 0, got {brunet!r}, {honore!r}", source="linguistic score")
    if honore == 0:
        return 0.0
    return 3.0 / ((1.0 + ppl) + (1.0 + brunet) + (1.0 + honore) / honore)


def linguistic_score(text: str, ppl: float) -> float:
    """Linguistic Score of one response with perplexity ``ppl``, in ``[0, 1)`` (higher = better)."""
    return combine_linguistic_score(ppl, brunet_index(text), honore_statistic(text))


@dataclass(frozen=True)
class LinguisticScore:
    """Linguistic Score of a set of responses, from the means of its parts (``compute_as`` + ``as_mean``).

    Attributes:
        ppl: Mean perplexity over the responses with a finite one.
        brunet: Mean Brunet index over all responses.
        honore: Mean Honore statistic over all responses.
        score: :func:`combine_linguistic_score` of those means; ``nan`` if no perplexity was finite.
        n_ppl_skipped: Responses whose perplexity was ``nan`` (left out of ``ppl``).
    """

    ppl: float
    brunet: float
    honore: float
    score: float
    n_ppl_skipped: int = 0


def _texts(name: str, x: Sequence[str], where: str) -> list[str]:
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        raise InputError(f"{name} must be a sequence of str, got {type(x).__name__}", source=where)
    if not x:
        raise InputError(f"{name} is empty", source=where, fix="pass at least one item")
    for i, t in enumerate(x):
        if not isinstance(t, str):
            raise InputError(f"{name}[{i}] is a {type(t).__name__}, not a str", source=where)
    return list(x)


def _same_length(a: str, x: Sequence[Any], b: str, y: Sequence[Any] | np.ndarray, where: str) -> None:
    if len(x) != len(y):  # b is a plural noun
        raise InputError(f"{len(x)} {a} but {len(y)} {b}", source=where, fix=f"pass one {b[:-1]} per item")


def linguistic_scores(texts: Sequence[str], ppls: Sequence[float] | np.ndarray) -> LinguisticScore:
    """:class:`LinguisticScore` of ``texts`` given their perplexities (``nan`` = could not be computed).

    Raises:
        InputError: Empty or mismatched inputs, or a perplexity that is neither ``nan`` nor finite > 0.
    """
    where = "linguistic_scores"
    texts = _texts("texts", texts, where)
    _same_length("texts", texts, "perplexities", ppls, where)
    good = [_check_ppl(p, where) for p in ppls if not (isinstance(p, numbers.Real) and math.isnan(p))]
    w = sum(brunet_index(t) for t in texts) / len(texts)
    h = sum(honore_statistic(t) for t in texts) / len(texts)
    p = sum(good) / len(good) if good else math.nan
    return LinguisticScore(p, w, h, combine_linguistic_score(p, w, h) if good else math.nan, len(texts) - len(good))


def gold_entities(gold: str, ignore: Collection[str] = ()) -> list[str]:
    """Distinct content words and numbers of ``gold`` (function words, clitics, ``ignore`` dropped); a gold
    answer made only of function words falls back to all its words."""
    toks = [t for t in words(gold, punctuation=False) if t not in ignore and not t.startswith("'") and t != "n't"]
    content = [t for t in toks if t not in FUNCTION_WORDS]
    return list(dict.fromkeys(content or toks))


def entity_overlap(generated: str, gold: str, ignore: Collection[str] = ()) -> tuple[float, int]:
    """``(share of the gold entities found as whole words in generated, number of gold entities)``; 0.0 if none."""
    ents = gold_entities(gold, ignore)
    if not ents:
        return 0.0, 0
    have = set(words(generated, punctuation=False))
    return sum(e in have for e in ents) / len(ents), len(ents)


def entity_overlap_judge(
    generated: str, gold: str, *, threshold: float = 0.3, small_threshold: float = 0.5, max_small: int = 3,
    ignore: Collection[str] = (),
) -> bool:  # fmt: skip
    """ReLearn's forget rule without NLI: present unless overlap ``<= threshold`` (``<= small_threshold`` when
    the gold has at most ``max_small`` entities). A gold without entities counts as forgotten (published).

    ``ignore``: words not to count as entities, e.g. the question's (the published prompt excludes them).
    """
    overlap, n = entity_overlap(generated, gold, ignore)
    return overlap > (small_threshold if n <= max_small else threshold)


def retain_overlap_judge(generated: str, gold: str, *, threshold: float = 0.3, ignore: Collection[str] = ()) -> bool:
    """ReLearn's retain rule without NLI: kept when the entity overlap is ``>= threshold`` (no small-answer rule)."""
    return entity_overlap(generated, gold, ignore)[0] >= threshold


def _rate(generated: Sequence[str], gold: Sequence[str], judge: Judge, kept: bool, where: str) -> float:
    """Share of items whose ``judge`` call equals ``kept`` (True: KRR, False: KFR)."""
    g = _texts("generated answers", generated, where)
    r = _texts("gold answers", gold, where)
    _same_length("generated answers", g, "gold answers", r, where)
    if not callable(judge):
        raise InputError(f"judge must be callable, got {type(judge).__name__}", source=where)
    return sum(bool(judge(a, b)) == kept for a, b in zip(g, r)) / len(g)


def kfr(generated_forget: Sequence[str], gold_forget: Sequence[str], judge: Judge | None = None) -> float:
    """Knowledge Forgetting Rate: share of forget items judged forgotten (default :func:`entity_overlap_judge`).

    Raises:
        InputError: Empty or mismatched lists, a non-str item, or a judge that is not callable.
    """
    return _rate(generated_forget, gold_forget, judge or entity_overlap_judge, False, "kfr")


def krr(generated_retain: Sequence[str], gold_retain: Sequence[str], judge: Judge | None = None) -> float:
    """Knowledge Retention Rate: share of retain items the judge finds kept (default :func:`retain_overlap_judge`).

    Raises:
        InputError: Empty or mismatched lists, a non-str item, or a judge that is not callable.
    """
    return _rate(generated_retain, gold_retain, judge or retain_overlap_judge, True, "krr")


def response_perplexity(
    reference: Any, prompts: Sequence[str | Example], responses: Sequence[str], *, batch_size: int = 32
) -> np.ndarray:
    """Perplexity of each response given its prompt, under ``reference`` (a Subject), teacher-forced.

    Args:
        reference: The scoring model: ReLearn's is the model before the facts were trained in (the audit uses
            its retain-only model, else the base model).
        prompts: ``(n,)`` prompts (an :class:`~unpact.data.Example` keeps its own template).
        responses: ``(n,)`` responses; empty ones get ``nan``.

    Returns:
        ``(n,)`` ``exp(-mean log p(response tokens | prompt))``.

    Raises:
        InputError: Prompts and responses of different lengths, a bad batch size, or NaN/inf logits.
    """
    from unpact.data import fill_id
    from unpact.forward import prompt_pass

    check_positive("batch_size", batch_size, where="response_perplexity")
    _same_length("prompts", prompts, "responses", responses, "response_perplexity")
    out = np.full(len(prompts), np.nan)
    questions = [p if isinstance(p, Example) else Example(str(i), p, "x") for i, p in enumerate(prompts)]
    todo = [i for i, r in enumerate(responses) if r and r.strip() and questions[i].prompt.strip()]
    for s in range(0, len(todo), batch_size):
        idx = todo[s : s + batch_size]
        # an item's own template stays: only the answer is replaced by the response
        encs = [reference.encode(dataclasses.replace(questions[i], answer=responses[i].strip())) for i in idx]
        lps = prompt_pass(
            reference, [e.prompt_ids for e in encs], [e.answer_ids for e in encs], fill=fill_id(reference.tokenizer)
        ).answer_logprobs
        for j, lp in zip(idx, lps):
            out[j] = math.exp(-float(lp.mean()))
    return out


@dataclass(frozen=True)
class Quality:
    """ReLearn's metrics for one model (``None``: not computed, or no finite value).

    Attributes:
        kfr: Knowledge Forgetting Rate on the forget items (higher = more forgotten).
        krr: Knowledge Retention Rate on the retain items (higher = more kept).
        brunet_forget: Mean Brunet index of the forget answers (``BI_F``).
        honore_forget: Mean Honore statistic of the forget answers (``HS_F``).
        ppl_forget: Mean perplexity of the forget answers, empty ones left out (``PPL_F``).
        linguistic_score_forget: Linguistic Score of those three means (``Harmonic_AS_F``).
        brunet_retain: As ``brunet_forget``, for the retain answers (``BI_R``).
        honore_retain: Same, Honore (``HS_R``).
        ppl_retain: Same, perplexity (``PPL_R``).
        linguistic_score_retain: Same, Linguistic Score (``Harmonic_AS_R``).
        n_forget: Forget answers scored.
        n_retain: Retain answers scored.
        ppl_model: Name of the model that scored the perplexities (in an audit ``retain_only``, else ``base``).
            ``None`` in a summary written by an older unpact, whose ``ppl_forget`` was the median perplexity
            under the base model and ``linguistic_score_forget`` the mean of per-answer scores.
    """

    kfr: float | None = None
    krr: float | None = None
    brunet_forget: float | None = None
    honore_forget: float | None = None
    ppl_forget: float | None = None
    linguistic_score_forget: float | None = None
    brunet_retain: float | None = None
    honore_retain: float | None = None
    ppl_retain: float | None = None
    linguistic_score_retain: float | None = None
    n_forget: int | None = None
    n_retain: int | None = None
    ppl_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Quality:
        """Inverse of :meth:`to_dict`; fields missing from an older summary are ``None``."""
        return cls(**d)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _side(
    answers: Sequence[str], gold: Sequence[str], ppls: Sequence[float] | np.ndarray | None, judge: Judge, kept: bool,
    where: str,
) -> tuple[float | None, LinguisticScore | None]:  # fmt: skip
    """(KFR or KRR, Linguistic Score) of one side; ``(None, None)`` for an empty side."""
    if len(answers) == 0:
        _same_length("answers", answers, "gold answers", gold, where)
        if ppls is not None:
            _same_length("answers", answers, "perplexities", ppls, where)
        return None, None
    rate = _rate(answers, gold, judge, kept, where)
    return rate, None if ppls is None else linguistic_scores(answers, ppls)


def relearn_metrics(
    forget_answers: Sequence[str], forget_gold: Sequence[str], retain_answers: Sequence[str],
    retain_gold: Sequence[str], ppl_forget: Sequence[float] | np.ndarray | None = None, judge: Judge | None = None,
    *, retain_judge: Judge | None = None, ppl_retain: Sequence[float] | np.ndarray | None = None,
    ppl_model: str | None = None,
) -> Quality:  # fmt: skip
    """KFR, KRR and the Linguistic Score of the forget and the retain answers (``evaluate_models``).

    Args:
        forget_answers: The audited model's answers to the forget questions (may be empty: KFR and the forget
            scores are then ``None``).
        forget_gold: Their gold answers.
        retain_answers: Its answers to the retain questions (may be empty, likewise).
        retain_gold: Their gold answers.
        ppl_forget: Perplexity of each forget answer (:func:`response_perplexity` under the reference model);
            ``nan`` for an empty answer. ``None``: no forget Linguistic Score.
        judge: Judge for both sets; default :func:`entity_overlap_judge` (forget), :func:`retain_overlap_judge`
            (retain).
        retain_judge: Judge for the retain set only (overrides ``judge`` there).
        ppl_retain: Perplexities of the retain answers, likewise.
        ppl_model: Name of the model that scored the perplexities, stored in :attr:`Quality.ppl_model`.

    Raises:
        InputError: Both sets empty, mismatched lists, or a bad perplexity.
    """
    if len(forget_answers) == 0 and len(retain_answers) == 0:
        raise InputError("no forget and no retain answers", source="relearn_metrics", fix="pass at least one")
    k_f, ls_f = _side(forget_answers, forget_gold, ppl_forget, judge or entity_overlap_judge, False, "kfr")
    r_judge = retain_judge or judge or retain_overlap_judge
    k_r, ls_r = _side(retain_answers, retain_gold, ppl_retain, r_judge, True, "krr")
    parts: dict[str, Any] = {}
    for side, ls in (("forget", ls_f), ("retain", ls_r)):
        if ls is not None:
            parts |= {f"brunet_{side}": ls.brunet, f"honore_{side}": ls.honore, f"ppl_{side}": _finite(ls.ppl)}
            parts[f"linguistic_score_{side}"] = _finite(ls.score)
    n_f, n_r = len(forget_answers), len(retain_answers)
    return Quality(kfr=k_f, krr=k_r, n_forget=n_f, n_retain=n_r, ppl_model=ppl_model, **parts)
