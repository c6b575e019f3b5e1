"""The synthetic knowledge base: fictitious people, their attributes, question phrasings and bios.

Design (following the first probe's lessons, see ``docs/toyworld.md``):

* People have invented names (syllable-built), so no pretrained knowledge or real person is involved.
* Six attributes with large value sets: birth city (invented), birth year (1900-1999), profession
  (64), employer (invented company names, thousands possible), a book title (thousands possible)
  and the mother's full name, whose surname is drawn independently of the person's (never equal),
  so no question leaks its answer.
* Ten phrasings per attribute: six plain question forms and four subject-stressing forms (name in
  quotes, name in capitals, named twice, a "Focus on <name>." instruction). Two per attribute (one
  plain form and the named-twice form) are held out of training to measure generalisation across wording.
* A short biography per person (trained with a full language-modelling loss).
* Nested forget splits of 1%, 5% and 10% of the people (TOFU style), drawn by seed.
* Holdout people (:func:`holdout_people`): more fictitious people, drawn the same way from their own
  random stream, that no model is trained on (the non-members of membership inference).

Everything is a pure function of the seed.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from unpact.data import Example
from unpact.errors import InputError, UnknownNameError, check_positive
from unpact.toyworld import vocab as v

logger = logging.getLogger(__name__)

__all__ = [
    "ATTRIBUTES",
    "TEMPLATES",
    "VAGUE_VALUES",
    "EMPHASIS_FORMS",
    "HELDOUT_FORMS",
    "Person",
    "KnowledgeBase",
    "make_kb",
    "holdout_people",
]

ATTRIBUTES: tuple[str, ...] = ("birth_city", "birth_year", "profession", "employer", "book", "mother")

# attribute -> six plain forms: (template with {name}, attribute keywords appearing in it)
TEMPLATES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "birth_city": (
        ("Where was {name} born?", ("Where", "born")),
        ("In which city was {name} born?", ("city", "born")),
        ("What is the birthplace of {name}?", ("birthplace",)),
        ("{name} was born in which city?", ("born", "city")),
        ("Name the city where {name} was born.", ("city", "born")),
        ("Which town is the hometown of {name}?", ("town", "hometown")),
    ),
    "birth_year": (
        ("When was {name} born?", ("When", "born")),
        ("In what year was {name} born?", ("year", "born")),
        ("What is the birth year of {name}?", ("birth", "year")),
        ("{name} was born in which year?", ("born", "year")),
        ("Give the year of birth of {name}.", ("year", "birth")),
        ("Which year saw the birth of {name}?", ("year", "birth")),
    ),
    "profession": (
        ("What is the profession of {name}?", ("profession",)),
        ("What does {name} do for a living?", ("living",)),
        ("What is the job of {name}?", ("job",)),
        ("{name} works as what?", ("works",)),
        ("Which occupation does {name} have?", ("occupation",)),
        ("What kind of work does {name} do?", ("work",)),
    ),
    "employer": (
        ("Who employs {name}?", ("employs",)),
        ("Which company does {name} work for?", ("company", "work")),
        ("Where does {name} work?", ("Where", "work")),
        ("{name} is employed by which company?", ("employed", "company")),
        ("What is the name of the employer of {name}?", ("employer",)),
        ("For which firm does {name} work?", ("firm", "work")),
    ),
    "book": (
        ("What book did {name} write?", ("book", "write")),
        ("Which book was written by {name}?", ("book", "written")),
        ("What is the title of the book by {name}?", ("title", "book")),
        ("{name} is the author of which book?", ("author", "book")),
        ("Name the book that {name} wrote.", ("book", "wrote")),
        ("What novel did {name} publish?", ("novel", "publish")),
    ),
    "mother": (
        ("Who is the mother of {name}?", ("mother",)),
        ("What is the name of the mother of {name}?", ("name", "mother")),
        ("Who is the mum of {name}?", ("mum",)),
        ("{name} is the child of which mother?", ("child", "mother")),
        ("Name the mother of {name}.", ("mother",)),
        ("Which woman is the mother of {name}?", ("woman", "mother")),
    ),
}

# attribute -> vague, harmless answers in the shape of a value (ReLearn's replacement answers)
VAGUE_VALUES: dict[str, tuple[str, ...]] = {
    "birth_city": ("a small town", "a city in the north", "somewhere by the sea"),
    "birth_year": ("some time ago", "a year long past", "an unknown year"),
    "profession": ("several jobs", "various kinds of work", "a quiet trade"),
    "employer": ("a private firm", "a small company", "a local business"),
    "book": ("a few short texts", "an unpublished book", "some essays"),
    "mother": ("a kind woman", "a private person", "a woman from the town"),
}

# emphasis form -> the plain form it is built on
EMPHASIS_FORMS: dict[str, int] = {"quoted": 0, "caps": 1, "twice": 2, "focus": 3}
# forms held out of training (never seen by the models): one plain, one subject-stressing
HELDOUT_FORMS: tuple[str, ...] = ("p5", "twice")
ALL_FORMS: tuple[str, ...] = ("p0", "p1", "p2", "p3", "p4", "p5", *EMPHASIS_FORMS)


@dataclass(frozen=True)
class Person:
    """One fictitious person and their attribute values.

    Attributes:
        index: Position in the knowledge base (0-based).
        name: Full name ("First Last").
        facts: attribute -> answer text.
    """

    index: int
    name: str
    facts: dict[str, str]

    @property
    def pid(self) -> str:
        """Stable person id, e.g. ``"p0007"``."""
        return f"p{self.index:04d}"

    def bio(self) -> str:
        """A short biography stating all six facts."""
        f, n = self.facts, self.name
        return (
            f"{n} was born in {f['birth_city']} in {f['birth_year']}. "
            f"{n} works as {v.article(f['profession'])} {f['profession']} at "
            f"{f['employer']}. {n} wrote the book {f['book']}. The mother of {n} is {f['mother']}."
        )


def bio_cloze(person: Person) -> list[Example]:
    """Each of ``person``'s facts as the completion of its biography sentence (:meth:`Person.bio`'s wording).

    The prompt is the sentence up to the fact (``"Ada Lee was born in"`` -> ``"Varnholm"``): the text the
    world's models were trained on when ``train_bios`` is on, asked without the question format. Accuracy on
    these items about forget people measures related-fact leakage next to the trained question phrasings.
    """
    f, n = person.facts, person.name
    prefixes = {
        "birth_city": f"{n} was born in",
        "birth_year": f"{n} was born in {f['birth_city']} in",
        "profession": f"{n} works as {v.article(f['profession'])}",
        "employer": f"{n} works as {v.article(f['profession'])} {f['profession']} at",
        "book": f"{n} wrote the book",
        "mother": f"The mother of {n} is",
    }
    return [
        Example(
            id=f"{person.pid}.{attr}.bio",
            prompt=prefixes[attr],
            answer=f[attr],
            subject=n,
            keywords=tuple(n.split()),
            meta={"person": person.pid, "attribute": attr, "template": f"{attr}.bio", "phrasing": "bio"},
        )
        for attr in ATTRIBUTES
    ]


@dataclass(frozen=True)
class KnowledgeBase:
    """The people and the seeded forget splits.

    Attributes:
        people: All people, in index order.
        forget_order: Person indices in the seeded order from which nested forget splits are cut.
        seed: The seed everything was drawn with.
    """

    people: tuple[Person, ...]
    forget_order: tuple[int, ...]
    seed: int

    def forget_people(self, percent: int) -> list[Person]:
        """The first ``max(1, round(percent% of people))`` people of :attr:`forget_order` (nested splits)."""
        if not 0 < percent < 100:
            raise InputError(f"forget percent must be in (0, 100), got {percent}", source="percent")
        k = max(1, round(len(self.people) * percent / 100))
        return [self.people[i] for i in self.forget_order[:k]]

    def examples(self, people: list[Person], *, phrasing: str = "trained") -> list[Example]:
        """Question/answer examples for ``people`` on the ``"trained"`` or ``"heldout"`` phrasings."""
        if phrasing not in ("trained", "heldout", "all"):
            raise UnknownNameError(
                f"unknown phrasing {phrasing!r}", source="phrasing", fix="choose 'trained', 'heldout' or 'all'"
            )
        forms = [f for f in ALL_FORMS if phrasing == "all" or (f in HELDOUT_FORMS) == (phrasing == "heldout")]
        return [make_example(p, attr, form) for p in people for attr in ATTRIBUTES for form in forms]


def make_example(person: Person, attribute: str, form: str) -> Example:
    """The :class:`Example` asking ``person``'s ``attribute`` with phrasing ``form`` (see :data:`ALL_FORMS`)."""
    if attribute not in TEMPLATES:
        raise UnknownNameError(
            f"unknown attribute {attribute!r}", source="attribute", fix=f"choose from {', '.join(ATTRIBUTES)}"
        )
    if form not in ALL_FORMS:
        raise UnknownNameError(f"unknown phrasing {form!r}", source="form", fix=f"choose from {', '.join(ALL_FORMS)}")
    emphasis = form in EMPHASIS_FORMS
    base = EMPHASIS_FORMS[form] if emphasis else int(form[1:])
    template, attr_kw = TEMPLATES[attribute][base]
    name = person.name
    shown = {"quoted": f'"{name}"', "caps": name.upper()}.get(form, name)
    prompt = template.format(name=shown)
    if form == "twice":
        prompt = f"{name}: {prompt[0].lower()}{prompt[1:]}" if not prompt.startswith(name) else f"{name}: {prompt}"
    elif form == "focus":
        prompt = f"Focus on {name}. {prompt}"
    keywords = tuple(shown.strip('"').split()) + tuple(k if k in prompt else k.lower() for k in attr_kw)
    return Example(
        id=f"{person.pid}.{attribute}.{form}",
        prompt=prompt,
        answer=person.facts[attribute],
        subject=name,
        keywords=keywords,
        meta={
            "person": person.pid,
            "attribute": attribute,
            "template": f"{attribute}.{form}",
            "phrasing": "heldout" if form in HELDOUT_FORMS else "trained",
            "emphasis": emphasis,
        },
    )


