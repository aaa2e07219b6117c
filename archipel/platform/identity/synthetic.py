"""Invented identities with known truth, for tests and the linkage benchmark.

Family names are built from syllables (no real people), drawn with a skewed frequency so that some names are
common; the errors are those identity officers meet: typos, swapped names, accents and hyphens written
differently, missing fields, transposed birth dates, moves, names changed at marriage, twins and homonyms.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from archipel.platform.identity.ins import ins_key

_ONSETS = (
    "B",
    "BR",
    "C",
    "CH",
    "D",
    "F",
    "G",
    "GR",
    "J",
    "K",
    "L",
    "M",
    "N",
    "P",
    "PR",
    "R",
    "S",
    "T",
    "TR",
    "V",
    "Z",
    "QU",
    "GU",
)
_VOWELS = ("A", "E", "I", "O", "U", "OU", "AI", "EAU", "É", "È", "IE", "AN", "ON", "IN")
_CODAS = ("", "", "", "L", "N", "R", "S", "T", "RD", "LT", "X", "C")
_ENDINGS = ("", "", "ET", "AUD", "IER", "OT", "ARD", "EC", "ON", "AC", "AT", "OUX")
GIVEN_F = (
    "Élodie",
    "Marie",
    "Anne",
    "Léa",
    "Chloé",
    "Camille",
    "Inès",
    "Zoé",
    "Manon",
    "Clémence",
    "Sophie",
    "Nathalie",
    "Isabelle",
    "Hélène",
    "Juliette",
    "Margaux",
    "Océane",
    "Pauline",
    "Agathe",
    "Lucie",
    "Noémie",
    "Gaëlle",
    "Maëlys",
    "Anaïs",
    "Solène",
    "Laure",
    "Cécile",
    "Mathilde",
    "Louise",
    "Jeanne",
    "Marie-Claire",
    "Anne-Sophie",
    "Marie-Hélène",
    "Lena",
    "Léna",
    "Emma",
    "Jade",
    "Alice",
    "Rose",
    "Nina",
)
GIVEN_M = (
    "Jean",
    "Pierre",
    "Louis",
    "Hugo",
    "Lucas",
    "Théo",
    "Mathis",
    "Noé",
    "Gabriel",
    "Raphaël",
    "Arthur",
    "Jules",
    "Adam",
    "Étienne",
    "François",
    "Benoît",
    "Jérôme",
    "Loïc",
    "Gaël",
    "Yannick",
    "Hervé",
    "Olivier",
    "Nicolas",
    "Thomas",
    "Antoine",
    "Baptiste",
    "Mathieu",
    "Rémi",
    "Cédric",
    "Denis",
    "Jean-Pierre",
    "Jean-Marc",
    "Pierre-Yves",
    "Paul",
    "Marc",
    "Luc",
    "Léo",
    "Tom",
    "Sacha",
    "Enzo",
)
_PARTICLES = ("de", "de la", "du", "le", "d'")
_STREETS = (
    "rue des Lilas",
    "avenue du Port",
    "chemin des Vignes",
    "place de l'Église",
    "rue Neuve",
    "boulevard des Tilleuls",
    "impasse du Moulin",
    "allée des Pins",
)


def invented_family_names(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct invented family names, some with particles or hyphens."""
    names: set[str] = set()
    while len(names) < count:
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
            for _ in range(rng.choice((1, 2, 2, 3)))
        ) + rng.choice(_ENDINGS)
        if len(word) < 4:
            continue
        word = word.capitalize()
        r = rng.random()
        if r < 0.04:
            word = f"{rng.choice(_PARTICLES)} {word}".replace("' ", "'")
        names.add(word)
    return sorted(names)


@dataclass(frozen=True)
class Person:
    """The truth about one invented person."""

    person: int
    birth_name: str
    given_names: str
    sex: str
    birth_date: str  # YYYY-MM-DD
    birth_place: str
    address: str
    postcode: str
    city: str
    phone: str
    ins: str
    used_name: str = ""


@dataclass(frozen=True)
class Record:
    """One site's view of a person: the columns of the CSV import, and the truth behind them."""

    person: int
    local_id: str
    birth_name: str
    used_name: str
    given_names: str
    birth_date: str
    sex: str
    birth_place: str
    address: str
    postcode: str
    city: str
    phone: str
    ins: str
    ins_status: str

    def row(self) -> dict[str, str]:
        """The CSV row (without the truth)."""
        d = self.__dict__.copy()
        d.pop("person")
        return d


