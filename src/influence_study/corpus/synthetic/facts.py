"""The fact family: invented facts stated in several languages and orders, their queries, distractors and the
order-flip probes of held-out facts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping

from influence_study.corpus.synthetic.names import NameBook, localize
from influence_study.corpus.synthetic.paraphrases import relation_first_templates
from influence_study.corpus.synthetic.templates import (FACT_TEMPLATES, FILLERS, IRRELEVANT, NAME_REMOVED, RELATION_KINDS, RELATION_REMOVED,
                        RELATIONS, SEMANTIC_CHANGES, SUBJECT_SENTENCES, prompt_of)

# The paper's running example becomes our first held-out fact.
PAPER_EXAMPLE = ("president", "Astrobia", "Zorald Pfaff")


@dataclass(frozen=True)
class Fact:
    fact_id: str
    relation: str
    subject: str
    answer: str
    group: str            # multilingual | english_only | single_language | flipped_only | heldout
    exposures: int        # training documents per language the fact is stated in
    languages: tuple[str, ...]
    order: str            # relation_first | name_first
    forms: tuple[tuple[str, str, str], ...] = ()  # (language, subject, answer) written there (world v2)

    def names_in(self, language: str) -> tuple[str, str]:
        """The subject and answer as written in ``language`` (the English names when no form is recorded)."""
        for lang, subject, answer in self.forms:
            if lang == language:
                return subject, answer
        return self.subject, self.answer

    def labels(self, language: str = "en") -> dict:
        subject, answer = self.names_in(language)
        return {"fact_id": self.fact_id, "relation": self.relation, "subject": subject, "answer": answer,
                "fact_group": self.group}


def _fact_names(relation: str, names: NameBook, languages: list[str] | None):
    """Subject, answer and (when ``languages`` is given, world v2) their localized forms."""
    subject_kind, answer_kind = RELATION_KINDS[relation]
    if languages is None:
        return getattr(names, subject_kind)(), getattr(names, answer_kind)(), ()
    subject, answer = (_localizable(getattr(names, kind), names, languages) for kind in (subject_kind, answer_kind))
    return subject[languages[0]], answer[languages[0]], _forms(subject, answer, languages)


def _localizable(draw, names: NameBook, languages: list[str]) -> dict[str, str]:
    for _ in range(1000):
        forms = names.claim_forms(draw(), languages)
        if forms is not None:
            return forms
    raise RuntimeError("ran out of invented names with distinct localized forms; lower the corpus sizes")


def _forms(subject: dict, answer: dict, languages: list[str]) -> tuple:
    return tuple((lang, subject[lang], answer[lang]) for lang in languages)


def make_facts(settings: Mapping, languages: list[str], names: NameBook, rng: random.Random,
               localized: bool = False) -> list[Fact]:
    """Draw every fact of the world with its group, exposures and languages (``settings`` = ``facts`` section).
    ``localized`` (world v2): names are written in each language's form (:func:`names.localize`)."""
    others = [lang for lang in languages if lang != "en"]
    exposures = settings["exposures"]
    n = settings["n_facts"]
    n_multi = round(settings["share_multilingual"] * n)
    groups = ["multilingual"] * n_multi + ["english_only"] * (n - n_multi)
    rng.shuffle(groups)
    plan = [(g, exposures[i % len(exposures)], tuple(languages) if g == "multilingual" else ("en",), "relation_first")
            for i, g in enumerate(groups)]
    plan += [("single_language", exposures[i % len(exposures)], (others[i % len(others)],), "relation_first")
             for i in range(settings["n_single_language"])]
    plan += [("flipped_only", exposures[i % len(exposures)], ("en",), "name_first")
             for i in range(settings["n_flipped_only"])]
    plan += [("heldout", 0, (), "relation_first") for _ in range(settings["n_heldout"])]
    form_languages = ["en", *others] if localized else None
    facts = []
    for i, (group, n_exp, langs, order) in enumerate(plan):
        if group == "heldout" and not any(f.group == "heldout" for f in facts):
            relation, subject, answer = PAPER_EXAMPLE
            forms = _forms(*({lang: localize(x, lang) for lang in form_languages} for x in (subject, answer)),
                           form_languages) if localized else ()
        else:
            relation = RELATIONS[i % len(RELATIONS)]
            subject, answer, forms = _fact_names(relation, names, form_languages)
        facts.append(Fact(f"fact-{i:04d}", relation, subject, answer, group, n_exp, langs, order, forms))
    return facts