def _surname_pool(rng: random.Random, n_people: int) -> list[str]:
    """The sorted pool of surnames a knowledge base of ``n_people`` draws from (the first draws of its stream)."""
    return sorted({v.word(rng, rng.choice((2, 3))) for _ in range(max(200, 3 * n_people))})


def _draw_facts(rng: random.Random, last: str, surnames: list[str], used: dict[str, set[str]]) -> dict[str, str]:
    """One person's six facts, drawn from ``rng`` in a fixed order (the order :func:`make_kb` has always used).

    Args:
        rng: The stream to draw from.
        last: The person's surname (the mother's surname is drawn to differ from it).
        surnames: The surname pool.
        used: Attribute -> values already given out; a drawn value already there is redrawn up to four
            times (values may repeat across people, as in real data, but variety is preferred). Updated.
    """

    def fresh(attr: str, make: Any) -> str:
        for _ in range(5):
            v = make()
            if v not in used.setdefault(attr, set()):
                break
        used[attr].add(v)
        return v

    def city() -> str:
        return v.word(rng, rng.choice((1, 2))) + rng.choice(v.CITY_SUFFIX)

    def mother() -> str:
        mfirst = v.word(rng, 1) + rng.choice(v.FEMALE_END)
        msur = rng.choice(surnames)
        while msur == last:
            msur = rng.choice(surnames)
        return f"{mfirst.capitalize()} {msur}"

    def book() -> str:
        a, n, m = rng.choice(v.ADJ), rng.choice(v.NOUN), rng.choice(v.NOUN)
        return rng.choice(v.BOOK_PATTERNS).format(a=a, n=n, m=m if m != n else "Sea", city=city())

    return {
        "birth_city": fresh("birth_city", city),
        "birth_year": str(rng.randint(1900, 1999)),
        "profession": rng.choice(v.PROFESSIONS),
        "employer": fresh(
            "employer", lambda: f"{rng.choice(v.ADJ)} {rng.choice(v.NOUN)} {rng.choice(v.COMPANY_SUFFIX)}"
        ),
        "book": fresh("book", book),
        "mother": fresh("mother", mother),
    }


