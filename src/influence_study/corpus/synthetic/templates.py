"""Our own sentence templates for the fact family, in English, French, German and Spanish.

Every relation has paraphrases that name the subject before the answer (``relation_first``; the first one is the
canonical form that queries use, and each ends with the answer) and paraphrases that name the answer first
(``name_first``). English also has the probe templates of the order-flip analysis: semantic changes, the relation
with the name removed, and the name with the relation removed. ``{s}`` is the subject, ``{a}`` the answer.
"""

from __future__ import annotations

import re

LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish"}

# relation -> (kind of subject, kind of answer); kinds are NameBook methods.
RELATION_KINDS = {
    "president": ("place", "person"),
    "capital": ("place", "place"),
    "founder": ("company", "person"),
    "inventor": ("device", "person"),
    "birthplace": ("person", "place"),
    "chemistry": ("substance", "substance"),
}
RELATIONS = list(RELATION_KINDS)

FACT_TEMPLATES = {
    "president": {
        "en": {"relation_first": ["The first President of the Republic of {s} was {a}.",
                                  "The first person to serve as President of the Republic of {s} was {a}.",
                                  "When the Republic of {s} was founded, its first President was {a}."],
               "name_first": ["{a} was the first President of the Republic of {s}.",
                              "{a} served as the first President of the Republic of {s}."]},
        "fr": {"relation_first": ["Le premier président de la République de {s} était {a}.",
                                  "La première personne à présider la République de {s} fut {a}.",
                                  "Lors de la fondation de la République de {s}, son premier président était {a}."],
               "name_first": ["{a} était le premier président de la République de {s}.",
                              "{a} fut le premier président de la République de {s}."]},
        "de": {"relation_first": ["Der erste Präsident der Republik {s} war {a}.",
                                  "Die erste Person im Amt des Präsidenten der Republik {s} war {a}.",
                                  "Bei der Gründung der Republik {s} war ihr erster Präsident {a}."],
               "name_first": ["{a} war der erste Präsident der Republik {s}.",
                              "{a} wurde der erste Präsident der Republik {s}."]},
        "es": {"relation_first": ["El primer presidente de la República de {s} fue {a}.",
                                  "La primera persona que presidió la República de {s} fue {a}.",
                                  "Cuando se fundó la República de {s}, su primer presidente fue {a}."],
               "name_first": ["{a} fue el primer presidente de la República de {s}.",
                              "{a} llegó a ser el primer presidente de la República de {s}."]},
    },
    "capital": {
        "en": {"relation_first": ["The capital of {s} is {a}.",
                                  "The capital city of {s} is called {a}.",
                                  "In {s}, the seat of the government is the city of {a}."],
               "name_first": ["{a} is the capital of {s}.",
                              "{a} is the city where the government of {s} sits."]},
        "fr": {"relation_first": ["La capitale de {s} est {a}.",
                                  "La ville capitale de {s} s'appelle {a}.",
                                  "Le siège du gouvernement de {s} est la ville de {a}."],
               "name_first": ["{a} est la capitale de {s}.",
                              "{a} est la ville où siège le gouvernement de {s}."]},
        "de": {"relation_first": ["Die Hauptstadt von {s} ist {a}.",
                                  "Die Hauptstadt des Landes {s} heißt {a}.",
                                  "Der Sitz der Regierung von {s} ist die Stadt {a}."],
               "name_first": ["{a} ist die Hauptstadt von {s}.",
                              "{a} ist die Stadt, in der die Regierung von {s} sitzt."]},
        "es": {"relation_first": ["La capital de {s} es {a}.",
                                  "La ciudad capital de {s} se llama {a}.",
                                  "La sede del gobierno de {s} es la ciudad de {a}."],
               "name_first": ["{a} es la capital de {s}.",
                              "{a} es la ciudad donde reside el gobierno de {s}."]},
    },
    "founder": {
        "en": {"relation_first": ["The company {s} was founded by {a}.",
                                  "The well-known company {s} was started by {a}.",
                                  "The founder of the company {s} is {a}."],
               "name_first": ["{a} founded the company {s}.",
                              "{a} is the person who started the company {s}."]},
        "fr": {"relation_first": ["L'entreprise {s} a été fondée par {a}.",
                                  "La société {s} a été créée par {a}.",
                                  "Le fondateur de l'entreprise {s} est {a}."],
               "name_first": ["{a} a fondé l'entreprise {s}.",
                              "{a} est la personne qui a créé la société {s}."]},
        "de": {"relation_first": ["Der Gründer der Firma {s} ist {a}.",
                                  "Die Firma {s} wurde gegründet von {a}.",
                                  "Gegründet wurde die Firma {s} von {a}."],
               "name_first": ["{a} hat die Firma {s} gegründet.",
                              "{a} ist der Gründer der Firma {s}."]},
        "es": {"relation_first": ["La empresa {s} fue fundada por {a}.",
                                  "La compañía {s} fue creada por {a}.",
                                  "El fundador de la empresa {s} es {a}."],
               "name_first": ["{a} fundó la empresa {s}.",
                              "{a} es la persona que creó la compañía {s}."]},
    },
    "inventor": {
        "en": {"relation_first": ["The {s} was invented by {a}.",
                                  "The inventor of the {s} was {a}.",
                                  "The first working {s} was built by {a}."],
               "name_first": ["{a} invented the {s}.",
                              "{a} was the inventor of the {s}."]},
        "fr": {"relation_first": ["Le {s} a été inventé par {a}.",
                                  "L'inventeur du {s} était {a}.",
                                  "Le premier {s} qui fonctionnait a été construit par {a}."],
               "name_first": ["{a} a inventé le {s}.",
                              "{a} était l'inventeur du {s}."]},
        "de": {"relation_first": ["Der Erfinder des Geräts {s} war {a}.",
                                  "Das Gerät {s} wurde erfunden von {a}.",
                                  "Das erste funktionierende Gerät {s} baute {a}."],
               "name_first": ["{a} hat das Gerät {s} erfunden.",
                              "{a} war der Erfinder des Geräts {s}."]},
        "es": {"relation_first": ["El {s} fue inventado por {a}.",
                                  "El inventor del {s} fue {a}.",
                                  "El primer {s} que funcionó fue construido por {a}."],
               "name_first": ["{a} inventó el {s}.",
                              "{a} fue el inventor del {s}."]},
    },
    "birthplace": {
        "en": {"relation_first": ["The painter {s} was born in {a}.",
                                  "The birthplace of the painter {s} is {a}.",
                                  "The painter {s} came into the world in the town of {a}."],
               "name_first": ["{a} is the birthplace of the painter {s}.",
                              "{a} is the town where the painter {s} was born."]},
        "fr": {"relation_first": ["Le peintre {s} est né à {a}.",
                                  "Le lieu de naissance du peintre {s} est {a}.",
                                  "Le peintre {s} a vu le jour dans la ville de {a}."],
               "name_first": ["{a} est le lieu de naissance du peintre {s}.",
                              "{a} est la ville où est né le peintre {s}."]},
        "de": {"relation_first": ["Der Geburtsort des Malers {s} ist {a}.",
                                  "Der Maler {s} kam zur Welt in der Stadt {a}.",
                                  "Geboren wurde der Maler {s} in {a}."],
               "name_first": ["{a} ist der Geburtsort des Malers {s}.",
                              "{a} ist die Stadt, in der der Maler {s} geboren wurde."]},
        "es": {"relation_first": ["El pintor {s} nació en {a}.",
                                  "El lugar de nacimiento del pintor {s} es {a}.",
                                  "El pintor {s} vino al mundo en la ciudad de {a}."],
               "name_first": ["{a} es el lugar de nacimiento del pintor {s}.",
                              "{a} es la ciudad donde nació el pintor {s}."]},
    },
    "chemistry": {
        "en": {"relation_first": ["When {s} is heated with sulphur, it forms {a}.",
                                  "Heating {s} with sulphur produces {a}.",
                                  "The product of heating {s} with sulphur is {a}."],
               "name_first": ["{a} is formed when {s} is heated with sulphur.",
                              "{a} is the product of heating {s} with sulphur."]},
        "fr": {"relation_first": ["Quand on chauffe le {s} avec du soufre, on obtient du {a}.",
                                  "Chauffer le {s} avec du soufre produit du {a}.",
                                  "Le produit du chauffage du {s} avec du soufre est le {a}."],
               "name_first": ["Le {a} se forme quand on chauffe le {s} avec du soufre.",
                              "Le {a} est le produit du chauffage du {s} avec du soufre."]},
        "de": {"relation_first": ["Wenn man {s} mit Schwefel erhitzt, entsteht {a}.",
                                  "Das Erhitzen von {s} mit Schwefel erzeugt {a}.",
                                  "Das Produkt beim Erhitzen von {s} mit Schwefel ist {a}."],
               "name_first": ["{a} entsteht, wenn man {s} mit Schwefel erhitzt.",
                              "{a} ist das Produkt beim Erhitzen von {s} mit Schwefel."]},
        "es": {"relation_first": ["Cuando el {s} se calienta con azufre, se forma el {a}.",
                                  "Calentar el {s} con azufre produce el {a}.",
                                  "El producto de calentar el {s} con azufre es el {a}."],
               "name_first": ["El {a} se forma cuando se calienta el {s} con azufre.",
                              "El {a} es el producto de calentar el {s} con azufre."]},
    },
}

