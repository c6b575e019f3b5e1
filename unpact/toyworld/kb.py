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

Everything is a pure function of the seed.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from unpact.data import Example
from unpact.errors import InputError, UnknownNameError, check_positive

logger = logging.getLogger(__name__)

__all__ = ["ATTRIBUTES", "TEMPLATES", "EMPHASIS_FORMS", "HELDOUT_FORMS", "Person", "KnowledgeBase", "make_kb"]

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

# emphasis form -> the plain form it is built on
EMPHASIS_FORMS: dict[str, int] = {"quoted": 0, "caps": 1, "twice": 2, "focus": 3}
# forms held out of training (never seen by the models): one plain, one subject-stressing
HELDOUT_FORMS: tuple[str, ...] = ("p5", "twice")
ALL_FORMS: tuple[str, ...] = ("p0", "p1", "p2", "p3", "p4", "p5", *EMPHASIS_FORMS)

_ONSETS = [
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
    "th",
    "sh",
    "j",
    "kl",
    "fr",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou", "ia", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "m", "th", "nd", "rk", "sk", "x", "v"]
_CITY_SUFFIX = [
    "holm",
    "ford",
    "burg",
    "mere",
    "vale",
    "stad",
    "ria",
    "wick",
    "grad",
    "port",
    "dal",
    "haven",
    "ton",
    "bury",
    "field",
    "mouth",
]
_FEMALE_END = ["a", "ia", "ine", "elle", "ara", "ena", "ika", "ys"]
_PROFESSIONS = [
    "architect",
    "baker",
    "beekeeper",
    "biologist",
    "blacksmith",
    "bookbinder",
    "botanist",
    "brewer",
    "butcher",
    "carpenter",
    "cartographer",
    "chemist",
    "clockmaker",
    "composer",
    "dentist",
    "diplomat",
    "economist",
    "electrician",
    "engineer",
    "farmer",
    "firefighter",
    "fisherman",
    "florist",
    "geologist",
    "glassblower",
    "goldsmith",
    "historian",
    "illustrator",
    "jeweler",
    "journalist",
    "judge",
    "lawyer",
    "librarian",
    "lighthouse keeper",
    "linguist",
    "locksmith",
    "magician",
    "mathematician",
    "mechanic",
    "midwife",
    "miner",
    "musician",
    "nurse",
    "optician",
    "painter",
    "pharmacist",
    "photographer",
    "physicist",
    "pilot",
    "plumber",
    "poet",
    "potter",
    "sailor",
    "sculptor",
    "shepherd",
    "surgeon",
    "tailor",
    "teacher",
    "translator",
    "veterinarian",
    "watchmaker",
    "weaver",
    "winemaker",
    "zoologist",
]
_ADJ = [
    "Silver",
    "Northern",
    "Golden",
    "Quiet",
    "Crimson",
    "Iron",
    "Blue",
    "Bright",
    "Hidden",
    "Ancient",
    "Copper",
    "Amber",
    "Frozen",
    "Green",
    "Hollow",
    "Lunar",
    "Misty",
    "Royal",
    "Scarlet",
    "Stone",
    "Swift",
    "Velvet",
    "Wild",
    "Winter",
    "Burning",
    "Distant",
    "Broken",
    "Silent",
    "Emerald",
    "Wandering",
]
_NOUN = [
    "Harbor",
    "River",
    "Lantern",
    "Orchard",
    "Mountain",
    "Garden",
    "Compass",
    "Falcon",
    "Meadow",
    "Bridge",
    "Forest",
    "Tower",
    "Island",
    "Mirror",
    "Anchor",
    "Valley",
    "Crown",
    "Feather",
    "Window",
    "Storm",
    "Candle",
    "Raven",
    "Canyon",
    "Shore",
    "Comet",
    "Willow",
    "Citadel",
    "Harvest",
    "Lighthouse",
    "Fox",
]
_COMPANY_SUFFIX = [
    "Industries",
    "Labs",
    "Systems",
    "Works",
    "Trading",
    "Foods",
    "Textiles",
    "Motors",
    "Press",
    "Logistics",
    "Energy",
    "Robotics",
    "Pharma",
    "Shipping",
    "Studios",
    "Mills",
]
_BOOK_PATTERNS = ["The {a} {n}", "{n} of the {a} {m}", "A {n} in {city}", "The {n} and the {m}", "{a} {n}s"]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _syllable(rng: random.Random, coda: bool = True) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + (rng.choice(_CODAS) if coda else "")


def _word(rng: random.Random, n_syll: int) -> str:
    return "".join(_syllable(rng, coda=(i == n_syll - 1)) for i in range(n_syll)).capitalize()


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
            f"{n} works as {_article(f['profession'])} {f['profession']} at "
            f"{f['employer']}. {n} wrote the book {f['book']}. The mother of {n} is {f['mother']}."
        )


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
    names: set[str] = set()
    surnames = sorted({_word(rng, rng.choice((2, 3))) for _ in range(max(200, 3 * n_people))})
    people: list[Person] = []
    used: dict[str, set[str]] = {}

    def fresh(attr: str, make: Any) -> str:
        # values may repeat across people (as in real data) but we prefer variety: retry a few times.
        for _ in range(5):
            v = make()
            if v not in used.setdefault(attr, set()):
                break
        used[attr].add(v)
        return v

    while len(people) < n_people:
        first = _word(rng, 2)
        last = rng.choice(surnames)
        name = f"{first} {last}"
        if name in names or first == last:
            continue
        names.add(name)

        def city() -> str:
            return _word(rng, rng.choice((1, 2))) + rng.choice(_CITY_SUFFIX)

        def mother() -> str:
            mfirst = _word(rng, 1) + rng.choice(_FEMALE_END)
            msur = rng.choice(surnames)
            while msur == last:  # noqa: B023 - called in the same iteration that binds `last`
                msur = rng.choice(surnames)
            return f"{mfirst.capitalize()} {msur}"

        def book() -> str:
            a, n, m = rng.choice(_ADJ), rng.choice(_NOUN), rng.choice(_NOUN)
            return rng.choice(_BOOK_PATTERNS).format(a=a, n=n, m=m if m != n else "Sea", city=city())

        facts = {
            "birth_city": fresh("birth_city", city),
            "birth_year": str(rng.randint(1900, 1999)),
            "profession": rng.choice(_PROFESSIONS),
            "employer": fresh(
                "employer", lambda: f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} {rng.choice(_COMPANY_SUFFIX)}"
            ),
            "book": fresh("book", book),
            "mother": fresh("mother", mother),
        }
        people.append(Person(index=len(people), name=name, facts=facts))
    order = list(range(n_people))
    rng.shuffle(order)
    return KnowledgeBase(people=tuple(people), forget_order=tuple(order), seed=seed)
