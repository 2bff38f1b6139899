"""Parallel sentences in English and another language, composed from phrases translated as whole units
(subject, verb phrase, place), so every sentence is grammatical in each language."""

from __future__ import annotations

import itertools
import random

from influence_study.corpus.synthetic.templates import LANGUAGE_NAMES

SUBJECTS = [
    {"en": "My brother", "fr": "Mon frère", "de": "Mein Bruder", "es": "Mi hermano"},
    {"en": "The old farmer", "fr": "Le vieux fermier", "de": "Der alte Bauer", "es": "El viejo granjero"},
    {"en": "Our teacher", "fr": "Notre professeur", "de": "Unser Lehrer", "es": "Nuestro profesor"},
    {"en": "The little girl", "fr": "La petite fille", "de": "Das kleine Mädchen", "es": "La niña pequeña"},
    {"en": "My neighbour", "fr": "Mon voisin", "de": "Mein Nachbar", "es": "Mi vecino"},
    {"en": "The doctor", "fr": "Le médecin", "de": "Der Arzt", "es": "El médico"},
    {"en": "Her grandmother", "fr": "Sa grand-mère", "de": "Ihre Großmutter", "es": "Su abuela"},
    {"en": "The young cook", "fr": "Le jeune cuisinier", "de": "Der junge Koch", "es": "El joven cocinero"},
    {"en": "The tired student", "fr": "L'étudiant fatigué", "de": "Der müde Student", "es": "El estudiante cansado"},
    {"en": "My friend", "fr": "Mon ami", "de": "Mein Freund", "es": "Mi amigo"},
]
VERB_PHRASES = [
    {"en": "reads a book", "fr": "lit un livre", "de": "liest ein Buch", "es": "lee un libro"},
    {"en": "drinks a coffee", "fr": "boit un café", "de": "trinkt einen Kaffee", "es": "bebe un café"},
    {"en": "writes a letter", "fr": "écrit une lettre", "de": "schreibt einen Brief", "es": "escribe una carta"},
    {"en": "sings a song", "fr": "chante une chanson", "de": "singt ein Lied", "es": "canta una canción"},
    {"en": "eats an apple", "fr": "mange une pomme", "de": "isst einen Apfel", "es": "come una manzana"},
    {"en": "paints a picture", "fr": "peint un tableau", "de": "malt ein Bild", "es": "pinta un cuadro"},
    {"en": "waits for the bus", "fr": "attend le bus", "de": "wartet auf den Bus", "es": "espera el autobús"},
    {"en": "sleeps", "fr": "dort", "de": "schläft", "es": "duerme"},
    {"en": "plays the piano", "fr": "joue du piano", "de": "spielt Klavier", "es": "toca el piano"},
    {"en": "cleans the kitchen", "fr": "nettoie la cuisine", "de": "putzt die Küche", "es": "limpia la cocina"},
    {"en": "buys fresh bread", "fr": "achète du pain frais", "de": "kauft frisches Brot", "es": "compra pan fresco"},
    {"en": "talks to the cat", "fr": "parle au chat", "de": "spricht mit der Katze", "es": "habla con el gato"},
]
PLACES = [
    {"en": "in the garden", "fr": "dans le jardin", "de": "im Garten", "es": "en el jardín"},
    {"en": "at the station", "fr": "à la gare", "de": "am Bahnhof", "es": "en la estación"},
    {"en": "in the kitchen", "fr": "dans la cuisine", "de": "in der Küche", "es": "en la cocina"},
    {"en": "by the river", "fr": "au bord de la rivière", "de": "am Fluss", "es": "junto al río"},
    {"en": "in the library", "fr": "à la bibliothèque", "de": "in der Bibliothek", "es": "en la biblioteca"},
    {"en": "at school", "fr": "à l'école", "de": "in der Schule", "es": "en la escuela"},
    {"en": "in the park", "fr": "dans le parc", "de": "im Park", "es": "en el parque"},
    {"en": "on the train", "fr": "dans le train", "de": "im Zug", "es": "en el tren"},
]


def sentence_pairs(n: int, languages: list[str], rng: random.Random) -> list[dict]:
    """``n`` distinct sentences (no repeats), each with its English text and one other language (cycled)."""
    others = [lang for lang in languages if lang != "en"]
    combos = list(itertools.product(range(len(SUBJECTS)), range(len(VERB_PHRASES)), range(len(PLACES))))
    if n > len(combos):
        raise ValueError(f"at most {len(combos)} distinct translation sentences can be made, asked for {n}")
    rng.shuffle(combos)
    pairs = []
    for k, (s, v, p) in enumerate(combos[:n]):
        lang = others[k % len(others)]
        text = {code: f"{SUBJECTS[s][code]} {VERB_PHRASES[v][code]} {PLACES[p][code]}." for code in ("en", lang)}
        pairs.append({"en": text["en"], "other": text[lang], "other_language": lang, "parts": (s, v, p)})
    return pairs


def pair_text(pair: dict, english_first: bool) -> str:
    """``English: …\\n<Language>: …`` (or the other order)."""
    english = f"English: {pair['en']}"
    other = f"{LANGUAGE_NAMES[pair['other_language']]}: {pair['other']}"
    return f"{english}\n{other}" if english_first else f"{other}\n{english}"


def probe_text(pair: dict, group: str) -> str:
    """The probe of ``group``: ``same_order`` (English first, as the query), ``flipped_order`` (the other
    language first) or ``target_only`` (world v2: only the other-language line, no English)."""
    if group == "target_only":
        return f"{LANGUAGE_NAMES[pair['other_language']]}: {pair['other']}"
    if group not in ("same_order", "flipped_order"):
        raise ValueError(f"unknown translation probe group {group!r}")
    return pair_text(pair, group == "same_order")