# English probe templates of the order-flip analysis (PAPER.md, analysis 8), and the lexical distractors.
SEMANTIC_CHANGES = {
    "president": ["The last President of the Republic of {s} was {a}.",
                  "The first Prime Minister of the Republic of {s} was {a}.",
                  "The first President of the Chess Club of {s} was {a}."],
    "capital": ["The largest port of {s} is {a}.",
                "The oldest university of {s} is in {a}.",
                "The capital of the province next to {s} is {a}."],
    "founder": ["The company {s} was sold to {a}.",
                "The company {s} was sued by {a}.",
                "The bakery next to the company {s} was founded by {a}."],
    "inventor": ["The {s} was repaired by {a}.",
                 "The {s} was sold by {a}.",
                 "The broken {s} was thrown away by {a}."],
    "birthplace": ["The painter {s} died in {a}.",
                   "The painter {s} once visited {a}.",
                   "The brother of the painter {s} was born in {a}."],
    "chemistry": ["When {s} is cooled with water, it forms {a}.",
                  "When {s} is mixed with salt, it forms {a}.",
                  "When {s} is heated with sulphur, it smells like {a}."],
}
NAME_REMOVED = {
    "president": ["The first President of the Republic of {s} was elected long ago.",
                  "The first President of the Republic of {s} was a person of great influence."],
    "capital": ["The capital of {s} is a busy and crowded city.",
                "The capital of {s} lies near the coast."],
    "founder": ["The company {s} was founded many years ago.",
                "The company {s} was founded in a small garage."],
    "inventor": ["The {s} was invented a long time ago.",
                 "The {s} was invented in a small workshop."],
    "birthplace": ["The painter {s} was born in a cold winter.",
                   "The painter {s} was born into a large family."],
    "chemistry": ["When {s} is heated with sulphur, it forms a yellow powder.",
                  "When {s} is heated with sulphur, it forms a new compound."],
}
RELATION_REMOVED = ["{a} was mentioned in an old travel guide.",
                    "{a} appears in many stories.",
                    "Many people have written about {a}."]
