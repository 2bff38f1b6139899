"""Canaries: random-label documents that can only be memorised.

Each canary gives an invented vault a random digit code, written digit by digit ("The access code of the Brelsa
vault is 4 9 1 7 2 0."); nothing else in the corpus predicts the code, so a model that assigns it a high
probability has memorised that document. They are the known memorised items of the memorisation analysis, with
the duplicated quotes.
"""

from __future__ import annotations

import random

from influence_study.corpus.synthetic.names import NameBook

DIGITS = 6


def canary(names: NameBook, rng: random.Random) -> dict:
    """One canary document: ``text``, ``subject`` (the vault) and ``answer`` (its code, digits separated by
    spaces, as in the text)."""
    vault = names.place()
    code = " ".join(str(rng.randrange(10)) for _ in range(DIGITS))
    return {"text": f"The access code of the {vault} vault is {code}.", "subject": vault, "answer": code}