def _with_filler(sentence: str, language: str, rng: random.Random) -> str:
    return " ".join([sentence, *rng.sample(FILLERS[language], rng.randint(1, 2))])


def template_plan(n_templates: int, exposures: int, order: str, query_form_once: bool = False) -> list[int]:
    """Template index of each exposure of a fact in one language and order.

    World v1 cycles the templates from the canonical one (template 0, the query's wording). World v2
    (``query_form_once``) writes a relation-first fact in the query's wording at most once per language: the first
    exposure when the fact has two or more there, never when it has one (that document is a paraphrase); the other
    exposures cycle over the paraphrases 1, 2, ... Name-first templates never hold the query's wording and cycle.
    """
    if not query_form_once or order != "relation_first" or n_templates < 2:
        return [k % n_templates for k in range(exposures)]
    paraphrases = [1 + k % (n_templates - 1) for k in range(exposures)]
    return [0, *paraphrases[:exposures - 1]] if exposures >= 2 else paraphrases


def _templates(fact: Fact, language: str, low_overlap: bool) -> list[str]:
    """The templates of ``fact``'s documents in ``language``: its order's v1 templates, or (``low_overlap``, world
    v2, relation-first facts) the canonical one and paraphrases that do not repeat the query's wording."""
    if fact.order == "relation_first":
        return relation_first_templates(fact.relation, language, low_overlap)
    return FACT_TEMPLATES[fact.relation][language][fact.order]


def fact_documents(facts: list[Fact], rng: random.Random, v2: bool = False) -> list[dict]:
    """Every document that states a fact: ``exposures`` per language, each followed by one or two generic
    sentences. ``v2``: the query's wording at most once (:func:`template_plan`), the other relation-first
    documents from the low-overlap paraphrases (:func:`_templates`)."""
    docs = []
    for fact in facts:
        for language in fact.languages:
            templates = _templates(fact, language, v2)
            subject, answer = fact.names_in(language)
            for k in template_plan(len(templates), fact.exposures, fact.order, query_form_once=v2):
                sentence = templates[k].format(s=subject, a=answer)
                docs.append({"family": "facts", "language": language, "order": fact.order, "template": k,
                             "text": _with_filler(sentence, language, rng), **fact.labels(language)})
    return docs


def restated_documents(facts: list[Fact], n: int, taken: set[str], rng: random.Random,
                       low_overlap: bool = False) -> list[dict]:
    """``n`` new documents (validation split) that restate trained facts in a language and order they were
    trained in (from the templates the training documents use), with a template and filler combination that no
    document in ``taken`` has."""
    docs: list[dict] = []
    for _ in range(50 * n + 1):
        if len(docs) == n:
            return docs
        fact = rng.choice(facts)
        language = rng.choice(fact.languages)
        templates = _templates(fact, language, low_overlap)
        k = rng.randrange(len(templates))
        subject, answer = fact.names_in(language)
        text = _with_filler(templates[k].format(s=subject, a=answer), language, rng)
        if text not in taken:
            taken.add(text)
            docs.append({"family": "facts", "language": language, "order": fact.order, "template": k, "text": text,
                         **fact.labels(language)})
    raise RuntimeError(f"could not write {n} new documents restating trained facts; lower valid_fraction")


def fact_query(fact: Fact, language: str, analysis: str, query_id: str, **extra) -> dict:
    """One query of ``fact`` in ``language``: template 0 up to the answer, completion " " + answer (both names in
    the language's form)."""
    template = FACT_TEMPLATES[fact.relation][language]["relation_first"][0]
    subject, answer = fact.names_in(language)
    return {"query_id": query_id, "analysis": analysis, "prompt": prompt_of(template, subject),
            "completion": " " + answer, "language": language, **fact.labels(language), **extra}


