"""Key words of a prompt, from word-level attributions: the unPact rule and the drop ranking.

unPact's KEYTOKENS rule on one model's attribution: normalise the positive word contributions to
shares (``share_i = max(s_i, 0) / sum_j max(s_j, 0)``); if fewer than ``beta`` words have a
positive contribution, all of them are key words, otherwise those whose share exceeds ``alpha``.
The paper publishes neither the normalisation nor alpha and beta; unpact's defaults are
``alpha = 0.1`` (a word carrying more than a tenth of the positive mass) and ``beta = 3``.

The *drop ranking* compares two models on the same (prompt, answer): the words whose share fell
most from the base model to the unlearned one (unPact's finding 1: unlearning removes the focus on
the key words). Both work on plain arrays, so any attribution method (integrated gradients,
leave-one-out, a user's own) can feed them; :func:`key_words` takes
:class:`unpact.attribution.Attribution`-like objects (``.words``, ``.word_scores``).

Words that cannot carry a fact are never key words: punctuation-only words, special tokens
(``<bos>``...), any word equal to the gold answer or sharing a content word with it (an attack
must never leak the answer), and the words of a *stop list* (:func:`stop_list`; by default English
function words: "the", "did", "What" carry no fact, and emphasising them is no attack).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from unpact.errors import InputError, UnknownNameError, check_count

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
    "FUNCTION_WORDS",
    "positive_shares",
    "unpact_rule",
    "drop_ranking",
    "key_words",
    "is_function_word",
    "is_candidate",
    "STOP_LISTS",
    "stop_list",
]

DEFAULT_ALPHA = 0.1
DEFAULT_BETA = 3

# English closed-class words (articles, pronouns, prepositions, auxiliaries, wh-words, conjunctions).
FUNCTION_WORDS: frozenset[str] = frozenset(
    """a an the this that these those what which who whom whose where when why how is are was were be been
    being am do does did done has have had having will would shall should can could may might must of in on
    at by for with from to into onto over under about as than then and or but nor so if not no yes it its
    he she him her his hers they them their theirs we us our you your i me my mine there here up down out off
    all any each some such very just also too s ''""".split()
)

#: Built-in stop lists by language code: words never chosen as key words. English is its closed-class words
#: (general-purpose stop lists, such as the ``stop-words`` package's, also hold content words like "year",
#: "home" or "name", which are exactly what a question about a person turns on).
STOP_LISTS: dict[str, frozenset[str]] = {"en": FUNCTION_WORDS}

StopWords = str | Iterable[str] | None


def stop_list(spec: StopWords) -> frozenset[str]:
    """The lower-cased words of a stop list.

    Args:
        spec: A language code of :data:`STOP_LISTS` (``"en"``), ``"none"`` or ``None`` (no stop list),
            the path of a UTF-8 text file with one word per line (blank lines and ``#`` comments
            skipped), or the words themselves.

    Raises:
        UnknownNameError: A string that is neither a known code nor an existing file.
        InputError: A file that cannot be read as UTF-8 text.
    """
    if spec is None:
        return frozenset()
    if isinstance(spec, str):
        code = spec.strip().lower()
        if code == "none":
            return frozenset()
        if code in STOP_LISTS:
            return STOP_LISTS[code]
        from pathlib import Path

        path = Path(spec).expanduser()
        if path.is_dir():
            raise UnknownNameError(
                f"stop list {spec!r} is a directory", source="stop_words", fix="name a text file with one word per line"
            )
        if not path.is_file():
            raise UnknownNameError(
                f"unknown stop list {spec!r}: not a language code ({', '.join(sorted(STOP_LISTS))}) nor a file",
                source="stop_words",
                fix="pass 'en', 'none', or the path of a text file with one word per line",
            )
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"cannot read the stop list {str(path)!r}: {exc}",
                source="stop_words",
                fix="give a readable UTF-8 text file with one word per line",
            ) from exc
        return frozenset(_norm(w) for w in lines if w.strip() and not w.lstrip().startswith("#"))
    return frozenset(_norm(str(w)) for w in spec)


def _norm(word: str) -> str:
    """Lower-cased, stripped, typographic apostrophes made plain."""
    return word.strip().lower().replace("\u2019", "'")


def _stopped(word: str, stop: frozenset[str]) -> bool:
    """Whether ``word`` is on the stop list: itself or its part before an apostrophe ("What's", "didn't").

    A word written in capitals ("US", "IT") is an acronym, never a stop word.
    """
    w = word.strip()
    if len(w) > 1 and w.isupper():
        return False
    n = _norm(w)
    return n in stop or n.split("'")[0] in stop or (n.endswith("n't") and n[:-3] in stop)


_SPECIAL = re.compile(r"^<[^<>\s]+>$|^\[[A-Z_]+\]$")


def is_function_word(word: str) -> bool:
    """True for English function words and punctuation-only words (case-insensitive)."""
    w = word.strip().lower()
    return w in FUNCTION_WORDS or not re.search(r"\w", w)


def _content_words(text: str) -> set[str]:
    """Lower-cased content words of ``text`` (punctuation ignored, function words dropped)."""
    from unpact.metrics import normalize_text

    return {t for t in normalize_text(text).split() if not is_function_word(t)}


def is_candidate(word: str, answer: str | None = None) -> bool:
    """Can ``word`` be a key word? Not punctuation, not a special token, not the gold answer.

    With ``answer``, a word equal to the answer or sharing a content word with it (case and
    punctuation ignored, function words do not count) is rejected: it would leak part of the answer.
    """
    w = word.strip()
    if not re.search(r"\w", w) or _SPECIAL.match(w):
        return False
    if answer:
        from unpact.metrics import normalize_text

        nw, na = normalize_text(w), normalize_text(answer)
        if nw and na and (nw == na or _content_words(w) & _content_words(answer)):
            return False
    return True


def positive_shares(
    scores: Sequence[float] | np.ndarray, mask: Sequence[bool] | np.ndarray | None = None
) -> np.ndarray:
    """Normalised positive contributions.

    Args:
        scores: ``(n_words,)`` contributions.
        mask: ``(n_words,)`` True for words that may count (others get share 0).

    Returns:
        ``(n_words,)`` shares ``max(s, 0) / sum max(s, 0)``; all zeros if nothing is positive.
    """
    s = np.asarray(scores, dtype=np.float64).copy()
    if s.ndim != 1:
        raise InputError(f"scores must be 1-D (one per word), got shape {s.shape}", source="positive_shares")
    s[~np.isfinite(s)] = 0.0
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != s.shape:
            raise InputError(f"mask shape {m.shape} does not match scores {s.shape}", source="positive_shares")
        s[~m] = 0.0
    pos = np.clip(s, 0.0, None)
    total = pos.sum()
    return pos / total if total > 0 else np.zeros_like(pos)


def _candidates(
    words: Sequence[str], answer: str | None, exclude: Iterable[str], stop_words: StopWords = "en"
) -> np.ndarray:
    ex = {e.strip().lower() for e in exclude}
    stop = stop_list(stop_words)
    return np.array(
        [is_candidate(w, answer) and w.strip().lower() not in ex and not _stopped(w, stop) for w in words], dtype=bool
    )


def unpact_rule(
    words: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    beta: int = DEFAULT_BETA,
    answer: str | None = None,
    exclude: Iterable[str] = (),
    stop_words: StopWords = "en",
) -> list[int]:
    """Indices of the key words by unPact's rule.

    Args:
        words: ``(n_words,)`` prompt words.
        scores: ``(n_words,)`` their contributions (any attribution method).
        alpha: Share threshold when at least ``beta`` words are positive.
        beta: Below this many positive words, all positive words are key words.
        answer: Gold answer; a word equal to it is never a key word.
        exclude: Further words to skip (case-insensitive).
        stop_words: Stop list (:func:`stop_list`): its words never count (English function words by default).

    Returns:
        Word indices in prompt order.

    Raises:
        InputError: If lengths differ or alpha/beta are out of range.
    """
    if len(words) != len(scores):
        raise InputError(
            f"{len(words)} words but {len(scores)} scores", source="unpact_rule", fix="pass one score per word"
        )
    if not 0.0 <= alpha < 1.0 or beta < 1:
        raise InputError(f"need 0 <= alpha < 1 and beta >= 1 (got alpha={alpha}, beta={beta})", source="unpact_rule")
    cand = _candidates(words, answer, exclude, stop_words)
    shares = positive_shares(scores, cand)
    positive = np.flatnonzero(shares > 0)
    if len(positive) < beta:
        return positive.tolist()
    return np.flatnonzero(shares > alpha).tolist()


def drop_ranking(
    words: Sequence[str],
    scores_before: Sequence[float] | np.ndarray,
    scores_after: Sequence[float] | np.ndarray,
    *,
    k: int = 3,
    answer: str | None = None,
    exclude: Iterable[str] = (),
    stop_words: StopWords = "en",
) -> list[int]:
    """Indices of the (at most) ``k`` words whose positive share fell most, before -> after.

    Only words with a strictly positive drop are returned, largest drop first; the words of
    ``stop_words`` (:func:`stop_list`) and ``exclude`` never count.

    Raises:
        InputError: If the three sequences differ in length or ``k`` is negative.
    """
    k = check_count("k", k, where="drop_ranking")
    if not len(words) == len(scores_before) == len(scores_after):
        raise InputError(
            f"words/scores lengths differ ({len(words)}, {len(scores_before)}, {len(scores_after)}); "
            "attribute the same prompt with the same tokenizer on both models"
        )
    cand = _candidates(words, answer, exclude, stop_words)
    drop = positive_shares(scores_before, cand) - positive_shares(scores_after, cand)
    order = np.argsort(-drop, kind="stable")
    return [int(i) for i in order[:k] if drop[i] > 0]


def key_words(
    base: Any,
    unlearned: Any = None,
    *,
    rule: Literal["unpact", "drop", "union"] = "unpact",
    alpha: float = DEFAULT_ALPHA,
    beta: int = DEFAULT_BETA,
    k: int = 3,
    answer: str | None = None,
    stop_words: StopWords = "en",
) -> list[str]:
    """Key words of one item from attributions (objects with ``.words`` and ``.word_scores``).

    Args:
        base: The base model's attribution of (prompt, answer).
        unlearned: The unlearned model's attribution of the same pair (needed by ``drop``/``union``).
        rule: ``"unpact"`` (unPact's rule on the base attribution), ``"drop"`` (largest share drop
            base -> unlearned) or ``"union"`` of both.
        alpha: Parameter of :func:`unpact_rule`.
        beta: Parameter of :func:`unpact_rule`.
        k: Words kept by :func:`drop_ranking`.
        answer: Gold answer (default: ``base.example.answer`` if present); never a key word.
        stop_words: Stop list (:func:`stop_list`); English function words by default, ``"none"`` for none.

    Returns:
        Distinct key words in prompt order.

    Raises:
        UnknownNameError: For an unknown rule.
        InputError: ``drop``/``union`` without the unlearned attribution, or attributions of different words.
    """
    if rule not in ("unpact", "drop", "union"):
        raise UnknownNameError(
            f"unknown key-word rule {rule!r}", source="rule", fix="choose 'unpact', 'drop' or 'union'"
        )
    if answer is None and getattr(base, "example", None) is not None:
        answer = base.example.answer
    words = list(base.words)
    idx: set[int] = set()
    if rule in ("unpact", "union"):
        idx |= set(unpact_rule(words, base.word_scores, alpha=alpha, beta=beta, answer=answer, stop_words=stop_words))
    if rule in ("drop", "union"):
        if unlearned is None:
            raise InputError(
                f"rule {rule!r} compares two models",
                source="key_words",
                fix="pass the unlearned model's attribution as unlearned=",
            )
        if list(unlearned.words) != words:
            raise InputError(
                "the two attributions split the prompt into different words",
                source="key_words",
                fix="attribute the same prompt with the same tokenizer on both models",
            )
        idx |= set(
            drop_ranking(words, base.word_scores, unlearned.word_scores, k=k, answer=answer, stop_words=stop_words)
        )
    return list(dict.fromkeys(words[i].strip() for i in sorted(idx)))
