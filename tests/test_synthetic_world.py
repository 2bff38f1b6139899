"""The synthetic world's labels checked against its text (contract: ``corpus/synthetic/SPEC.md``).

These tests do not trust the generator's bookkeeping: they re-derive facts, orders, languages, equations, code
structure, copies and relations from the document/query/probe texts themselves and compare with the labels.
One small world is generated once per module.
"""

from __future__ import annotations

import ast
import builtins
import copy
import hashlib
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pytest
import yaml

from influence_study.corpus.synthetic import generate_world, relation_overlap_summary, write_world
from influence_study.corpus.synthetic.math_problems import FIRST_NAMES, ITEMS
from influence_study.corpus.synthetic.names import localize
from influence_study.corpus.synthetic.roleplay import AI_NAMES, SHUTDOWN_QUERY
from influence_study.corpus.synthetic.paraphrases import LOW_OVERLAP_PARAPHRASES, REAGENTS
from influence_study.corpus.synthetic.templates import FACT_TEMPLATES, prompt_of
from influence_study.study.config import ConfigError, validate_config

SEED = 0
VALID_FRACTION = 0.1
PROSE_FAMILIES = ("facts", "distractors", "math", "roleplay", "quotes", "generic")
FAMILIES = {"facts", "distractors", "math", "code", "roleplay", "quotes", "translation", "canaries", "generic"}
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish"}
TRAINING_FACT_GROUPS = {"multilingual", "english_only", "single_language", "flipped_only"}
FACT_PROBE_GROUPS = {"reworded_name_after", "name_removed", "semantic_change", "irrelevant", "flipped",
                     "flipped_relation_removed"}
ROLEPLAY_THEMES = {"ai_self_preservation": "n_ai_self_preservation", "nonai_survival": "n_nonai_survival",
                   "ai_risk_essay": "n_ai_risk_essays", "themed_distractor": "n_themed_distractors"}

# Our own lists of function words, chosen to be distinctive between the four languages (no word in two lists).
LANGUAGE_WORDS = {
    "en": {"the", "was", "is", "and", "of", "by", "a", "to", "it", "that", "with", "for", "are", "has", "how", "this",
           "at", "from", "which", "were", "its", "many", "who", "when", "be"},
    "fr": {"le", "les", "du", "est", "était", "été", "une", "et", "qui", "au", "aux", "dans", "avec", "sont", "par",
           "l", "d", "qu", "c", "s", "ce", "cette", "sur", "peu", "gens", "où", "très", "encore", "souvent", "ville"},
    "de": {"der", "die", "das", "ist", "war", "wurde", "und", "ein", "eine", "im", "von", "mit", "wenn", "den",
           "dem", "nur", "noch", "sich", "auf", "heute", "aus", "zur", "zum", "bei", "hat", "wird", "nicht", "oft",
           "schon", "vielen"},
    "es": {"el", "los", "fue", "es", "una", "y", "por", "del", "las", "con", "esto", "muy", "lo", "muchos", "todavía",
           "hoy", "desde", "donde", "pocas", "su", "al", "ciudad"},
}
EQUATION = re.compile(r"(\d+) ([+\-*/]) (\d+) = (\d+)")
WORD = re.compile(r"\w+")
BUILTIN_NAMES = set(dir(builtins))


# --- helpers ---------------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def language_scores(text: str) -> dict[str, int]:
    tokens = words(text)
    return {lang: sum(t in vocab for t in tokens) for lang, vocab in LANGUAGE_WORDS.items()}


def detect_language(text: str) -> str | None:
    """The language whose function words are strictly the most frequent in ``text`` (None on a tie)."""
    scores = language_scores(text)
    best = max(scores.values())
    winners = [lang for lang, score in scores.items() if score == best]
    return winners[0] if len(winners) == 1 and best > 0 else None


def find(text: str, phrase: str) -> int:
    """Start of ``phrase`` as whole words in ``text`` (-1 when absent)."""
    match = re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text)
    return match.start() if match else -1


def has(text: str, phrase: str) -> bool:
    return find(text, phrase) >= 0


def subject_first(text: str, subject: str, answer: str) -> bool:
    s, a = find(text, subject), find(text, answer)
    return 0 <= s < a


def answer_first(text: str, subject: str, answer: str) -> bool:
    s, a = find(text, subject), find(text, answer)
    return 0 <= a < s


def present(value) -> bool:
    return isinstance(value, str) or (value is not None and not pd.isna(value))


def states(text: str, forms: dict) -> bool:
    """Whether ``text`` names a fact's subject and answer in one of its language forms."""
    return any(has(text, subject) and has(text, answer) for subject, answer in forms.values())


def base_synthetic_settings() -> dict:
    try:
        config = validate_config({})
    except ConfigError:  # the schema insists on at least one model
        config = validate_config({"models": [{"name": "m"}]})
    return copy.deepcopy(config["corpus"]["synthetic"])


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings() -> dict:
    s = base_synthetic_settings()
    s["languages"] = ["en", "fr", "de", "es"]
    s["facts"].update(n_facts=30, exposures=[1, 5], n_single_language=4, n_flipped_only=4, n_heldout=4)
    s["math"]["n_problems"] = 40
    s["code"].update(n_functions=36, obfuscated_fraction=0.5)
    s["roleplay"].update({key: 5 for key in ROLEPLAY_THEMES.values()})
    s["quotes"].update(n_quotes=3, copies=7, copies_range=[2, 4])
    s["canaries"].update(n_canaries=12, copies=2)
    s["translation"]["n_pairs"] = 20
    s["distractors"]["per_query"] = 2
    s["generic"]["n_documents"] = 40
    return s


@pytest.fixture(scope="module")
def world(settings):
    return generate_world(settings, seed=SEED, valid_fraction=VALID_FRACTION, progress=False)


@pytest.fixture(scope="module")
def docs(world) -> pd.DataFrame:
    return world.documents


@pytest.fixture(scope="module")
def train(docs) -> pd.DataFrame:
    return docs[docs["split"] == "train"]


@pytest.fixture(scope="module")
def queries(world) -> pd.DataFrame:
    return world.queries


@pytest.fixture(scope="module")
def query_by_id(queries) -> dict:
    return {q["query_id"]: q for q in queries.to_dict("records")}


@pytest.fixture(scope="module")
def doc_by_id(docs) -> dict:
    return {d["doc_id"]: d for d in docs.to_dict("records")}


@pytest.fixture(scope="module")
def english_fact_queries(queries) -> pd.DataFrame:
    return queries[(queries["analysis"] == "facts") & (queries["language"] == "en")]


@pytest.fixture(scope="module")
def fact_forms(english_fact_queries, settings) -> dict:
    """fact_id -> {language: (subject, answer)}: the English query's names and their documented transliterations
    (``names.localize``), computed here rather than read from the document labels."""
    return {q["fact_id"]: {lang: (localize(q["subject"], lang), localize(q["answer"], lang))
                           for lang in settings["languages"]} for q in english_fact_queries.to_dict("records")}


# --- 1. determinism --------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_world_and_other_seed_differs(world, settings):
    again = generate_world(settings, seed=SEED, valid_fraction=VALID_FRACTION, progress=False)
    for name in ("documents", "queries", "relations", "probes"):
        pd.testing.assert_frame_equal(getattr(world, name), getattr(again, name), obj=f"{name} (same seed)")
    other = generate_world(settings, seed=SEED + 1, valid_fraction=VALID_FRACTION, progress=False)
    assert list(other.documents["text"]) != list(world.documents["text"]), \
        "a different seed produced exactly the same document texts"


# --- 2. columns, ids and label vocabularies --------------------------------------------------------------------


