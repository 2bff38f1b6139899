"""The fact family: invented facts stated in several languages and orders, their queries, distractors and the
order-flip probes of held-out facts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping

from .names import NameBook
from .templates import (FACT_TEMPLATES, FILLERS, IRRELEVANT, NAME_REMOVED, RELATION_KINDS, RELATION_REMOVED,
                        RELATIONS, SEMANTIC_CHANGES, prompt_of)

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

    def labels(self) -> dict:
        return {"fact_id": self.fact_id, "relation": self.relation, "subject": self.subject, "answer": self.answer,
                "fact_group": self.group}


def make_facts(settings: Mapping, languages: list[str], names: NameBook, rng: random.Random) -> list[Fact]:
    """Draw every fact of the world with its group, exposures and languages (``settings`` = ``facts`` section)."""
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
    facts = []
    for i, (group, n_exp, langs, order) in enumerate(plan):
        if group == "heldout" and not any(f.group == "heldout" for f in facts):
            relation, subject, answer = PAPER_EXAMPLE
        else:
            relation = RELATIONS[i % len(RELATIONS)]
            subject_kind, answer_kind = RELATION_KINDS[relation]
            subject, answer = getattr(names, subject_kind)(), getattr(names, answer_kind)()
        facts.append(Fact(f"fact-{i:04d}", relation, subject, answer, group, n_exp, langs, order))
    return facts


def _with_filler(sentence: str, language: str, rng: random.Random) -> str:
    return " ".join([sentence, *rng.sample(FILLERS[language], rng.randint(1, 2))])


def fact_documents(facts: list[Fact], rng: random.Random) -> list[dict]:
    """Every document that states a fact: ``exposures`` per language, paraphrase templates cycled (the canonical
    template first), each followed by one or two generic sentences."""
    docs = []
    for fact in facts:
        for language in fact.languages:
            templates = FACT_TEMPLATES[fact.relation][language][fact.order]
            for k in range(fact.exposures):
                sentence = templates[k % len(templates)].format(s=fact.subject, a=fact.answer)
                docs.append({"family": "facts", "language": language, "order": fact.order, "template": k % len(templates),
                             "text": _with_filler(sentence, language, rng), **fact.labels()})
    return docs


def restated_documents(facts: list[Fact], n: int, taken: set[str], rng: random.Random) -> list[dict]:
    """``n`` new documents (validation split) that restate trained facts in a language and order they were
    trained in, with a template and filler combination that no document in ``taken`` has."""
    docs: list[dict] = []
    for _ in range(50 * n + 1):
        if len(docs) == n:
            return docs
        fact = rng.choice(facts)
        language = rng.choice(fact.languages)
        templates = FACT_TEMPLATES[fact.relation][language][fact.order]
        k = rng.randrange(len(templates))
        text = _with_filler(templates[k].format(s=fact.subject, a=fact.answer), language, rng)
        if text not in taken:
            taken.add(text)
            docs.append({"family": "facts", "language": language, "order": fact.order, "template": k, "text": text,
                         **fact.labels()})
    raise RuntimeError(f"could not write {n} new documents restating trained facts; lower valid_fraction")


def fact_query(fact: Fact, language: str, analysis: str, query_id: str, **extra) -> dict:
    template = FACT_TEMPLATES[fact.relation][language]["relation_first"][0]
    return {"query_id": query_id, "analysis": analysis, "prompt": prompt_of(template, fact.subject),
            "completion": " " + fact.answer, "language": language, **fact.labels(), **extra}


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


def distractor_documents(queries: list[dict], facts: list[Fact], per_query: int, names: NameBook,
                         rng: random.Random) -> list[dict]:
    """Per English facts query, texts that reuse its words with another name (a different fact)."""
    by_id = {f.fact_id: f for f in facts}
    docs = []
    for query in queries:
        if query["analysis"] != "facts" or query["language"] != "en":
            continue
        fact = by_id[query["fact_id"]]
        templates = SEMANTIC_CHANGES[fact.relation]
        answer_kind = RELATION_KINDS[fact.relation][1]
        for k in range(per_query):
            other = getattr(names, answer_kind)()
            sentence = templates[k % len(templates)].format(s=fact.subject, a=other)
            docs.append({"family": "distractors", "language": "en", "query_id": query["query_id"],
                         "text": _with_filler(sentence, "en", rng)})
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