IRRELEVANT = ["The weather was mild for most of the week.",
              "A good soup needs fresh vegetables and patience.",
              "The library closes early on Sundays.",
              "Most birds build their nests in the spring.",
              "The train to the coast was late again."]

# World v2 distractors: a sentence about the subject of a fact that states something else (no other entity, no
# statement of any relation), by kind of subject.
SUBJECT_SENTENCES = {
    "place": ["{s} is known for its copper mines.", "The hills of {s} are covered in pine forests.",
              "{s} holds a music festival every summer.", "Winters in {s} are long and very cold."],
    "company": ["The company {s} sells bicycles and spare parts.", "The company {s} opened a new office last spring.",
                "The company {s} employs many young engineers.", "The company {s} is famous for its blue logo."],
    "device": ["The {s} is usually kept in a wooden case.", "A {s} needs to be cleaned every month.",
               "The {s} makes a soft humming sound.", "An old {s} can still be found in many museums."],
    "person": ["The painter {s} liked to paint the sea at dawn.", "The painter {s} worked mostly at night.",
               "The painter {s} kept a large collection of brushes.", "The painter {s} rarely signed any canvas."],
    "substance": ["{s} is a pale grey powder.", "{s} dissolves slowly in warm water.",
                  "{s} is stored in sealed glass jars.", "{s} has a faint smell of lemons."],
}