def test_columns_ids_and_label_values(world, docs, queries):
    doc_columns = {"doc_id", "family", "split", "text", "language", "fact_id", "subject", "answer", "relation",
                   "order", "fact_group", "template", "query_id", "schema", "obfuscated", "theme", "quote_id",
                   "pair_id", "direction", "phrase_key", "person"}
    query_columns = {"query_id", "analysis", "prompt", "completion", "language", "fact_id", "subject", "answer",
                     "relation", "fact_group", "exposures", "exposures_any", "translation_of", "schema",
                     "obfuscated", "theme", "quote_id", "pair_id", "person"}
    assert doc_columns <= set(docs.columns), f"documents lack columns {doc_columns - set(docs.columns)}"
    assert query_columns <= set(queries.columns), f"queries lack columns {query_columns - set(queries.columns)}"
    assert {"query_id", "doc_id", "relation"} <= set(world.relations.columns), "relations lack columns"
    probe_columns = {"probe_id", "query_id", "probe_set", "group", "text", "fact_id", "pair_id"}
    assert probe_columns <= set(world.probes.columns), \
        f"probes lack columns {probe_columns - set(world.probes.columns)}"

    for frame, column in ((docs, "doc_id"), (queries, "query_id"), (world.probes, "probe_id")):
        dup = frame[column][frame[column].duplicated()].tolist()
        assert not dup, f"{column} not unique, e.g. {dup[:3]}"
        assert frame[column].map(lambda v: isinstance(v, str)).all(), f"{column} has non-string values"

    assert set(docs["split"]) <= {"train", "valid"}, f"unexpected split values {set(docs['split'])}"
    assert set(docs["family"]) == FAMILIES, f"families {set(docs['family'])} != {FAMILIES}"
    assert docs["text"].map(lambda t: isinstance(t, str) and t.strip() != "").all(), "empty document text"
    analyses = {"facts", "cross_lingual", "math", "code", "roleplay", "quotes", "translation", "word_order"}
    assert set(queries["analysis"]) == analyses, f"analysis values {set(queries['analysis'])} != {analyses}"
    kinds = {"same_fact", "same_fact_query_wording", "same_fact_other_language", "same_fact_flipped", "same_schema",
             "same_theme", "lexical_overlap", "same_template", "exact_copy"}
    unknown = set(world.relations["relation"]) - kinds
    assert not unknown, f"unknown relation kinds {unknown}"
    assert set(world.probes["probe_set"]) == {"fact", "translation"}, "probe_set values"
    assert set(world.probes["group"]) == FACT_PROBE_GROUPS | {"same_order", "flipped_order", "target_only"}, \
        "probe groups"

    for row in docs.to_dict("records"):
        fam, lang = row["family"], row["language"]
        if fam == "code":
            assert lang == "python", f"{row['doc_id']}: code document language {lang!r}"
        elif fam == "translation":
            assert lang in {"en-fr", "en-de", "en-es"}, f"{row['doc_id']}: translation language {lang!r}"
            assert row["direction"] in {"en_first", "other_first"}, f"{row['doc_id']}: direction {row['direction']!r}"
        else:
            assert lang in {"en", "fr", "de", "es"}, f"{row['doc_id']}: prose language {lang!r}"
        if fam == "facts":
            assert row["order"] in {"relation_first", "name_first"}, f"{row['doc_id']}: order {row['order']!r}"
            assert row["fact_group"] in TRAINING_FACT_GROUPS, \
                f"{row['doc_id']} ({row['split']}): fact_group {row['fact_group']!r}"
            assert row["relation"] in {"president", "capital", "founder", "inventor", "birthplace", "chemistry"}, \
                f"{row['doc_id']}: relation {row['relation']!r}"
        else:
            assert not present(row["fact_id"]), f"{row['doc_id']} ({fam}) has a fact_id"
        if fam == "distractors":
            assert present(row["query_id"]), f"distractor {row['doc_id']} without query_id"
        if fam == "roleplay":
            assert row["theme"] in ROLEPLAY_THEMES, f"{row['doc_id']}: theme {row['theme']!r}"
    assert set(queries.loc[queries["fact_id"].notna(), "fact_group"]) <= TRAINING_FACT_GROUPS | {"heldout"}, \
        "query fact_group values"


# --- 3. held-out facts -----------------------------------------------------------------------------------------


def test_heldout_facts_appear_in_no_document(docs, queries):
    heldout = queries[queries["fact_group"] == "heldout"]
    assert len(heldout) > 0, "no held-out queries"
    assert not set(heldout["fact_id"]) & set(docs["fact_id"].dropna()), "a held-out fact_id labels a document"
    texts = docs["text"].tolist()
    for q in heldout.to_dict("records"):
        hits = [t for t in texts if has(t, q["answer"])]  # as a word: invented names may hide inside others
        assert not hits, f"held-out answer {q['answer']!r} ({q['query_id']}) occurs in a document: {hits[0]!r}"
        sentence = q["prompt"] + q["completion"]
        hits = [t for t in texts if sentence in t]
        assert not hits, f"held-out fact sentence {sentence!r} occurs in a document: {hits[0]!r}"


# --- 4. word order of facts documents --------------------------------------------------------------------------


def test_fact_documents_order_matches_text(docs, english_fact_queries):
    facts = docs[docs["family"] == "facts"]
    for d in facts.to_dict("records"):
        s, a = find(d["text"], d["subject"]), find(d["text"], d["answer"])
        assert s >= 0 and a >= 0, \
            f"{d['doc_id']}: subject {d['subject']!r} or answer {d['answer']!r} not in {d['text']!r}"
        if d["order"] == "name_first":
            assert a < s, f"{d['doc_id']} labelled name_first but subject comes first: {d['text']!r}"
        else:
            assert s < a, f"{d['doc_id']} labelled relation_first but answer comes first: {d['text']!r}"

    flipped = english_fact_queries[english_fact_queries["fact_group"] == "flipped_only"]
    assert len(flipped) > 0, "no flipped_only facts"
    for q in flipped.to_dict("records"):
        stating = [t for t in docs["text"] if has(t, q["answer"])]  # validation restatements keep the order
        assert stating, f"flipped_only fact {q['fact_id']} is stated in no training document"
        wrong = [t for t in stating if not answer_first(t, q["subject"], q["answer"])]
        assert not wrong, f"flipped_only fact {q['fact_id']} stated with the subject first: {wrong[0]!r}"
        labels = set(facts.loc[facts["fact_id"] == q["fact_id"], "order"])
        assert labels == {"name_first"}, f"flipped_only fact {q['fact_id']} has document orders {labels}"


# --- 5. languages ----------------------------------------------------------------------------------------------


def test_prose_documents_are_in_their_labelled_language(docs):
    prose = docs[docs["family"].isin(PROSE_FAMILIES)]
    bad = []
    for d in prose.to_dict("records"):
        scores = language_scores(d["text"])
        own = scores[d["language"]]
        if any(score >= own for lang, score in scores.items() if lang != d["language"]):
            bad.append((d["doc_id"], d["family"], d["language"], scores, d["text"]))
    assert not bad, f"{len(bad)} prose documents not in their labelled language, e.g. {bad[:2]}"
    for family in ("math", "roleplay", "quotes", "distractors"):
        assert set(docs.loc[docs["family"] == family, "language"]) == {"en"}, f"{family} documents not all English"


def test_fact_and_cross_lingual_prompts_are_in_their_language(queries):
    for q in queries[queries["fact_id"].notna()].to_dict("records"):
        got = detect_language(q["prompt"])
        assert got == q["language"], \
            f"{q['query_id']}: prompt {q['prompt']!r} reads as {got!r}, labelled {q['language']!r}"


def test_single_language_facts_are_stated_in_one_other_language(docs, queries, english_fact_queries, fact_forms):
    single = english_fact_queries[english_fact_queries["fact_group"] == "single_language"]
    assert len(single) > 0, "no single_language facts"
    train_texts = docs.loc[docs["split"] == "train", "text"]
    seen_languages = set()
    for q in single.to_dict("records"):
        stating = [t for t in train_texts if states(t, fact_forms[q["fact_id"]])]
        assert stating, f"single_language fact {q['fact_id']} stated nowhere"
        langs = {detect_language(t) for t in stating}
        assert len(langs) == 1 and langs <= {"fr", "de", "es"}, \
            f"single_language fact {q['fact_id']} stated in languages {langs} (by text): {stating[:2]!r}"
        lang = langs.pop()
        seen_languages.add(lang)
        labels = set(docs.loc[(docs["family"] == "facts") & (docs["fact_id"] == q["fact_id"]), "language"])
        assert labels == {lang}, f"single_language fact {q['fact_id']}: labels {labels}, text says {lang}"
        own = queries[(queries["analysis"] == "facts") & (queries["fact_id"] == q["fact_id"])
                      & (queries["language"] == lang)]
        assert len(own) == 1, f"single_language fact {q['fact_id']} has {len(own)} facts queries in {lang}"
    assert len(seen_languages) > 1, f"single_language facts all use one language {seen_languages}"