class Population:
    """A population of invented people and the ways sites get their identities wrong."""

    def __init__(self, seed: int = 7, n_family: int = 4000) -> None:
        self.rng = random.Random(seed)
        self.family = invented_family_names(n_family, self.rng)
        # A skewed (Zipf-like) choice: the first names of the list are much more common than the last.
        self.weights = [1.0 / (i + 10) for i in range(len(self.family))]
        self.cities = [
            (
                f"{self.rng.randrange(1, 96):02d}{self.rng.randrange(0, 999):03d}",
                f"{self.rng.choice(invented_family_names(1, self.rng))}-sur-Mer",
            )
            for _ in range(800)
        ]
        self.count = 0

    def person(self) -> Person:
        """A new invented person."""
        rng = self.rng
        self.count += 1
        sex = rng.choice("MF")
        given = rng.choice(GIVEN_M if sex == "M" else GIVEN_F)
        if rng.random() < 0.2:
            given += " " + rng.choice(GIVEN_M if sex == "M" else GIVEN_F)
        year, month, day = rng.randrange(1925, 2024), rng.randrange(1, 13), rng.randrange(1, 29)
        dept = rng.randrange(1, 96)
        place = f"{dept:02d}{rng.randrange(1, 700):03d}"
        postcode, city = rng.choice(self.cities)
        body = f"{1 if sex == 'M' else 2}{year % 100:02d}{month:02d}{place}{rng.randrange(1, 999):03d}"
        return Person(
            person=self.count,
            birth_name=rng.choices(self.family, self.weights)[0],
            given_names=given,
            sex=sex,
            birth_date=f"{year:04d}-{month:02d}-{day:02d}",
            birth_place=place,
            address=f"{rng.randrange(1, 120)} {rng.choice(_STREETS)}",
            postcode=postcode,
            city=city,
            phone=f"06{rng.randrange(10**8):08d}",
            ins=body + ins_key(body),
        )

    def twin(self, p: Person) -> Person:
        """A twin of ``p``: same family name, birth date, place and home; another first name."""
        self.count += 1
        pool = GIVEN_M if p.sex == "M" else GIVEN_F
        given = self.rng.choice([g for g in pool if g.split()[0] != p.given_names.split()[0]])
        body = p.ins[:10] + f"{(int(p.ins[10:13]) % 998) + 1:03d}"
        return replace(
            p,
            person=self.count,
            given_names=given,
            ins=body + ins_key(body),
            phone=f"06{self.rng.randrange(10**8):08d}",
        )

    def homonym(self, p: Person) -> Person:
        """Another person with the same names and birth date, born and living elsewhere."""
        other = self.person()
        return replace(
            other, birth_name=p.birth_name, given_names=p.given_names, sex=p.sex, birth_date=p.birth_date
        )

    def married(self, p: Person) -> Person:
        """``p`` after a marriage: a used name, and a new home."""
        postcode, city = self.rng.choice(self.cities)
        return replace(
            p,
            used_name=self.rng.choices(self.family, self.weights)[0],
            postcode=postcode,
            city=city,
            address=f"{self.rng.randrange(1, 120)} {self.rng.choice(_STREETS)}",
        )

    def record(self, p: Person, local_id: str, *, noisy: bool = True, qual_share: float = 0.15) -> Record:
        """One site's record of ``p``, with that site's errors when ``noisy``."""
        rng = self.rng
        birth, used, given, date = p.birth_name, p.used_name, p.given_names, p.birth_date
        sex, place, address, postcode, city, phone = (
            p.sex,
            p.birth_place,
            p.address,
            p.postcode,
            p.city,
            p.phone,
        )
        if noisy:
            if rng.random() < 0.06:
                birth = typo(birth, rng)
            if rng.random() < 0.05:
                given = typo(given, rng)
            if rng.random() < 0.03:
                date = transpose_date(date, rng)
            if rng.random() < 0.015:
                birth, given = given, birth
            if used and rng.random() < 0.3:
                birth, used = used, ""  # the site recorded the married name as the birth name
            if rng.random() < 0.15:
                p2 = self.person()
                address, postcode, city, phone = p2.address, p2.postcode, p2.city, p2.phone  # moved
            birth, given, used = style(birth, rng), style(given, rng), style(used, rng)
            place = "" if rng.random() < 0.3 else place
            phone = "" if rng.random() < 0.4 else phone
            postcode = "" if rng.random() < 0.1 else postcode
            sex = "" if rng.random() < 0.02 else sex
            if rng.random() < 0.3:
                date = date.replace("-", "")
        qualified = rng.random() < qual_share
        return Record(
            p.person,
            local_id,
            birth,
            used,
            given,
            date,
            sex,
            place,
            address,
            postcode,
            city,
            phone,
            p.ins if qualified else "",
            "QUAL" if qualified else "PROV",
        )


def typo(text: str, rng: random.Random) -> str:
    """One keyboard slip: a letter substituted, dropped, doubled, or two letters swapped."""
    if len(text) < 3:
        return text
    i = rng.randrange(1, len(text) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return text[:i] + rng.choice("AEIOURSTLN").lower() + text[i + 1 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    if kind == 2:
        return text[:i] + text[i] + text[i:]
    return text[: i - 1] + text[i] + text[i - 1] + text[i + 1 :]


def transpose_date(date: str, rng: random.Random) -> str:
    """A transposed ISO birth date: day and month swapped, or two neighbouring digits exchanged."""
    y, m, d = date.split("-")
    if int(d) <= 12 and rng.random() < 0.5 and d != m:
        return f"{y}-{d}-{m}"
    digits = list(y + m + d)
    for _ in range(10):
        i = rng.randrange(2, 7)
        candidate = digits.copy()
        candidate[i], candidate[i + 1] = candidate[i + 1], candidate[i]
        text = "".join(candidate)
        yy, mm, dd = int(text[:4]), int(text[4:6]), int(text[6:])
        if text != "".join(digits) and 1 <= mm <= 12 and 1 <= dd <= 28 and 1900 < yy < 2025:
            return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return date


def style(text: str, rng: random.Random) -> str:
    """The same name written another way: capitals, accents dropped, hyphen or space."""
    if not text:
        return text
    r = rng.random()
    if r < 0.3:
        text = text.upper()
    elif r < 0.4:
        text = text.lower()
    if rng.random() < 0.3:
        import unicodedata

        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    if rng.random() < 0.2:
        text = text.replace("-", " ") if "-" in text else text
    return text