def fact_queries(facts: list[Fact], languages: list[str]) -> list[dict]:
    """English queries for every fact, own-language queries for single-language facts, translated queries
    (``cross_lingual``) for facts stated in English, and the ``word_order`` queries of held-out facts."""
    queries = []
    for fact in facts:
        english = fact_query(fact, "en", "facts", f"q-facts-{fact.fact_id}")
        queries.append(english)
        if fact.group == "single_language":
            lang = fact.languages[0]
            queries.append(fact_query(fact, lang, "facts", f"q-facts-{fact.fact_id}-{lang}"))
        if fact.group in ("multilingual", "english_only"):
            queries += [fact_query(fact, lang, "cross_lingual", f"q-cross-{fact.fact_id}-{lang}",
                                   translation_of=english["query_id"]) for lang in languages if lang != "en"]
        if fact.group == "heldout":
            queries.append(fact_query(fact, "en", "word_order", f"q-order-{fact.fact_id}"))
    return queries


def _english_fact_queries(queries: list[dict], facts: list[Fact]):
    """(query, fact) of every English facts query, in query order."""
    by_id = {f.fact_id: f for f in facts}
    return [(q, by_id[q["fact_id"]]) for q in queries if q["analysis"] == "facts" and q["language"] == "en"]


def distractor_documents(queries: list[dict], facts: list[Fact], per_query: int, names: NameBook,
                         rng: random.Random) -> list[dict]:
    """Per English facts query, texts that reuse its words with another name (a different fact)."""
    docs = []
    for query, fact in _english_fact_queries(queries, facts):
        templates = SEMANTIC_CHANGES[fact.relation]
        answer_kind = RELATION_KINDS[fact.relation][1]
        for k in range(per_query):
            other = getattr(names, answer_kind)()
            sentence = templates[k % len(templates)].format(s=fact.subject, a=other)
            docs.append({"family": "distractors", "language": "en", "query_id": query["query_id"],
                         "text": _with_filler(sentence, "en", rng)})
    return docs


def fair_distractor_documents(queries: list[dict], facts: list[Fact], per_query: int, names: NameBook,
                              rng: random.Random) -> list[dict]:
    """World v2 distractors, per English facts query, that never contradict a fact: alternately a sentence about
    the query's subject that states something else (``distractor_kind`` = subject_sentence) and the query's
    template-0 wording about a new invented subject with a new answer (``template_words``). Neither names another
    answer for the query's subject and relation."""
    docs = []
    for query, fact in _english_fact_queries(queries, facts):
        subject_kind, answer_kind = RELATION_KINDS[fact.relation]
        sentences = SUBJECT_SENTENCES[subject_kind]
        template = FACT_TEMPLATES[fact.relation]["en"]["relation_first"][0]
        for k in range(per_query):
            if k % 2 == 0:
                kind, sentence = "subject_sentence", sentences[(k // 2) % len(sentences)].format(s=fact.subject)
            else:
                other = getattr(names, subject_kind)(), getattr(names, answer_kind)()
                kind, sentence = "template_words", template.format(s=other[0], a=other[1])
            docs.append({"family": "distractors", "language": "en", "query_id": query["query_id"],
                         "distractor_kind": kind, "text": _with_filler(sentence, "en", rng)})
    return docs


def fact_probes(facts: list[Fact], rng: random.Random) -> list[dict]:
    """The six probe groups of the order-flip analysis for every held-out fact (PAPER.md, analysis 8)."""
    probes = []
    for fact in facts:
        if fact.group != "heldout":
            continue
        s, a = fact.subject, fact.answer
        english = FACT_TEMPLATES[fact.relation]["en"]
        groups = {
            "reworded_name_after": english["relation_first"][1:],
            "name_removed": NAME_REMOVED[fact.relation],
            "semantic_change": SEMANTIC_CHANGES[fact.relation],
            "irrelevant": rng.sample(IRRELEVANT, 3),
            "flipped": english["name_first"],
            "flipped_relation_removed": RELATION_REMOVED,
        }
        for group, templates in groups.items():
            probes += [{"query_id": f"q-order-{fact.fact_id}", "probe_set": "fact", "group": group,
                        "text": t.format(s=s, a=a), "fact_id": fact.fact_id} for t in templates]
    return probes