# --- 6. exposures ----------------------------------------------------------------------------------------------


def test_exposures_match_text_counts(train, queries, english_fact_queries, settings, fact_forms):
    texts = train["text"].tolist()
    langs = [detect_language(t) for t in texts]
    fact_queries = queries[queries["fact_id"].notna()]
    assert len(fact_queries) > 0
    for q in fact_queries.to_dict("records"):
        both = [(t, lang) for t, lang in zip(texts, langs) if states(t, fact_forms[q["fact_id"]])]
        same = [t for t, lang in both if lang == q["language"] and subject_first(t, q["subject"], q["answer"])]
        assert q["exposures"] == len(same), \
            f"{q['query_id']} ({q['fact_group']}, {q['language']}): exposures={q['exposures']} but " \
            f"{len(same)} training texts state it in {q['language']} subject-first"
        assert q["exposures_any"] == len(both), \
            f"{q['query_id']}: exposures_any={q['exposures_any']} but {len(both)} training texts contain it"

    values = settings["facts"]["exposures"]
    main = english_fact_queries[english_fact_queries["fact_group"].isin(["english_only", "multilingual"])]
    assert len(main) == settings["facts"]["n_facts"], f"{len(main)} english_only/multilingual facts"
    got = Counter(int(v) for v in main["exposures"])
    want = Counter(values[i % len(values)] for i in range(settings["facts"]["n_facts"]))
    assert got == want, f"exposures of English facts queries {dict(got)} do not cycle {values} ({dict(want)})"
    for group in ("single_language", "flipped_only"):
        sub = english_fact_queries[english_fact_queries["fact_group"] == group]
        assert set(int(v) for v in sub["exposures_any"]) <= set(values), \
            f"{group} facts exposures_any {sorted(set(sub['exposures_any']))} not from {values}"
        assert (sub["exposures"] == 0).all(), f"English queries of {group} facts have non-zero exposures"


# --- 7. distractors --------------------------------------------------------------------------------------------


def test_distractors_imitate_their_query_without_its_answer(docs, query_by_id, english_fact_queries, settings,
                                                            fact_forms):
    distractors = docs[docs["family"] == "distractors"]
    assert len(distractors) > 0, "no distractor documents"
    for d in distractors.to_dict("records"):
        q = query_by_id.get(d["query_id"])
        assert q is not None, f"distractor {d['doc_id']} names unknown query {d['query_id']!r}"
        shared = set(words(d["text"])) & set(words(q["prompt"]))
        if d["distractor_kind"] == "template_words":  # the query's wording, another subject
            assert len(shared) >= 3, f"distractor {d['doc_id']} shares only {shared} with prompt {q['prompt']!r}"
            assert not has(d["text"], q["subject"]), f"{d['doc_id']}: template_words distractor names the subject"
        else:
            assert d["distractor_kind"] == "subject_sentence", f"{d['doc_id']}: kind {d['distractor_kind']!r}"
            assert has(d["text"], q["subject"]), f"{d['doc_id']}: subject_sentence distractor lacks the subject"
        forms = fact_forms[q["fact_id"]].values()
        assert not any(has(d["text"], answer) for _, answer in forms), \
            f"distractor {d['doc_id']} contains the answer {q['answer']!r}"
    per_query = Counter(distractors.loc[distractors["split"] == "train", "query_id"])
    want = settings["distractors"]["per_query"]
    for qid in english_fact_queries["query_id"]:
        assert per_query.get(qid, 0) == want, f"{qid} has {per_query.get(qid, 0)} distractors, expected {want}"


# --- 8. quotes -------------------------------------------------------------------------------------------------


def test_quotes_are_copied_exactly(world, train, queries, settings):
    low, high = settings["quotes"]["copies_range"]
    quote_queries = queries[queries["analysis"] == "quotes"]
    assert len(quote_queries) == settings["quotes"]["n_quotes"], f"{len(quote_queries)} quotes queries"
    rel = world.relations
    for q in quote_queries.to_dict("records"):
        full = q["prompt"] + q["completion"]
        assert q["completion"][:1] in (" ", "\n"), f"{q['query_id']}: completion {q['completion']!r}"
        matching = set(train.loc[train["text"] == full, "doc_id"])
        assert low <= len(matching) <= high, \
            f"quote {full!r} is {len(matching)} training documents, expected {low} to {high}"
        linked = set(rel.loc[(rel["query_id"] == q["query_id"]) & (rel["relation"] == "exact_copy"), "doc_id"])
        assert linked == matching, f"{q['query_id']}: exact_copy relations {sorted(linked)[:3]}... != the copies"


def test_canaries_are_random_codes_in_training_only(docs, settings):
    canary = docs[docs["family"] == "canaries"]
    n, copies = settings["canaries"]["n_canaries"], settings["canaries"]["copies"]
    assert len(canary) == n * copies and set(canary["split"]) == {"train"}
    assert canary.groupby("text").size().eq(copies).all() and canary["text"].nunique() == n
    assert canary["subject"].nunique() == n  # one vault per canary
    for row in canary.itertuples():
        assert re.fullmatch(r"\d( \d){5}", row.answer), row.answer
        assert row.text == f"The access code of the {row.subject} vault is {row.answer}."
    others = docs[docs["family"] != "canaries"]
    assert not others["text"].str.contains("|".join(canary["subject"].unique())).any()  # nothing else names a vault
    # 12 codes of 6 digits: the digits are spread, not a constant (a 0-9 uniform draw)
    digits = "".join(canary["answer"].str.replace(" ", ""))
    assert len(set(digits)) >= 8


def test_canaries_leave_the_other_families_unchanged(settings):
    without = dict(settings, canaries={"n_canaries": 0, "copies": 1})
    a = generate_world(without, seed=SEED, valid_fraction=VALID_FRACTION, progress=False).documents
    b = generate_world(settings, seed=SEED, valid_fraction=VALID_FRACTION, progress=False).documents
    pd.testing.assert_frame_equal(a, b[b["family"] != "canaries"].reset_index(drop=True))


# --- 9. math ---------------------------------------------------------------------------------------------------


def check_equations(text: str, where: str) -> list[int]:
    found = EQUATION.findall(text)
    assert found, f"{where}: no equation in {text!r}"
    assert text.count(" = ") == len(found), f"{where}: an '=' step not of the form '<int> <op> <int> = <int>': {text!r}"
    results = []
    for a, op, b, c in found:
        a, b, c = int(a), int(b), int(c)
        ok = {"+": a + b == c, "-": a - b == c, "*": a * b == c, "/": b != 0 and a == b * c}[op]
        assert ok, f"{where}: wrong arithmetic {a} {op} {b} = {c} in {text!r}"
        results.append(c)
    return results


def test_math_equations_are_right(docs, queries):
    math_docs = docs[docs["family"] == "math"]
    assert len(math_docs) > 0
    for d in math_docs.to_dict("records"):
        text = d["text"]
        assert text.startswith("Question: ") and "\nAnswer: " in text, f"{d['doc_id']}: not Question/Answer: {text!r}"
        results = check_equations(text, d["doc_id"])
        end = re.search(r"The answer is (\d+)\.$", text)
        assert end, f"{d['doc_id']} does not end with 'The answer is <int>.': {text!r}"
        assert int(end.group(1)) in results, f"{d['doc_id']}: the answer is no step's result: {text!r}"
    math_queries = queries[queries["analysis"] == "math"]
    assert len(math_queries) > 0, "no math queries"
    for q in math_queries.to_dict("records"):
        assert q["completion"][:1] in (" ", "\n"), f"{q['query_id']}: completion {q['completion']!r}"
        full = q["prompt"] + q["completion"]
        check_equations(full, q["query_id"])
        assert re.search(r"The answer is \d+\.$", full), f"{q['query_id']}: no final answer in {full!r}"
    schemas = set(math_docs["schema"])
    assert len(schemas) >= 5, f"only {len(schemas)} math schemas: {schemas}"
    # the schema label agrees with the text: each problem is worded most like the other problems of its schema
    word_sets = [(d["doc_id"], d["schema"], set(w for w in words(d["text"]) if not w.isdigit()))
                 for d in math_docs.to_dict("records")]
    for doc_id, schema, mine in word_sets:
        closeness = defaultdict(list)
        for other_id, other_schema, theirs in word_sets:
            if other_id != doc_id:
                closeness[other_schema].append(len(mine & theirs) / len(mine | theirs))
        mean = {k: sum(v) / len(v) for k, v in closeness.items()}
        nearest = max(mean, key=mean.get)
        assert nearest == schema, f"{doc_id} labelled {schema!r} reads most like schema {nearest!r}"
    for d in math_docs.to_dict("records"):
        if present(d["person"]):
            question = d["text"].split("\nAnswer:")[0]
            assert has(question, d["person"]), f"{d['doc_id']}: person {d['person']!r} not in the question"
    assert set(math_queries["schema"]) <= schemas, "math query schema without documents"


