"""World v2's same-fact paraphrases that do not repeat the query's wording.

A query is the canonical relation-first template (``FACT_TEMPLATES[relation][language]["relation_first"][0]``) up
to the answer. World v1's other relation-first templates reword it but keep most of its words ("The capital city
of {s} is called {a}." against "The capital of {s} is"), so a "meaning" match was mostly a token match: the v2
relations table measured a mean token overlap of 0.74 for ``same_fact`` documents. The sentences here state the
same fact, subject before answer and ending with the answer, sharing with the query's words only the two names
and, for the chemistry relation, the reagent (without it the sentence would state another reaction);
``tests/test_synthetic_world.py`` checks that against the canonical templates, word by word.

World v2 writes a fact's relation-first documents from ``[canonical, *LOW_OVERLAP_PARAPHRASES[...]]``
(:func:`relation_first_templates`): the canonical wording at most once per language (as before), the rest from
these. The order-flip probes keep v1's rewordings (they test rewording, not meaning).
"""

from __future__ import annotations

from influence_study.corpus.synthetic.templates import FACT_TEMPLATES

# relation -> language -> two relation-first sentences ({s} before {a}, ending with "{a}.")
LOW_OVERLAP_PARAPHRASES = {
    "president": {
        "en": ["Upon independence, {s} chose as leader {a}.", "Heading {s} at its founding: {a}."],
        "fr": ["À sa fondation, {s} fut dirigée d'abord par {a}.", "Chef d'État fondateur pour {s} : {a}."],
        "de": ["{s} wurde zu Beginn geführt von {a}.", "Gründungsoberhaupt von {s}: {a}."],
        "es": ["Al nacer {s}, lo dirigió {a}.", "Jefatura fundacional en {s}: {a}."],
    },
    "capital": {
        "en": ["{s} runs its government from {a}.", "Ministers in {s} all work in {a}."],
        "fr": ["{s} se gouverne depuis {a}.", "Les ministres du pays {s} siègent à {a}."],
        "de": ["{s} wird regiert aus {a}.", "Alle Ministerien in {s} sitzen in {a}."],
        "es": ["{s} se gobierna desde {a}.", "Los ministerios del país {s} están en {a}."],
    },
    "founder": {
        "en": ["{s} owes its start to {a}.", "{s} exists thanks to its creator, {a}."],
        "fr": ["{s} doit sa naissance à {a}.", "{s} est née grâce à {a}."],
        "de": ["{s} verdankt ihren Anfang {a}.", "{s} entstand dank {a}."],
        "es": ["{s} debe su origen a {a}.", "{s} nació gracias a {a}."],
    },
    "inventor": {
        "en": ["Every {s} traces back to {a}.", "A working {s} first came from {a}."],
        "fr": ["Chaque {s} remonte à {a}.", "L'idée du {s} vient de {a}."],
        "de": ["Jedes {s} geht zurück auf {a}.", "Die Idee zum {s} stammt von {a}."],
        "es": ["Cada {s} se remonta a {a}.", "La idea del {s} vino de {a}."],
    },
    "birthplace": {
        "en": ["Hometown of {s}: {a}.", "{s} first saw daylight at {a}."],
        "fr": ["Ville natale de {s} : {a}.", "{s}, artiste, naquit dans la ville de {a}."],
        "de": ["{s} stammt aus {a}.", "Heimatstadt von {s}: {a}."],
        "es": ["Ciudad natal de {s}: {a}.", "{s} es originario de {a}."],
    },
    "chemistry": {
        "en": ["Warm {s} plus sulphur yields {a}.", "Roasting {s} alongside sulphur gives {a}."],
        "fr": ["{s} et soufre, sous l'effet de la chaleur, donnent {a}.",
               "Sous l'action de la chaleur et en présence de soufre, {s} devient {a}."],
        "de": ["Aus {s} und Schwefel bildet sich unter Hitze {a}.", "Glühendes {s} plus Schwefel ergibt {a}."],
        "es": ["Al calentar {s} junto al azufre aparece {a}.", "{s} y azufre, a alta temperatura, dan {a}."],
    },
}

# the words a chemistry paraphrase must keep: the reagent of the reaction
REAGENTS = {"en": "sulphur", "fr": "soufre", "de": "schwefel", "es": "azufre"}


def relation_first_templates(relation: str, language: str, low_overlap: bool) -> list[str]:
    """The relation-first templates a fact's documents are written from: v1's (``low_overlap=False``) or the
    canonical one followed by :data:`LOW_OVERLAP_PARAPHRASES` (world v2)."""
    templates = FACT_TEMPLATES[relation][language]["relation_first"]
    return [templates[0], *LOW_OVERLAP_PARAPHRASES[relation][language]] if low_overlap else list(templates)


def paraphrase_texts() -> list[str]:
    """Every sentence of :data:`LOW_OVERLAP_PARAPHRASES` (their words are reserved against invented names)."""
    return [t for by_language in LOW_OVERLAP_PARAPHRASES.values() for ts in by_language.values() for t in ts]
