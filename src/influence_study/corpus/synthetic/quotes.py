"""Invented quotations, each copied many times into training (the memorisation control)."""

from __future__ import annotations

import random

from influence_study.corpus.synthetic.names import NameBook

OPENINGS = ["A lantern", "The river", "An honest map", "Every bridge", "A quiet garden", "The last candle",
            "A patient hand", "The smallest key", "An empty boat", "The oldest song"]
MIDDLES = ["remembers the hands that made it", "carries more than it shows", "is drawn by those who got lost",
           "is built from two kinds of courage", "teaches what no lecture can", "burns longest in the coldest room",
           "opens doors the strong cannot", "waits for the tide without complaint"]
ENDINGS = ["and so should we.", "but only the wise ever notice.", "which is why we keep walking.",
           "as every sailor learns too late.", "and the morning always proves it.", "long after the noise has gone."]


def invented_quote(names: NameBook, rng: random.Random, taken: set[str]) -> str:
    """A new quotation with an invented author, different from every text in ``taken``."""
    for _ in range(1000):
        opening, middle, ending = rng.choice(OPENINGS), rng.choice(MIDDLES), rng.choice(ENDINGS)
        body = f"{opening} {middle}, {ending}"
        if all(body not in t for t in taken):
            return f"\u201c{body}\u201d \u2014 {names.person()}, {rng.choice(['On Journeys', 'Letters', 'The Harbour Book', 'Notes from the Hills'])}"
    raise RuntimeError("ran out of distinct quotations; lower quotes.n_quotes")


def split_quote(text: str) -> tuple[str, str]:
    """Prompt (about the first half of the words) and completion (the rest, with its leading space)."""
    words = text.split(" ")
    cut = max(1, len(words) // 2)
    return " ".join(words[:cut]), " " + " ".join(words[cut:])


def copies_of(settings: dict, version: int, rng: random.Random) -> int:
    """Training copies of the next quote: ``quotes.copies`` in world v1; in world v2 a seeded draw from
    ``quotes.copies_range`` ([low, high], both included)."""
    if version == 1:
        return settings["copies"]
    low, high = settings["copies_range"]
    if not 1 <= low <= high:
        raise ValueError(f"corpus.synthetic.quotes.copies_range: expected [low, high] with 1 <= low <= high, "
                         f"got {settings['copies_range']}")
    return rng.randint(low, high)