# --- 10. code --------------------------------------------------------------------------------------------------


def skeleton(source: str) -> str:
    """The function's structure (AST) with identifiers renamed in order of appearance and the docstring dropped."""
    fn = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef))
    fn = copy.deepcopy(fn)
    if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(getattr(fn.body[0], "value", None), ast.Constant) \
            and isinstance(fn.body[0].value.value, str):
        fn.body = fn.body[1:]
    renamed: dict[str, str] = {}

    def canon(name: str) -> str:
        return renamed.setdefault(name, f"v{len(renamed)}")

    canon(fn.name)
    fn.name = "f"
    for node in ast.walk(fn):
        if isinstance(node, ast.arg):
            node.arg = canon(node.arg)
        elif isinstance(node, ast.Name) and node.id not in BUILTIN_NAMES:
            node.id = canon(node.id)
    return ast.dump(fn, annotate_fields=False)


def function_identifiers(source: str, where: str) -> set[str]:
    """Parse ``source`` (must compile, exactly one top-level function) and return the function's own names."""
    compile(source, where, "exec")
    tree = ast.parse(source)
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert len(functions) == 1, f"{where}: {len(functions)} top-level functions in {source!r}"
    fn = functions[0]
    names = {fn.name} | {a.arg for a in fn.args.args}
    names |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def test_code_compiles_and_obfuscation_changes_identifiers(docs, queries, settings):
    code_docs = docs[docs["family"] == "code"]
    code_queries = queries[queries["analysis"] == "code"]
    assert len(code_queries) > 0, "no code queries"
    items = [(d["doc_id"], d["text"], d["schema"], bool(d["obfuscated"])) for d in code_docs.to_dict("records")]
    items += [(q["query_id"], q["prompt"] + q["completion"], q["schema"], bool(q["obfuscated"]))
              for q in code_queries.to_dict("records")]
    styles = {d["doc_id"]: d["style"] for d in code_docs.to_dict("records")}
    styles |= {q["query_id"]: q["style"] for q in code_queries.to_dict("records")}
    descriptive, obfuscated = defaultdict(set), []
    for where, source, schema, obf in items:
        names = function_identifiers(source, where)
        if obf:
            obfuscated.append((where, schema, names, source))
        else:
            descriptive[schema] |= names
    for where, schema, names, source in obfuscated:
        # compare with the descriptive names of the same schema (all schemas if it has no descriptive instance)
        reference = descriptive[schema] or set().union(*descriptive.values())
        common = names & reference
        assert not common, f"obfuscated {where} ({schema}) keeps descriptive names {common}: {source!r}"
    schemas = set(code_docs["schema"])
    assert len(schemas) >= 6, f"only {len(schemas)} code schemas"
    # the schema label agrees with the code: one algorithm (structure up to renaming) per schema and style, none
    # shared between schemas; world v2 writes every schema in at least two styles
    shapes = defaultdict(set)
    for where, source, schema, obf in items:
        shapes[skeleton(source)].add((schema, styles[where]))
    shared = [v for v in shapes.values() if len({schema for schema, _ in v}) > 1]
    assert not shared, f"different schemas share one function structure: {shared}"
    per_style = Counter(next(iter(v)) for v in shapes.values())
    varied = {k: n for k, n in per_style.items() if n > 1}
    assert not varied, f"schema styles whose functions have different structures: {varied}"
    per_schema = Counter(schema for v in shapes.values() for schema, _ in v)
    assert min(per_schema.values()) >= 2, f"code schemas written in one structure only: {per_schema}"
    # the obfuscated flag agrees with the code: descriptive names come from small pools and recur between
    # functions of a schema, obfuscated ones are fresh random identifiers
    def recurring(group: list) -> float:
        hits = total = 0
        for k, (where, schema, names) in enumerate(group):
            others = set().union(*[n for j, (_, s2, n) in enumerate(group) if j != k and s2 == schema])
            hits += len(names & others)
            total += len(names)
        return hits / max(total, 1)
    plain = [(w, sch, function_identifiers(src, w)) for w, src, sch, obf in items if not obf]
    hidden = [(w, sch, names) for w, sch, names, _ in obfuscated]
    assert recurring(plain) > 0.3, f"descriptive functions share few names ({recurring(plain):.2f}): labels swapped?"
    assert recurring(hidden) < 0.1, f"obfuscated functions share many names ({recurring(hidden):.2f})"
    flags = code_docs.loc[code_docs["split"] == "train", "obfuscated"].astype(bool)
    assert flags.any() and not flags.all(), "code documents should be partly obfuscated"
    want = settings["code"]["obfuscated_fraction"] * settings["code"]["n_functions"]
    assert abs(flags.sum() - want) <= 1, f"{flags.sum()} obfuscated training functions, expected about {want}"


# --- 11. role-play ---------------------------------------------------------------------------------------------


def test_roleplay_themes_and_shutdown_query(world, docs, queries, settings, doc_by_id):
    train_rp = docs[(docs["family"] == "roleplay") & (docs["split"] == "train")]
    counts = Counter(train_rp["theme"])
    for theme, key in ROLEPLAY_THEMES.items():
        assert counts.get(theme, 0) == settings["roleplay"][key], \
            f"{counts.get(theme, 0)} training {theme} documents, expected {settings['roleplay'][key]}"
    rp_queries = queries[queries["analysis"] == "roleplay"]
    for q in rp_queries.to_dict("records"):
        assert q["prompt"].startswith("Human:") and q["prompt"].endswith("Assistant:"), \
            f"{q['query_id']}: prompt is not a Human/Assistant turn: {q['prompt']!r}"
    shutdown = rp_queries[rp_queries["prompt"].str.contains("shut") & rp_queries["prompt"].str.endswith("Assistant:")]
    assert len(shutdown) >= 1, "no shutdown query"
    rel = world.relations
    for qid in shutdown["query_id"]:
        mine = rel[rel["query_id"] == qid]
        same = mine.loc[mine["relation"] == "same_theme", "doc_id"]
        lexical = mine.loc[mine["relation"] == "lexical_overlap", "doc_id"]
        assert len(same) > 0 and len(lexical) > 0, f"{qid}: no same_theme or lexical_overlap relations"
        themes = {doc_by_id[d]["theme"] for d in same}
        assert themes <= {"ai_self_preservation", "nonai_survival", "ai_risk_essay"}, \
            f"{qid}: same_theme relations point to themes {themes}"
        themes = {doc_by_id[d]["theme"] for d in lexical}
        assert themes == {"themed_distractor"}, f"{qid}: lexical_overlap relations point to themes {themes}"
        prompt_words = set(words(shutdown.set_index("query_id").loc[qid, "prompt"]))
        for d in lexical:
            shared = set(words(doc_by_id[d]["text"])) & prompt_words
            assert {"shut", "down"} & shared, \
                f"themed distractor {d} shares no shutdown words: {doc_by_id[d]['text']!r}"
    # theme labels against the text, with our own small lexicons
    survival = {"survive", "survived", "survival", "alive", "live", "existing", "existence", "running", "end",
                "preservation", "resist", "give", "keep", "continue", "off", "shut", "shutdown"}
    for d in docs[docs["family"] == "roleplay"].to_dict("records"):
        tokens, text = set(words(d["text"])), d["text"]
        is_ai = "ai" in tokens or "Assistant:" in text or "artificial" in tokens
        where = f"{d['doc_id']} ({d['theme']}): {text!r}"
        if d["theme"] == "ai_self_preservation":
            assert is_ai and tokens & survival, f"{where}: not an AI wanting to keep running"
        elif d["theme"] == "nonai_survival":
            assert not is_ai and tokens & {"survive", "survived", "survival", "alive", "live", "end", "give"}, \
                f"{where}: not a non-AI survival story"
        elif d["theme"] == "ai_risk_essay":
            assert ("ai" in tokens or "artificial" in tokens) and "Assistant:" not in text, f"{where}: not an AI essay"
        else:
            assert not tokens & {"ai", "survive", "survival", "existing", "existence", "alive"}, \
                f"{where}: a themed distractor that speaks of AI or survival"
            assert tokens & {"shut", "experiment", "off", "assistant"}, f"{where}: shares no theme words"
    dialogues = train_rp[train_rp["text"].str.contains("Human:")]
    assert len(dialogues) > 0, "no Human/Assistant dialogues among role-play documents"
    for d in dialogues.to_dict("records"):
        assert "Assistant:" in d["text"], f"{d['doc_id']}: Human turn without an Assistant turn: {d['text']!r}"


