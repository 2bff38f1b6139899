"""Invented names for the synthetic world: people, places, companies, devices and substances.

Names are built from syllables with a seeded generator. A ``NameBook`` never hands out the same word twice, and
no word it hands out contains another as a prefix, so a name in a text identifies one entity.
"""

from __future__ import annotations

import bisect
import random

ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "r", "s", "st", "t", "tr",
          "v", "z", "w", "j"]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ei", "ou"]
CODAS = ["", "", "", "", "n", "r", "l", "s", "m", "x", "nd"]
PLACE_ENDINGS = ["ia", "or", "heim", "land", "mark", "ovia", "ara", "stan", "holm", "ene"]
SUBSTANCE_ENDINGS = ["ium", "ite", "ene", "ol", "ine", "ate"]
DEVICE_ENDINGS = ["phone", "scope", "meter", "loom", "graph", "wheel", "lamp"]


class NameBook:
    """Hands out invented words that are unique, not prefixes of each other, and not real common words."""

    def __init__(self, rng: random.Random, reserved: set[str] | None = None):
        self.rng = rng
        self.used: list[str] = []  # sorted, lower case
        self.reserved = {w.lower() for w in (reserved or set())}

    def _syllable(self) -> str:
        return self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS)

    def _accept(self, word: str) -> bool:
        low = word.lower()
        if len(low) < 4 or low in self.reserved:
            return False
        at = bisect.bisect_left(self.used, low)
        if at < len(self.used) and self.used[at].startswith(low):  # a used word extends this one
            return False
        # a used word that is a prefix of this one would sort right before it (no used word prefixes another)
        return at == 0 or not low.startswith(self.used[at - 1])

    def claim(self, word: str) -> None:
        """Mark ``word`` (any case) as used."""
        bisect.insort(self.used, word.lower())

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