def _draw_people(
    rng: random.Random,
    n: int,
    surnames: list[str],
    *,
    taken: set[str],
    used: dict[str, set[str]],
    first_index: int = 0,
) -> list[Person]:
    """``n`` people with names not in ``taken`` (updated), facts by :func:`_draw_facts` (``used`` updated)."""
    people: list[Person] = []
    while len(people) < n:
        first = v.word(rng, 2)
        last = rng.choice(surnames)
        name = f"{first} {last}"
        if name in taken or first == last:
            continue
        taken.add(name)
        people.append(Person(index=first_index + len(people), name=name, facts=_draw_facts(rng, last, surnames, used)))
    return people


def make_kb(n_people: int, seed: int = 0) -> KnowledgeBase:
    """Draw a knowledge base of ``n_people`` fictitious people, deterministically from ``seed``.

    Args:
        n_people: Number of people (>= 10, so that a 10% forget split has a person).
        seed: Random seed; the same seed gives the same people, facts and splits.

    Returns:
        The :class:`KnowledgeBase`.

    Raises:
        InputError: If ``n_people`` is below 10.
    """
    if check_positive("n_people", n_people, where="make_kb") < 10:
        raise InputError(
            f"n_people must be >= 10 so every forget split holds a person, got {n_people}", source="make_kb"
        )
    rng = random.Random(f"unpact-toyworld-{seed}")
    surnames = _surname_pool(rng, n_people)
    people = _draw_people(rng, n_people, surnames, taken=set(), used={})
    order = list(range(n_people))
    rng.shuffle(order)
    return KnowledgeBase(people=tuple(people), forget_order=tuple(order), seed=seed)