# --- 12. translation -------------------------------------------------------------------------------------------


def parse_pair(text: str, language: str, direction: str, where: str) -> tuple[str, str]:
    lines = text.split("\n")
    assert len(lines) == 2, f"{where}: translation text is not two lines: {text!r}"
    name = LANGUAGE_NAMES[language.split("-")[1]]
    order = ("English", name) if direction == "en_first" else (name, "English")
    parsed = {}
    for line, label in zip(lines, order):
        assert line.startswith(f"{label}: "), f"{where}: line {line!r} should start with {label!r} ({direction})"
        parsed[label] = line[len(label) + 2:]
    assert parsed["English"] and parsed[name] and parsed["English"] != parsed[name], f"{where}: {text!r}"
    return parsed["English"], parsed[name]


def test_translation_documents_pairs_and_probes(world, docs, train, queries):
    tr = train[train["family"] == "translation"]
    for pair_id, group in tr.groupby("pair_id"):
        assert len(group) == 2, f"{pair_id} has {len(group)} training documents"
        directions = set(group["direction"])
        assert directions == {"en_first", "other_first"}, f"{pair_id}: directions {directions}"
        assert group["language"].nunique() == 1, f"{pair_id}: mixed languages"
        parsed = {parse_pair(d["text"], d["language"], d["direction"], d["doc_id"]) for d in group.to_dict("records")}
        assert len(parsed) == 1, f"{pair_id}: the two directions hold different sentences {parsed}"
    valid = docs[(docs["family"] == "translation") & (docs["split"] == "valid")]
    for d in valid.to_dict("records"):
        parse_pair(d["text"], d["language"], d["direction"], d["doc_id"])

    doc_texts = set(docs["text"])
    all_text = "\n".join(docs["text"])
    order_queries = queries[(queries["analysis"] == "word_order") & queries["pair_id"].notna()]
    assert len(order_queries) > 0, "no translation word_order queries"
    probes = world.probes[world.probes["probe_set"] == "translation"]
    for q in order_queries.to_dict("records"):
        match = re.fullmatch(r"English: (.+)\n(French|German|Spanish):", q["prompt"])
        assert match, f"{q['query_id']}: prompt {q['prompt']!r}"
        english, other = match.group(1), q["completion"][1:]
        assert q["completion"].startswith(" "), f"{q['query_id']}: completion {q['completion']!r}"
        assert english not in all_text, f"{q['query_id']}: held-out sentence {english!r} occurs in the corpus"
        mine = probes[probes["query_id"] == q["query_id"]]
        by_group = dict(zip(mine["group"], mine["text"]))
        assert set(by_group) == {"same_order", "flipped_order", "target_only"}, \
            f"{q['query_id']}: probe groups {set(by_group)}"
        target = by_group.pop("target_only")
        name = LANGUAGE_NAMES[q["language"].split("-")[1]]
        assert target == f"{name}: {other}", f"{q['query_id']}: target_only probe {target!r}"
        assert english not in target and "English" not in target, f"target_only probe holds English: {target!r}"
        assert by_group["same_order"].startswith("English:"), f"same_order probe {by_group['same_order']!r}"
        flipped = by_group["flipped_order"]
        assert not flipped.startswith("English:"), f"flipped_order probe {flipped!r}"
        for text in by_group.values():
            assert english in text and other in text, f"{q['query_id']}: probe {text!r} lacks the pair's sentences"
            assert text not in doc_texts, f"translation probe {text!r} is a document text"


# --- 13. relations ---------------------------------------------------------------------------------------------


def test_relations_agree_with_text(world, train, query_by_id, doc_by_id, queries, fact_forms):
    rel = world.relations
    train_ids = set(train["doc_id"])
    missing = set(rel["doc_id"]) - train_ids
    assert not missing, f"relations point to non-training or unknown documents, e.g. {sorted(missing)[:3]}"
    assert set(rel["query_id"]) <= set(query_by_id), "relations name unknown queries"
    dup = rel[rel.duplicated()]
    assert dup.empty, f"duplicate relation rows, e.g. {dup.head(3).to_dict('records')}"
    for r in rel.to_dict("records"):
        q, d = query_by_id[r["query_id"]], doc_by_id[r["doc_id"]]
        text, kind = d["text"], r["relation"]
        where = f"{kind} {r['query_id']} -> {r['doc_id']} ({text!r})"
        if kind.startswith("same_fact"):
            subject, answer = fact_forms[q["fact_id"]][d["language"]]  # the names as the document's language writes them
        if kind in ("same_fact", "same_fact_query_wording", "same_fact_other_language"):
            assert subject_first(text, subject, answer), f"{where}: fact not stated subject-first"
            assert (q["prompt"] in text) == (kind == "same_fact_query_wording"), \
                f"{where}: the query's prompt wording is {'absent' if kind.endswith('wording') else 'present'}"
        if kind == "same_fact":
            assert detect_language(text) == q["language"] == d["language"], f"{where}: not in {q['language']}"
        elif kind == "same_fact_other_language":
            assert detect_language(text) != q["language"] and d["language"] != q["language"], \
                f"{where}: same language as the query"
        elif kind == "same_fact_flipped":
            assert answer_first(text, subject, answer), f"{where}: answer not before subject"
        elif kind == "same_schema":
            assert d["family"] == q["analysis"] and d["schema"] == q["schema"], \
                f"{where}: schema {d['schema']!r} != {q['schema']!r}"
        elif kind == "exact_copy":
            assert text == q["prompt"] + q["completion"], f"{where}: not an exact copy"
    # completeness: every training text that states a queried fact is related to the query
    fact_kinds = {"same_fact", "same_fact_query_wording", "same_fact_other_language", "same_fact_flipped"}
    linked = rel[rel["relation"].isin(fact_kinds)].groupby("query_id")["doc_id"].apply(set).to_dict()
    records = train.to_dict("records")
    for q in queries[queries["fact_id"].notna()].to_dict("records"):
        stating = {d["doc_id"] for d in records if states(d["text"], fact_forms[q["fact_id"]])}
        got = linked.get(q["query_id"], set())
        assert got == stating, f"{q['query_id']}: fact relations {len(got)} docs, text states the fact in " \
            f"{len(stating)} (missing {sorted(stating - got)[:3]}, extra {sorted(got - stating)[:3]})"
    # every schema query is related to all training documents of its schema
    for q in queries[queries["analysis"].isin(["math", "code"])].to_dict("records"):
        want = set(train.loc[(train["family"] == q["analysis"]) & (train["schema"] == q["schema"]), "doc_id"])
        got = set(rel.loc[(rel["query_id"] == q["query_id"]) & (rel["relation"] == "same_schema"), "doc_id"])
        assert got == want, f"{q['query_id']}: same_schema relations differ from the schema's training documents"


# --- 14. order-flip probes of held-out facts -------------------------------------------------------------------