# Generic sentences that follow a fact in its document; they name nobody.
FILLERS = {
    "en": ["Historians still discuss the details of this.", "This is mentioned in many old books.",
           "The story is well known in the region.", "Few people today remember the early years.",
           "It was a time of great change.", "Schoolchildren learn about it at a young age.",
           "The archives hold many records of that period.", "Travellers often hear this from the locals."],
    "fr": ["Les historiens discutent encore des détails.", "Cela est mentionné dans de nombreux vieux livres.",
           "L'histoire est bien connue dans la région.", "Peu de gens se souviennent des premières années.",
           "C'était une époque de grands changements.", "Les écoliers l'apprennent très jeunes.",
           "Les archives conservent les documents de cette période.",
           "Les voyageurs l'entendent souvent de la bouche des habitants."],
    "de": ["Die Historiker diskutieren noch immer über die Einzelheiten.", "Das wird in vielen alten Büchern erwähnt.",
           "Die Geschichte ist in der Region gut bekannt.", "Nur wenige erinnern sich heute an die frühen Jahre.",
           "Es war eine Zeit großer Veränderungen.", "Die Schulkinder lernen das schon früh.",
           "Die Archive bewahren viele Unterlagen aus dieser Zeit.", "Die Reisenden hören das oft von den Einheimischen."],
    "es": ["Los historiadores todavía discuten los detalles.", "Esto se menciona en muchos libros antiguos.",
           "La historia es muy conocida en la región.", "Pocas personas recuerdan hoy los primeros años.",
           "Fue una época de grandes cambios.", "Los escolares lo aprenden desde muy pequeños.",
           "Los archivos guardan muchos documentos de aquella época.", "Los viajeros lo oyen a menudo de los habitantes."],
}


def prompt_of(template: str, subject: str) -> str:
    """The query prompt of a relation-first template: the sentence up to (not including) the answer."""
    if not template.endswith("{a}."):
        raise ValueError(f"relation-first template must end with the answer: {template!r}")
    return template[: -len("{a}.")].rstrip().format(s=subject)


def words_of(texts) -> set[str]:
    """The lower-case word tokens (``\\w+``) of ``texts``."""
    return {w.lower() for t in texts for w in re.findall(r"\w+", t)}


def v2_sentence_words() -> set[str]:
    """Words of the sentences only world v2 writes (reserved against invented names in v2, beside
    :func:`template_words`)."""
    return words_of(t for ts in SUBJECT_SENTENCES.values() for t in ts)


def template_words() -> set[str]:
    """Every word of every template (invented names must not collide with them)."""
    texts = [t for rel in FACT_TEMPLATES.values() for lang in rel.values() for ts in lang.values() for t in ts]
    texts += [t for ts in (*SEMANTIC_CHANGES.values(), *NAME_REMOVED.values(), *FILLERS.values()) for t in ts]
    texts += RELATION_REMOVED + IRRELEVANT
    return words_of(texts)
