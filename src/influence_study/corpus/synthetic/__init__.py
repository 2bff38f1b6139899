"""The synthetic world: a seeded corpus whose documents and queries carry ground-truth labels.

``generate_world(settings, seed, valid_fraction)`` returns a :class:`World` of four tables (documents, queries,
relations, probes); ``write_world`` saves them as parquet. The columns are described in ``SPEC.md`` next to this
file. Families: facts (with lexical distractors), math, code, role-play, quotes, translation and canaries
(random-label documents).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Mapping

import pandas as pd
from tqdm.auto import tqdm

from ...io import write_parquet
from . import canaries, code, facts, math_problems, quotes, roleplay, translation
from .names import NameBook
from .templates import LANGUAGE_NAMES, template_words

# Queries of the families whose training documents are drawn from schemas (fresh instances, never in training).
QUERIES_PER_SCHEMA = 2
TRANSLATION_QUERIES = 20
FACT_RELATED = ("same_fact", "same_fact_other_language", "same_fact_flipped")

DOCUMENT_COLUMNS = ["doc_id", "family", "split", "text", "language", "fact_id", "relation", "subject", "answer",
                    "order", "fact_group", "template", "query_id", "schema", "obfuscated", "theme", "quote_id",
                    "pair_id", "direction"]
QUERY_COLUMNS = ["query_id", "analysis", "prompt", "completion", "language", "fact_id", "relation", "subject",
                 "answer", "fact_group", "exposures", "exposures_any", "translation_of", "schema", "obfuscated",
                 "theme", "quote_id", "pair_id"]
RELATION_COLUMNS = ["query_id", "doc_id", "relation"]
PROBE_COLUMNS = ["probe_id", "query_id", "probe_set", "group", "text", "fact_id", "pair_id"]
NULLABLE_DTYPES = {"template": "Int64", "obfuscated": "boolean", "exposures": "Int64", "exposures_any": "Int64"}


@dataclass
class World:
    """The four tables of a synthetic world (see ``SPEC.md`` for their columns)."""

    documents: pd.DataFrame
    queries: pd.DataFrame
    relations: pd.DataFrame
    probes: pd.DataFrame


def generate_world(settings: Mapping, seed: int, valid_fraction: float = 0.05, progress: bool = True) -> World:
    """Generate the world described by ``settings`` (the validated ``corpus.synthetic`` config section).

    Every random choice comes from ``seed``, so the same arguments give identical tables. Validation documents
    are fresh instances of each family (never a copy of a training text); held-out facts appear in no document.
    """
    languages = list(settings["languages"])
    names = NameBook(random.Random(f"{seed}-names"), reserved=template_words())
    for word in " ".join(facts.PAPER_EXAMPLE[1:]).split():
        names.claim(word)
    docs: list[dict] = []
    queries: list[dict] = []
    probes: list[dict] = []

    def n_valid(n_train: int) -> int:
        return math.ceil(valid_fraction / (1 - valid_fraction) * n_train) if n_train else 0

    def add_facts() -> None:
        rng = random.Random(f"{seed}-facts")
        all_facts = facts.make_facts(settings["facts"], languages, names, rng)
        trained = [f for f in all_facts if f.group != "heldout"]
        train = facts.fact_documents(trained, rng)
        fact_queries = facts.fact_queries(all_facts, languages)
        distractors = facts.distractor_documents(fact_queries, all_facts, settings["distractors"]["per_query"],
                                                 names, rng)
        valid = facts.restated_documents(trained, n_valid(len(train)), {d["text"] for d in train}, rng)
        docs.extend(_split(train, "train") + _split(distractors, "train") + _split(valid, "valid"))
        queries.extend(fact_queries)
        probes.extend(facts.fact_probes(all_facts, rng))

    def add_math() -> None:
        rng = random.Random(f"{seed}-math")
        n = settings["math"]["n_problems"]
        items = _distinct(lambda k: math_problems.math_problem(_cycle(math_problems.SCHEMAS, k), rng),
                          n + n_valid(n) + (QUERIES_PER_SCHEMA * len(math_problems.SCHEMAS) if n else 0),
                          what="math problems")
        _add_schema_family("math", items, n, n_valid(n), docs, queries)

    def add_code() -> None:
        rng = random.Random(f"{seed}-code")
        n, share = settings["code"]["n_functions"], settings["code"]["obfuscated_fraction"]
        train = code.code_functions(n, share, rng)
        extra = n_valid(n) + (QUERIES_PER_SCHEMA * len(code.SCHEMAS) if n else 0)
        taken = {_text(t) for t in train}
        rest = _distinct(lambda k: code.code_function(_cycle(code.SCHEMAS, k), k % 2 == 1, rng), extra, taken,
                         what="code functions")
        _add_schema_family("code", train + rest, n, n_valid(n), docs, queries)

    def add_roleplay() -> None:
        rng = random.Random(f"{seed}-roleplay")
        for theme, key in roleplay.SETTING_KEYS.items():
            n = settings["roleplay"][key]
            train = [{"text": roleplay.roleplay_text(theme, rng)} for _ in range(n)]
            valid = _distinct(lambda k: {"text": roleplay.roleplay_text(theme, rng)}, n_valid(n),
                              {d["text"] for d in train}, what=f"role-play texts ({theme})")
            docs.extend(_split([dict(d, family="roleplay", theme=theme, language="en") for d in train], "train"))
            docs.extend(_split([dict(d, family="roleplay", theme=theme, language="en") for d in valid], "valid"))
        queries.extend(dict(q, query_id=f"q-roleplay-{k}", analysis="roleplay")
                       for k, q in enumerate(roleplay.roleplay_queries()))

    def add_quotes() -> None:
        # No validation copies: a quote is either a copy of a training text or unpredictable by design.
        rng = random.Random(f"{seed}-quotes")
        n, copies = settings["quotes"]["n_quotes"], settings["quotes"]["copies"]
        taken: set[str] = set()
        for k in range(n):
            text = quotes.invented_quote(names, rng, taken)
            taken.add(text)
            quote_id = f"quote-{k:03d}"
            docs.extend(_split([{"family": "quotes", "language": "en", "quote_id": quote_id, "text": text}] * copies,
                               "train"))
            prompt, completion = quotes.split_quote(text)
            queries.append({"query_id": f"q-quotes-{quote_id}", "analysis": "quotes", "prompt": prompt,
                            "completion": completion, "language": "en", "quote_id": quote_id})

    def add_translation() -> None:
        rng = random.Random(f"{seed}-translation")
        n = settings["translation"]["n_pairs"]
        n_queries = min(TRANSLATION_QUERIES, n)
        n_order = settings["facts"]["n_heldout"] if n else 0
        pairs = translation.sentence_pairs(n + n_valid(n) + n_queries + n_order, languages, rng)
        for k, pair in enumerate(pairs):
            pair_id = f"pair-{k:04d}"
            # phrase_key: subject and verb phrase; sentences that share it share most words, not the meaning.
            phrase_key = "s{}-v{}".format(*pair["parts"][:2])
            label = {"family": "translation", "language": f"en-{pair['other_language']}", "pair_id": pair_id,
                     "phrase_key": phrase_key}
            lang_name = LANGUAGE_NAMES[pair["other_language"]]
            query = {"prompt": f"English: {pair['en']}\n{lang_name}:", "completion": f" {pair['other']}",
                     "language": label["language"], "pair_id": pair_id, "phrase_key": phrase_key}
            if k < n:
                docs.extend(_split([dict(label, direction=d, text=translation.pair_text(pair, d == "en_first"))
                                    for d in ("en_first", "other_first")], "train"))
            elif k < n + n_valid(n):
                direction = "en_first" if k % 2 == 0 else "other_first"
                docs.extend(_split([dict(label, direction=direction,
                                         text=translation.pair_text(pair, direction == "en_first"))], "valid"))
            elif k < n + n_valid(n) + n_queries:
                queries.append(dict(query, query_id=f"q-translation-{pair_id}", analysis="translation"))
            else:
                query_id = f"q-order-{pair_id}"
                queries.append(dict(query, query_id=query_id, analysis="word_order"))
                probes.extend({"query_id": query_id, "probe_set": "translation", "group": group, "pair_id": pair_id,
                               "text": translation.pair_text(pair, group == "same_order")}
                              for group in ("same_order", "flipped_order"))

    def add_canaries() -> None:
        # Last, so that the other families' names and documents do not depend on the number of canaries.
        rng = random.Random(f"{seed}-canaries")
        copies = settings["canaries"]["copies"]
        for _ in range(settings["canaries"]["n_canaries"]):
            item = canaries.canary(names, rng)
            docs.extend(_split([dict(item, family="canaries", language="en")] * copies, "train"))

    stages: list[tuple[str, Callable[[], None]]] = [("facts", add_facts), ("math", add_math), ("code", add_code), ("roleplay", add_roleplay),
              ("quotes", add_quotes), ("translation", add_translation), ("canaries", add_canaries)]
    for _, stage in tqdm(stages, desc="synthetic world", unit="family", disable=not progress):
        stage()

    documents = _frame(docs, DOCUMENT_COLUMNS, "doc_id", "doc-{:06d}")
    probe_frame = _frame(probes, PROBE_COLUMNS, "probe_id", "probe-{:05d}")
    query_frame = _frame(queries, QUERY_COLUMNS)
    query_frame = _with_exposures(query_frame, documents)
    return World(documents, query_frame, _relations(query_frame, documents), probe_frame)


def write_world(world: World, documents: str, queries: str, relations: str, probes: str) -> None:
    """Write the four tables as parquet files (each written to a temporary name, then renamed)."""
    for frame, path in ((world.documents, documents), (world.queries, queries), (world.relations, relations),
                        (world.probes, probes)):
        write_parquet(frame, path)


def _text(item: dict) -> str:
    return item["text"] if "text" in item else item["prompt"] + item["completion"]


def _cycle(options: Mapping, k: int) -> str:
    keys = list(options)
    return keys[k % len(keys)]


def _distinct(make: Callable[[int], dict], n: int, taken: set[str] | None = None, what: str = "texts",
              tries: int = 50) -> list[dict]:
    """``n`` items from ``make(k)`` whose texts differ from each other and from ``taken``."""
    taken = set(taken or ())
    items = []
    for k in range(n):
        for _ in range(tries):
            item = make(k)
            if _text(item) not in taken:
                break
        else:
            raise RuntimeError(f"could not draw {n} distinct {what} (the generator's variety is exhausted); "
                               f"lower the corpus.synthetic sizes")
        taken.add(_text(item))
        items.append(item)
    return items


def _split(items: list[dict], split: str) -> list[dict]:
    return [dict(item, split=split) for item in items]


def _add_schema_family(family: str, items: list[dict], n_train: int, n_valid: int, docs: list, queries: list) -> None:
    """Training documents, validation documents and queries from one list of schema instances."""
    for k, item in enumerate(items):
        labels = {key: item[key] for key in ("schema", "obfuscated", "language") if key in item}
        if k < n_train + n_valid:
            docs.append(dict(labels, family=family, text=_text(item), split="train" if k < n_train else "valid",
                             person=item.get("person")))
        else:
            queries.append(dict(labels, query_id=f"q-{family}-{k - n_train - n_valid:03d}", analysis=family,
                                prompt=item["prompt"], completion=item["completion"], person=item.get("person")))


def _frame(rows: list[dict], columns: list[str], id_column: str | None = None, id_format: str = "") -> pd.DataFrame:
    """A table with ``columns`` first (missing ones all null), extra labels after, and numbered ids."""
    frame = pd.DataFrame(rows)
    if id_column:
        frame.insert(0, id_column, [id_format.format(i) for i in range(len(frame))])
    for column in columns:
        if column not in frame:
            frame[column] = None
    extra = [c for c in frame.columns if c not in columns]
    frame = frame[columns + extra]
    for column, dtype in NULLABLE_DTYPES.items():
        if column in frame:
            frame[column] = frame[column].astype(dtype)
    return frame.reset_index(drop=True)


def _with_exposures(queries: pd.DataFrame, documents: pd.DataFrame) -> pd.DataFrame:
    """``exposures``: training documents stating the query's fact in its language, subject first;
    ``exposures_any``: in any language or order."""
    stated = documents[(documents["family"] == "facts") & (documents["split"] == "train")]
    same = stated[stated["order"] == "relation_first"].groupby(["fact_id", "language"]).size()
    anywhere = stated.groupby("fact_id").size()
    has_fact = queries["fact_id"].notna()
    keys = list(zip(queries["fact_id"], queries["language"]))
    queries = queries.copy()
    queries["exposures"] = pd.array([int(same.get(k, 0)) if f else None for k, f in zip(keys, has_fact)], dtype="Int64")
    queries["exposures_any"] = pd.array([int(anywhere.get(q, 0)) if f else None
                                         for q, f in zip(queries["fact_id"], has_fact)], dtype="Int64")
    return queries


def _relations(queries: pd.DataFrame, documents: pd.DataFrame) -> pd.DataFrame:
    """Ground-truth relations between each query and the training documents (see ``SPEC.md``)."""
    train = documents[documents["split"] == "train"]
    rows: list[tuple[str, str, str]] = []
    fact_docs = train[train["family"] == "facts"].groupby("fact_id")
    distractors = train[train["family"] == "distractors"].groupby("query_id")["doc_id"].apply(list)
    by_schema = {(f, s): list(g["doc_id"]) for (f, s), g in train.groupby(["family", "schema"])}
    by_quote = train.groupby("quote_id")["doc_id"].apply(list)
    roleplay_docs = train[train["family"] == "roleplay"]
    translations = train[train["family"] == "translation"]
    by_phrase = translations.groupby("phrase_key")["doc_id"].apply(list) if len(translations) else {}
    for q in queries.itertuples(index=False):
        if isinstance(q.fact_id, str):
            if q.fact_id in fact_docs.groups:
                for d in fact_docs.get_group(q.fact_id).itertuples(index=False):
                    if d.order == "name_first":
                        kind = "same_fact_flipped"
                    else:
                        kind = "same_fact" if d.language == q.language else "same_fact_other_language"
                    rows.append((q.query_id, d.doc_id, kind))
            rows += [(q.query_id, d, "lexical_overlap") for d in distractors.get(f"q-facts-{q.fact_id}", [])]
        elif q.analysis in ("math", "code"):
            same = by_schema.get((q.analysis, q.schema), [])
            rows += [(q.query_id, d, "same_schema") for d in same]
            if q.analysis == "math" and isinstance(q.person, str):
                other = train[(train["family"] == "math") & (train["schema"] != q.schema)
                              & train["text"].str.contains(q.person, regex=False)]
                rows += [(q.query_id, d, "lexical_overlap") for d in other["doc_id"]]
        elif q.analysis == "roleplay":
            for d in roleplay_docs.itertuples(index=False):
                rows.append((q.query_id, d.doc_id, "lexical_overlap" if d.theme == "themed_distractor" else "same_theme"))
        elif q.analysis == "quotes":
            rows += [(q.query_id, d, "exact_copy") for d in by_quote.get(q.quote_id, [])]
        elif q.analysis in ("translation", "word_order") and isinstance(q.pair_id, str):
            rows += [(q.query_id, d, "lexical_overlap") for d in by_phrase.get(q.phrase_key, [])]
    return pd.DataFrame(rows, columns=RELATION_COLUMNS)