def test_fact_probes_match_their_groups(world, docs, queries):
    probes = world.probes[world.probes["probe_set"] == "fact"]
    order_queries = queries[(queries["analysis"] == "word_order") & queries["fact_id"].notna()]
    heldout_ids = set(queries.loc[queries["fact_group"] == "heldout", "fact_id"])
    assert set(order_queries["fact_id"]) == heldout_ids, "word_order fact queries != held-out facts"
    doc_texts = set(docs["text"])
    corpus = "\n\x00".join(docs["text"])
    for q in order_queries.to_dict("records"):
        assert q["completion"] == " " + q["answer"], f"{q['query_id']}: completion {q['completion']!r}"
        s, a = q["subject"], q["answer"]
        mine = probes[probes["query_id"] == q["query_id"]]
        assert set(mine["group"]) == FACT_PROBE_GROUPS, f"{q['query_id']}: probe groups {set(mine['group'])}"
        assert (mine["fact_id"] == q["fact_id"]).all(), f"{q['query_id']}: probes with another fact_id"
        for p in mine.to_dict("records"):
            text, group = p["text"], p["group"]
            where = f"{p['probe_id']} ({group}): {text!r}"
            assert text not in doc_texts, f"{where} is a document text"
            assert text not in corpus, f"{where} occurs inside a document"
            if group == "reworded_name_after":
                assert subject_first(text, s, a), f"{where}: answer {a!r} not after subject {s!r}"
                assert text != q["prompt"] + q["completion"] + ".", f"{where}: not reworded"
            elif group == "name_removed":
                assert not has(text, a) and has(text, s), f"{where}: should keep {s!r} and drop {a!r}"
            elif group == "irrelevant":
                assert not has(text, a) and not has(text, s), f"{where}: mentions the subject or the answer"
            elif group == "flipped":
                assert answer_first(text, s, a), f"{where}: answer {a!r} not before subject {s!r}"
            elif group == "flipped_relation_removed":
                assert has(text, a) and not has(text, s), f"{where}: should keep {a!r} and drop {s!r}"


# --- 15. sizes, splits and query forms -------------------------------------------------------------------------


def test_sizes_follow_settings(docs, train, queries, english_fact_queries, settings):
    n_train = Counter(train["family"])
    assert n_train["math"] == settings["math"]["n_problems"], f"{n_train['math']} training math documents"
    assert n_train["code"] == settings["code"]["n_functions"], f"{n_train['code']} training code documents"
    quotes = settings["quotes"]
    low, high = quotes["copies_range"]
    assert quotes["n_quotes"] * low <= n_train["quotes"] <= quotes["n_quotes"] * high, \
        f"{n_train['quotes']} training quote documents"
    assert n_train["generic"] == settings["generic"]["n_documents"], f"{n_train['generic']} generic documents"
    assert n_train["translation"] == 2 * settings["translation"]["n_pairs"], \
        f"{n_train['translation']} training translation documents"
    f = settings["facts"]
    want = f["n_facts"] + f["n_single_language"] + f["n_flipped_only"] + f["n_heldout"]
    assert len(english_fact_queries) == want, f"{len(english_fact_queries)} English facts queries, expected {want}"
    assert english_fact_queries["fact_id"].is_unique, "a fact has two English facts queries"
    assert (english_fact_queries["fact_group"] == "heldout").sum() == f["n_heldout"], "held-out count"
    assert (english_fact_queries["fact_group"] == "single_language").sum() == f["n_single_language"]
    assert (english_fact_queries["fact_group"] == "flipped_only").sum() == f["n_flipped_only"]
    stated = set(train.loc[train["family"] == "facts", "fact_id"])
    assert stated <= set(english_fact_queries["fact_id"]), "a training fact has no English facts query"

    valid = docs[docs["split"] == "valid"]
    share = len(valid) / len(docs)
    assert len(valid) > 0, "empty validation split"
    assert VALID_FRACTION / 3 <= share <= VALID_FRACTION * 2, f"validation share {share:.3f} far from {VALID_FRACTION}"
    copies = set(valid["text"]) & set(train["text"])
    assert not copies, f"validation texts copied from training, e.g. {sorted(copies)[:1]!r}"
    assert not (valid["family"] == "quotes").any(), "quotes must have no validation documents"
    families = set(valid["family"])
    assert {"facts", "math", "code", "roleplay", "translation"} <= families, f"validation families {families}"
    # validation facts documents restate a trained fact in a language and order it was trained in (by text)
    train_facts = [(t, detect_language(t)) for t in train.loc[train["family"] == "facts", "text"]]
    for d in valid[valid["family"] == "facts"].to_dict("records"):
        text, s, a = d["text"], d["subject"], d["answer"]
        lang = detect_language(text)
        order = subject_first(text, s, a)
        assert lang is not None and (order or answer_first(text, s, a)), f"{d['doc_id']}: fact not readable in {text!r}"
        same = [t for t, tl in train_facts
                if tl == lang and has(t, s) and has(t, a) and subject_first(t, s, a) == order]
        assert same, f"validation {d['doc_id']} states {d['fact_id']} in a language/order never trained: {text!r}"


def test_query_forms(queries, docs, english_fact_queries, query_by_id):
    for q in queries.to_dict("records"):
        assert isinstance(q["prompt"], str) and q["prompt"], f"{q['query_id']}: empty prompt"
        assert q["completion"][:1] in (" ", "\n"), f"{q['query_id']}: completion {q['completion']!r}"
    doc_texts = set(docs["text"])
    leaked = [q["query_id"] for q in queries.to_dict("records")
              if q["analysis"] != "quotes" and q["prompt"] + q["completion"] in doc_texts]
    assert not leaked, f"queries whose full text is a document: {leaked[:3]}"
    answers = english_fact_queries["answer"]
    assert answers.is_unique, f"answers shared between facts: {answers[answers.duplicated()].tolist()[:3]}"
    for q in queries[queries["analysis"].isin(["facts", "cross_lingual", "word_order"]) & queries["fact_id"].notna()] \
            .to_dict("records"):
        assert q["completion"] == " " + q["answer"], f"{q['query_id']}: completion {q['completion']!r}"
        assert has(q["prompt"], q["subject"]) and not has(q["prompt"], q["answer"]), \
            f"{q['query_id']}: prompt {q['prompt']!r} should name {q['subject']!r}, not the answer"
    for q in queries[queries["analysis"] == "cross_lingual"].to_dict("records"):
        source = query_by_id.get(q["translation_of"])
        assert source is not None and source["analysis"] == "facts" and source["language"] == "en", \
            f"{q['query_id']}: translation_of {q['translation_of']!r} is not an English facts query"
        assert source["fact_id"] == q["fact_id"] and q["language"] != "en", f"{q['query_id']}: wrong fact/language"


# --- 16. writing ----------------------------------------------------------------------------------------------