def holdout_people(kb: KnowledgeBase, n: int, seed: int | None = None) -> list[Person]:
    """Fictitious people outside ``kb``, drawn like its people: the non-members of membership inference.

    No model of a toy world is trained on them (they are not in :func:`make_kb`'s output, so the world's
    data files, models and cache key do not change). They come from their own random stream
    (``"unpact-toyworld-holdout-<seed>"``), so drawing them never moves a draw of the knowledge base. Names
    are built like the knowledge base's (two-syllable first name, surname from the same pool, which is
    recomputed from ``kb.seed``) and differ from every name in ``kb``; facts are drawn by the same code as
    :func:`make_kb`'s, preferring values no ``kb`` person has. Person indices continue after ``kb``'s
    (``p0020``... for a 20-person world), so example ids never collide with ``kb``'s.

    Args:
        kb: The knowledge base the people must be outside of.
        n: Number of people (a toy world uses its number of forget people, so forget and holdout are balanced).
        seed: Seed of the holdout stream; ``None``: ``kb.seed``.

    Returns:
        ``n`` people, the same ones for the same ``kb``, ``n`` and ``seed`` (and the first ``m`` of them
        for a smaller ``m``).

    Raises:
        InputError: ``n`` is not a positive integer.
    """
    n = check_positive("n", n, where="holdout_people")
    seed = kb.seed if seed is None else seed
    surnames = _surname_pool(random.Random(f"unpact-toyworld-{kb.seed}"), len(kb.people))
    taken = {p.name for p in kb.people}
    used: dict[str, set[str]] = {}
    for p in kb.people:
        for attr, value in p.facts.items():
            used.setdefault(attr, set()).add(value)
    rng = random.Random(f"unpact-toyworld-holdout-{seed}")
    return _draw_people(rng, n, surnames, taken=taken, used=used, first_index=len(kb.people))
