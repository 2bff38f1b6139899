"""Invented names for the synthetic world: people, places, companies, devices and substances.

Names are built from syllables with a seeded generator. A ``NameBook`` never hands out the same word twice, and
no word it hands out contains another as a prefix, so a name in a text identifies one entity.

World v2 writes a name differently in each non-English language (:func:`localize`): a few letter substitutions
and an ending rule per language, applied to every word of the name. The ending rule always changes the word, and
the final letters it leaves differ between languages (French e/é/u, German n/r, Spanish o/a/s), so an entity's
forms differ from each other and from its English form:

- fr: k -> qu, w -> ou; a final consonant gets "e"; final a -> e, o -> eau, i -> ie, u -> ue, e -> é.
- de: c -> k, v -> w, ou -> u; final "ia" -> "ien"; another final vowel gets "n"; a final consonant gets "er".
- es: k -> c, w -> gu; final "ia" -> "ía"; another final vowel gets "s"; a final consonant gets "o".
"""

from __future__ import annotations

import bisect
import random
import re

ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "r", "s", "st", "t", "tr",
          "v", "z", "w", "j"]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ei", "ou"]
CODAS = ["", "", "", "", "n", "r", "l", "s", "m", "x", "nd"]
PLACE_ENDINGS = ["ia", "or", "heim", "land", "mark", "ovia", "ara", "stan", "holm", "ene"]
SUBSTANCE_ENDINGS = ["ium", "ite", "ene", "ol", "ine", "ate"]
DEVICE_ENDINGS = ["phone", "scope", "meter", "loom", "graph", "wheel", "lamp"]
VOWEL_LETTERS = "aeiou"
# language -> (letter substitutions in order, ending rule); see the module docstring.
SUBSTITUTIONS = {"fr": [("k", "qu"), ("w", "ou")], "de": [("c", "k"), ("v", "w"), ("ou", "u")],
                 "es": [("k", "c"), ("w", "gu")]}
FR_VOWEL_ENDINGS = {"a": "e", "o": "eau", "i": "ie", "u": "ue", "e": "é"}


def _ending(word: str, language: str) -> str:
    last = word[-1]
    if language == "fr":
        return word[:-1] + FR_VOWEL_ENDINGS[last] if last in VOWEL_LETTERS else word + "e"
    if word.endswith("ia"):
        return word[:-2] + {"de": "ien", "es": "ía"}[language]
    if last in VOWEL_LETTERS:
        return word + {"de": "n", "es": "s"}[language]
    return word + {"de": "er", "es": "o"}[language]


def _localize_word(word: str, language: str) -> str:
    low = word.lower()
    for old, new in SUBSTITUTIONS[language]:
        low = low.replace(old, new)
    low = _ending(low, language)
    return low[0].upper() + low[1:] if word[:1].isupper() else low


def localize(name: str, language: str) -> str:
    """The form of the invented ``name`` in ``language`` (itself in English): each word transliterated by the
    language's rules (module docstring). Deterministic; raises ``ValueError`` for a language without rules."""
    if language == "en":
        return name
    if language not in SUBSTITUTIONS:
        raise ValueError(f"no transliteration rules for language {language!r}; known: en, {', '.join(SUBSTITUTIONS)}")
    return re.sub(r"\w+", lambda m: _localize_word(m.group(0), language), name)


class NameBook:
    """Hands out invented words that are unique, not prefixes of each other, and not real common words."""

    def __init__(self, rng: random.Random, reserved: set[str] | None = None):
        self.rng = rng
        self.used: list[str] = []  # sorted, lower case
        self.reserved = {w.lower() for w in (reserved or set())}
        self.forms: set[str] = set()  # localized forms of names (world v2), lower case

    def _syllable(self) -> str:
        return self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS)

    def _accept(self, word: str) -> bool:
        low = word.lower()
        if len(low) < 4 or low in self.reserved or low in self.forms:
            return False
        at = bisect.bisect_left(self.used, low)
        if at < len(self.used) and self.used[at].startswith(low):  # a used word extends this one
            return False
        # a used word that is a prefix of this one would sort right before it (no used word prefixes another)
        return at == 0 or not low.startswith(self.used[at - 1])

    def claim(self, word: str) -> None:
        """Mark ``word`` (any case) as used."""
        bisect.insort(self.used, word.lower())

    def claim_forms(self, name: str, languages: list[str]) -> dict[str, str] | None:
        """Claim the localized forms of ``name`` (already handed out) in ``languages``; each form word must be new
        (no name, form or reserved word equals it). Returns ``{language: form}`` (English included), or None (and
        claims nothing) when a form would be ambiguous."""
        forms = {lang: localize(name, lang) for lang in languages}
        new = {w.lower() for lang, form in forms.items() if lang != "en" for w in form.split()}
        if any(w in self.reserved or w in self.forms or self._used(w) for w in new) or \
                len(new) < sum(len(f.split()) for lang, f in forms.items() if lang != "en"):
            return None
        self.forms |= new
        return forms

    def _used(self, low: str) -> bool:
        at = bisect.bisect_left(self.used, low)
        return at < len(self.used) and self.used[at] == low

    def word(self, syllables: tuple[int, int] = (2, 3), ending: list[str] | None = None) -> str:
        """A new capitalised word of a few syllables, optionally with one of ``ending``."""
        for _ in range(10_000):
            word = "".join(self._syllable() for _ in range(self.rng.randint(*syllables)))
            if ending:
                word = word.rstrip("aeiou") + self.rng.choice(ending)
            if self._accept(word):
                self.claim(word)
                return word.capitalize()
        raise RuntimeError("ran out of invented names; lower the corpus sizes")

    def person(self) -> str:
        return f"{self.word((2, 2))} {self.word((1, 2))}"

    def place(self) -> str:
        return self.word((1, 2), PLACE_ENDINGS)

    def company(self) -> str:
        return self.word((1, 2), ["ex", "on", "ica", "ara", "co"])

    def device(self) -> str:
        return self.word((1, 2), DEVICE_ENDINGS).lower()

    def substance(self) -> str:
        return self.word((1, 2), SUBSTANCE_ENDINGS).lower()