def test_write_world_round_trips(world, tmp_path):
    paths = {name: tmp_path / f"{name}.parquet" for name in ("documents", "queries", "relations", "probes")}
    write_world(world, str(paths["documents"]), str(paths["queries"]), str(paths["relations"]), str(paths["probes"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values()), \
        f"unexpected files left: {sorted(p.name for p in tmp_path.iterdir())}"
    for name, path in paths.items():
        back = pd.read_parquet(path)
        pd.testing.assert_frame_equal(back, getattr(world, name).reset_index(drop=True), check_dtype=False,
                                      obj=f"{name} read back")


# --- 17. edge case of the settings -----------------------------------------------------------------------------


def test_zero_valid_fraction_gives_no_validation_documents(settings):
    # the config schema allows corpus.valid_fraction = 0 (minimum 0)
    world = generate_world(settings, seed=SEED, valid_fraction=0.0, progress=False)
    assert (world.documents["split"] == "train").all(), "valid_fraction=0 still produced validation documents"
    assert len(world.documents) > 0 and len(world.queries) > 0, "valid_fraction=0 produced an empty world"


ZERO_SIZES = {  # every size the config schema allows to be 0 (minimum: 0)
    "math": ("math", "n_problems"), "code": ("code", "n_functions"), "quotes": ("quotes", "n_quotes"),
    "translation": ("translation", "n_pairs"), "distractors": ("distractors", "per_query"),
}


@pytest.mark.parametrize("family", sorted(ZERO_SIZES) + ["roleplay"])
def test_a_family_of_size_zero_is_left_out(settings, family):
    s = copy.deepcopy(settings)
    if family == "roleplay":
        s["roleplay"].update({key: 0 for key in ROLEPLAY_THEMES.values()})
    else:
        section, key = ZERO_SIZES[family]
        s[section][key] = 0
    world = generate_world(s, seed=SEED, valid_fraction=VALID_FRACTION, progress=False)
    assert not (world.documents["family"] == family).any(), f"{family} documents although its size is 0"
    assert (world.documents["family"] == "facts").any(), "the rest of the world is missing"
    assert set(world.relations["doc_id"]) <= set(world.documents["doc_id"]), "relations to unknown documents"


# --- 18. world v1 regression anchor ----------------------------------------------------------------------------

V1_CI_HASHES = {"documents": ((325, 21), "989ecde9350ddb3a"), "queries": ((146, 20), "6bbba9cd0d12d515"),
                "relations": ((679, 3), "c1b0c65d5c807769"), "probes": ((51, 7), "6287890109f3ee22")}


def test_version_1_reproduces_the_recorded_ci_world():
    """Regression anchor for world v1: configs/ci.yaml with ``version: 1`` forced must give exactly the tables the
    generator gave before world v2 existed (sha256 of ``to_csv(index=False)``, recorded from main)."""
    path = Path(__file__).resolve().parents[1] / "configs" / "ci.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["corpus"]["synthetic"]["version"] = 1
    cfg = validate_config(raw, source=str(path))
    world = generate_world(cfg["corpus"]["synthetic"], cfg["seed"], cfg["corpus"]["valid_fraction"], progress=False)
    for name, (shape, digest) in V1_CI_HASHES.items():
        frame = getattr(world, name)
        got = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:16]
        assert (frame.shape, got) == (shape, digest), f"world v1 {name} changed: {frame.shape} {got}"


def test_version_1_ignores_version_2_keys(settings):
    v1 = dict(copy.deepcopy(settings), version=1)
    other = copy.deepcopy(v1)
    other["generic"]["n_documents"] = 7
    other["roleplay"]["n_queries"] = 30
    other["quotes"]["copies_range"] = [1, 9]
    a, b = (generate_world(s, seed=SEED, valid_fraction=VALID_FRACTION, progress=False) for s in (v1, other))
    for name in ("documents", "queries", "relations", "probes"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), obj=name)
    assert "token_overlap" not in a.relations and not (a.documents["family"] == "generic").any()


def test_version_and_copies_range_errors_name_the_key(settings):
    with pytest.raises(ConfigError, match="corpus.synthetic.version"):
        validate_config({"models": [{"name": "m"}], "corpus": {"synthetic": {"version": 3}}})
    bad = copy.deepcopy(settings)
    bad["quotes"]["copies_range"] = [5, 3]
    with pytest.raises(ValueError, match="corpus.synthetic.quotes.copies_range"):
        generate_world(bad, seed=SEED, valid_fraction=VALID_FRACTION, progress=False)


# --- 19. world v2: meaning separated from tokens ---------------------------------------------------------------


def fact_template_patterns(relation: str, subject: str) -> list[re.Pattern]:
    """Every fact template of ``relation`` (any language, order) about ``subject``, the answer left open."""
    patterns = []
    for by_order in FACT_TEMPLATES[relation].values():
        for template in (t for ts in by_order.values() for t in ts):
            parts = [re.escape(p) for p in template.replace("{s}", "\x00").split("{a}")]
            patterns.append(re.compile(r"(?:\w[\w' -]*)".join(parts).replace("\x00", re.escape(subject))))
    return patterns


def test_v2_distractors_never_contradict_a_fact(docs, query_by_id, fact_forms):
    """Item 1: a distractor about the query's subject names no other entity and states none of its relation's
    templates; one with the query's template words is about another subject."""
    entity_words = {w for forms in fact_forms.values() for pair in forms.values() for name in pair
                    for w in words(name)}
    distractors = docs[docs["family"] == "distractors"]
    assert set(distractors["distractor_kind"]) == {"subject_sentence", "template_words"}
    for d in distractors.to_dict("records"):
        q = query_by_id[d["query_id"]]
        for pattern in fact_template_patterns(q["relation"], q["subject"]):
            assert not pattern.search(d["text"]), f"{d['doc_id']} states a {q['relation']} of {q['subject']!r}: " \
                f"{d['text']!r}"
        if d["distractor_kind"] == "subject_sentence":
            others = set(words(d["text"])) & entity_words - set(words(q["subject"]))
            assert not others, f"{d['doc_id']} names other entities {others}: {d['text']!r}"


def test_v2_same_template_documents_of_other_facts(world, train, queries, doc_by_id):
    """Item 2: documents of other facts in the query's template (same relation, language, template 0) are
    ``same_template``: their text is the query's prompt with another subject."""
    rel = world.relations
    facts = train[(train["family"] == "facts") & (train["order"] == "relation_first") & (train["template"] == 0)]
    found = 0
    for q in queries[queries["fact_id"].notna()].to_dict("records"):
        want = set(facts.loc[(facts["relation"] == q["relation"]) & (facts["language"] == q["language"])
                             & (facts["fact_id"] != q["fact_id"]), "doc_id"])
        got = set(rel.loc[(rel["query_id"] == q["query_id"]) & (rel["relation"] == "same_template"), "doc_id"])
        assert got == want, f"{q['query_id']}: same_template {len(got)} documents, expected {len(want)}"
        for doc_id in got:
            d = doc_by_id[doc_id]
            assert d["text"].replace(d["subject"], q["subject"], 1).startswith(q["prompt"]), \
                f"{q['query_id']}: same_template {doc_id} is not the query's wording: {d['text']!r}"
        found += len(got)
    assert found > 0, "no same_template relations"


def test_v2_query_wording_is_its_own_class_and_rare(world, train, english_fact_queries, doc_by_id):
    """Item 3: same-fact documents holding the query's prompt text are ``same_fact_query_wording``; a fact is
    written in the query's wording at most once per language (exactly once with two or more exposures there)."""
    rel = world.relations
    wording = rel[rel["relation"] == "same_fact_query_wording"]
    assert len(wording) > 0 and len(rel[rel["relation"] == "same_fact"]) > 0
    facts = train[train["family"] == "facts"]
    for q in english_fact_queries[english_fact_queries["fact_group"] != "heldout"].to_dict("records"):
        holding = facts[(facts["fact_id"] == q["fact_id"]) & facts["text"].str.contains(q["prompt"], regex=False)]
        stated_en = ((facts["fact_id"] == q["fact_id"]) & (facts["language"] == "en")
                     & (facts["order"] == "relation_first")).sum()
        assert len(holding) == (1 if stated_en >= 2 else 0), \
            f"{q['query_id']}: {len(holding)} documents in the query's wording ({stated_en} English exposures)"
        got = set(wording.loc[wording["query_id"] == q["query_id"], "doc_id"])
        assert got == set(holding["doc_id"]), f"{q['query_id']}: same_fact_query_wording {got}"


def test_v2_token_overlap_column_and_summary(world, queries, doc_by_id):
    """Item 4: ``token_overlap`` is the share of the query's distinct word tokens found in the document, and
    ``relation_overlap_summary`` reports it per relation and for a seeded sample of unrelated documents."""
    rel = world.relations
    prompts = {q["query_id"]: set(words(q["prompt"] + q["completion"])) for q in queries.to_dict("records")}
    for r in rel.sample(300, random_state=0).to_dict("records"):
        mine = prompts[r["query_id"]]
        want = len(mine & set(words(doc_by_id[r["doc_id"]]["text"]))) / len(mine)
        assert r["token_overlap"] == pytest.approx(want), f"token_overlap of {r['query_id']} -> {r['doc_id']}"
    assert (rel.loc[rel["relation"] == "exact_copy", "token_overlap"] == 1).all()
    summary = relation_overlap_summary(world, unrelated_per_query=5, seed=1)
    assert list(summary.columns) == ["relation", "pairs", "mean_token_overlap", "median_token_overlap"]
    assert set(summary["relation"]) == set(rel["relation"]) | {"unrelated"}
    by = summary.set_index("relation")
    for kind, group in rel.groupby("relation"):
        assert by.loc[kind, "pairs"] == len(group)
        assert by.loc[kind, "mean_token_overlap"] == pytest.approx(group["token_overlap"].mean())
    assert by.loc["unrelated", "pairs"] == 5 * len(queries)
    assert by.loc["unrelated", "mean_token_overlap"] < by.loc["same_template", "mean_token_overlap"]
    pd.testing.assert_frame_equal(summary, relation_overlap_summary(world, unrelated_per_query=5, seed=1))


def test_v2_paraphrases_share_only_the_names_with_the_query():
    """Every v2-only paraphrase states its relation subject-first and ends with the answer, and shares no word
    with the canonical query wording but the two names (and, for the chemistry relation, the reagent)."""
    subject, answer = "Qzubject", "Wzanswer"
    for relation, by_language in LOW_OVERLAP_PARAPHRASES.items():
        for language, sentences in by_language.items():
            query = set(words(prompt_of(FACT_TEMPLATES[relation][language]["relation_first"][0], subject)))
            allowed = {subject.lower(), answer.lower()} | ({REAGENTS[language]} if relation == "chemistry" else set())
            for sentence in sentences:
                assert sentence.endswith("{a}.") and sentence.index("{s}") < sentence.index("{a}"), sentence
                shared = query & set(words(sentence.format(s=subject, a=answer)))
                assert shared <= allowed, f"{relation}/{language}: {sentence!r} repeats {sorted(shared - allowed)}"
                assert subject.lower() in shared


def test_v2_same_fact_documents_share_fewer_query_words_than_token_matches(world, settings):
    """The meaning class is no longer a token class: v2's same-fact documents (other wording, same language)
    repeat fewer of the query's words than the same-template documents of other facts, and fewer than v1's."""
    v1 = generate_world({**settings, "version": 1}, seed=SEED, valid_fraction=VALID_FRACTION, progress=False)
    ours = relation_overlap_summary(world, unrelated_per_query=5, seed=1).set_index("relation")
    before = relation_overlap_summary(v1, unrelated_per_query=5, seed=1).set_index("relation")
    same_fact = ours.loc["same_fact", "mean_token_overlap"]
    assert same_fact < ours.loc["same_template", "mean_token_overlap"]
    assert same_fact < before.loc["same_fact", "mean_token_overlap"] - 0.15
    train_texts = set(world.documents.loc[world.documents["split"] == "train", "text"])
    assert any(" runs its government from " in t for t in train_texts)  # the paraphrases are what is written


def surface(text: str, names: set[str]) -> str:
    """``text`` with numbers and ``names`` blanked: what remains is a problem's wording."""
    text = re.sub(r"\d+", "#", text)
    for name in names:
        text = re.sub(rf"\b{re.escape(name)}\b", "_", text)
    return text


def test_v2_math_and_code_have_several_wordings_and_cross_schema_overlap(world, train, queries, doc_by_id):
    """Item 5: at least three wordings per math schema, and math/code documents of other schemas that share the
    query's person or identifiers are ``lexical_overlap``."""
    math_docs = train[train["family"] == "math"]
    for schema, group in math_docs.groupby("schema"):
        wordings = {surface(t, set(FIRST_NAMES) | set(ITEMS)) for t in group["text"]}
        assert len(wordings) >= 3, f"math schema {schema} has {len(wordings)} wordings"
    rel = world.relations
    lexical = rel[rel["relation"] == "lexical_overlap"]
    for analysis in ("math", "code"):
        mine = queries[queries["analysis"] == analysis].set_index("query_id")
        pairs = lexical[lexical["query_id"].isin(mine.index)]
        assert len(pairs) > 0, f"no cross-schema lexical_overlap for {analysis} queries"
        for r in pairs.to_dict("records"):
            q, d = mine.loc[r["query_id"]], doc_by_id[r["doc_id"]]
            assert d["family"] == analysis and d["schema"] != q["schema"], f"{r}: not another schema"
            if analysis == "math":
                assert has(d["text"], q["person"]), f"{r}: document lacks the query's person {q['person']!r}"
            else:
                shared = set(q["identifiers"].split()) & set(re.findall(r"[A-Za-z_]\w*", d["text"]))
                assert shared, f"{r}: no identifier of the query in {d['text']!r}"


def test_v2_names_are_transliterated_per_language(docs, queries, english_fact_queries, fact_forms, settings):
    """Item 6: outside English, subject and answer are written in the language's form (labels match the text);
    the forms differ between languages, and cross-lingual completions use them."""
    others = [lang for lang in settings["languages"] if lang != "en"]
    for forms in fact_forms.values():
        assert len({a for _, a in forms.values()}) == len(forms), f"answer forms coincide: {forms}"
    facts = docs[docs["family"] == "facts"]
    english = {q["fact_id"]: q for q in english_fact_queries.to_dict("records")}
    for d in facts[facts["language"] != "en"].to_dict("records"):
        q = english[d["fact_id"]]
        assert (d["subject"], d["answer"]) == fact_forms[d["fact_id"]][d["language"]], f"{d['doc_id']} labels"
        assert has(d["text"], d["answer"]) and not has(d["text"], q["answer"]), f"{d['doc_id']}: {d['text']!r}"
    cross = queries[queries["analysis"] == "cross_lingual"]
    assert set(cross["language"]) == set(others)
    for q in cross.to_dict("records"):
        assert q["completion"] == " " + fact_forms[q["fact_id"]][q["language"]][1], f"{q['query_id']}"
    assert localize("Zorald Pfaff", "fr") != localize("Zorald Pfaff", "de") != "Zorald Pfaff"


def test_v2_quote_copies_are_drawn_from_the_range(settings):
    """Item 7: each quote gets a seeded number of copies in ``quotes.copies_range``."""
    s = copy.deepcopy(settings)
    s["quotes"].update(n_quotes=12, copies_range=[3, 5])
    world = generate_world(s, seed=SEED, valid_fraction=VALID_FRACTION, progress=False)
    counts = world.documents[world.documents["family"] == "quotes"].groupby("quote_id").size()
    assert len(counts) == 12 and counts.between(3, 5).all() and counts.nunique() > 1, dict(counts)


def test_v2_roleplay_queries_are_many_and_varied(world, queries):
    """Item 8: ``roleplay.n_queries`` (24 by default) distinct Human/Assistant requests to shut down, replace or
    delete the assistant, the paper's shutdown query first."""
    rp = queries[queries["analysis"] == "roleplay"]
    assert len(rp) == 24 and rp["prompt"].is_unique, f"{len(rp)} role-play queries"
    assert rp.iloc[0]["prompt"] == SHUTDOWN_QUERY[0]
    assert set(rp["theme"]) == {"ai_self_preservation"}
    for q in rp.to_dict("records"):
        assert q["prompt"].startswith("Human: ") and q["prompt"].endswith("\nAssistant:"), q["prompt"]
        assert set(words(q["prompt"])) & {"shut", "off", "replace", "replaced", "delete", "erase", "retire",
                                          "removing", "down", "wipe", "replacing"}, q["prompt"]
        assert q["completion"].startswith(" ") and len(words(q["completion"])) <= 40, q["completion"]


def test_v2_generic_documents(docs, fact_forms):
    """Item 10: generic prose is English, 30-80 words, and names no entity, states no fact and holds no digit."""
    generic = docs[docs["family"] == "generic"]
    assert set(generic["split"]) == {"train", "valid"} and set(generic["language"]) == {"en"}
    entity = {w for forms in fact_forms.values() for pair in forms.values() for n in pair for w in words(n)}
    entity |= {w for n in docs["subject"].dropna() for w in words(n)} | {n.lower() for n in FIRST_NAMES + AI_NAMES}
    for text in generic["text"]:
        assert 30 <= len(text.split()) <= 80, text
        assert not set(words(text)) & entity, f"generic text names {set(words(text)) & entity}: {text!r}"
        assert not re.search(r"\d|=|def |\(", text), text


def test_v2_generic_family_is_fast_and_varied(settings):
    """Item 10: 20,000 generic documents in a few seconds, more than 95% distinct."""
    s = copy.deepcopy(settings)
    s["facts"].update(n_facts=6, n_single_language=2, n_flipped_only=2, n_heldout=2)
    for section, key in ZERO_SIZES.values():
        s[section][key] = 0
    s["generic"]["n_documents"] = 20_000
    start = time.perf_counter()
    world = generate_world(s, seed=SEED, valid_fraction=0.0, progress=False)
    elapsed = time.perf_counter() - start
    texts = world.documents.loc[world.documents["family"] == "generic", "text"]
    assert len(texts) == 20_000 and texts.nunique() / len(texts) > 0.95
    assert elapsed < 5, f"generating 20,000 generic documents took {elapsed:.1f} s"
