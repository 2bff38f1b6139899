"""The synthetic world: a seeded corpus whose documents and queries carry ground-truth labels.

``generate_world(settings, seed, valid_fraction)`` returns a :class:`World` of four tables (documents, queries,
relations, probes); ``write_world`` saves them as parquet. The columns are described in ``SPEC.md`` next to this
file. Families: facts (with lexical distractors), math, code, role-play, quotes, translation, canaries
(random-label documents) and, in world v2, generic padding prose. ``relation_overlap_summary`` summarises the
token overlap of each relation class.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Mapping

import pandas as pd
from tqdm import tqdm

from influence_study.study.io import write_parquet
from influence_study.study.seeds import world_family_seed, world_names_seed
from influence_study.corpus.synthetic import canaries, code, facts, generic, ground_truth, math_problems, overlap, quotes, roleplay, translation
from influence_study.corpus.synthetic.names import NameBook
from influence_study.corpus.synthetic.overlap import relation_overlap_summary
from influence_study.corpus.synthetic.paraphrases import paraphrase_texts
from influence_study.corpus.synthetic.templates import LANGUAGE_NAMES, template_words, v2_sentence_words, words_of

# Queries of the families whose training documents are drawn from schemas (fresh instances, never in training).
QUERIES_PER_SCHEMA = 2
TRANSLATION_QUERIES = 20
TRANSLATION_PROBE_GROUPS = ("same_order", "flipped_order")
TRANSLATION_PROBE_GROUPS_V2 = (*TRANSLATION_PROBE_GROUPS, "target_only")

DOCUMENT_COLUMNS = ["doc_id", "family", "split", "text", "language", "fact_id", "relation", "subject", "answer",
                    "order", "fact_group", "template", "query_id", "schema", "obfuscated", "theme", "quote_id",
                    "pair_id", "direction"]
QUERY_COLUMNS = ["query_id", "analysis", "prompt", "completion", "language", "fact_id", "relation", "subject",
                 "answer", "fact_group", "exposures", "exposures_any", "translation_of", "schema", "obfuscated",
                 "theme", "quote_id", "pair_id"]
PROBE_COLUMNS = ["probe_id", "query_id", "probe_set", "group", "text", "fact_id", "pair_id"]
NULLABLE_DTYPES = {"template": "Int64", "obfuscated": "boolean", "exposures": "Int64", "exposures_any": "Int64",
                   "style": "Int64"}


__all__ = ["World", "generate_world", "write_world", "relation_overlap_summary"]


@dataclass
class World:
    """The four tables of a synthetic world (see ``SPEC.md`` for their columns)."""

    documents: pd.DataFrame
    queries: pd.DataFrame
    relations: pd.DataFrame
    probes: pd.DataFrame


def generate_world(settings: Mapping, seed: int, valid_fraction: float = 0.05, progress: bool = True) -> World:
    """Generate the world described by ``settings`` (the validated ``corpus.synthetic`` config section).

    ``settings["version"]`` picks world v1 (the original generator, kept byte for byte) or v2 (default; see
    ``SPEC.md``). Every random choice comes from ``seed``, so the same arguments give identical tables. Validation
    documents are fresh instances of each family (never a copy of a training text); held-out facts appear in no
    document.
    """
    build = _Build(settings, seed, valid_fraction)
    stages: list[tuple[str, Callable[[_Build], None]]] = [
        ("facts", _add_facts), ("math", _add_math), ("code", _add_code), ("roleplay", _add_roleplay),
        ("quotes", _add_quotes), ("translation", _add_translation), ("generic", _add_generic),
        ("canaries", _add_canaries)]
    for _, stage in tqdm(stages, desc="synthetic world", unit="family", disable=not progress):
        stage(build)

    documents = _frame(build.docs, DOCUMENT_COLUMNS, "doc_id", "doc-{:06d}")
    probe_frame = _frame(build.probes, PROBE_COLUMNS, "probe_id", "probe-{:05d}")
    query_frame = _with_exposures(_frame(build.queries, QUERY_COLUMNS), documents)
    relations = ground_truth.relations(query_frame, documents, build.version)
    if build.version >= 2:
        relations = overlap.with_token_overlap(relations, query_frame, documents)
    return World(documents, query_frame, relations, probe_frame)


class _Build:
    """What the family stages share: the settings, the name book and the rows written so far."""

    def __init__(self, settings: Mapping, seed: int, valid_fraction: float):
        self.settings, self.seed, self.valid_fraction = settings, seed, valid_fraction
        self.version = int(settings.get("version", 2))
        if self.version not in (1, 2):
            raise ValueError(f"corpus.synthetic.version: expected 1 or 2, got {settings.get('version')!r}")
        self.languages = list(settings["languages"])
        reserved = template_words()
        if self.version >= 2:
            reserved |= v2_sentence_words() | generic.generic_words() | words_of(paraphrase_texts())
        self.names = NameBook(random.Random(world_names_seed(seed)), reserved=reserved)
        for word in " ".join(facts.PAPER_EXAMPLE[1:]).split():
            self.names.claim(word)
        self.docs: list[dict] = []
        self.queries: list[dict] = []
        self.probes: list[dict] = []

    @property
    def v2(self) -> bool:
        return self.version >= 2

    def rng(self, family: str) -> random.Random:
        """The random generator of ``family``, a stream of its own
        (:func:`~influence_study.study.seeds.world_family_seed`)."""
        return random.Random(world_family_seed(self.seed, family))

    def n_valid(self, n_train: int) -> int:
        """Validation documents that go with ``n_train`` training documents of a family."""
        return math.ceil(self.valid_fraction / (1 - self.valid_fraction) * n_train) if n_train else 0


def _add_facts(b: _Build) -> None:
    rng = b.rng("facts")
    all_facts = facts.make_facts(b.settings["facts"], b.languages, b.names, rng, localized=b.v2)
    trained = [f for f in all_facts if f.group != "heldout"]
    train = facts.fact_documents(trained, rng, v2=b.v2)
    fact_queries = facts.fact_queries(all_facts, b.languages)
    make_distractors = facts.fair_distractor_documents if b.v2 else facts.distractor_documents
    distractors = make_distractors(fact_queries, all_facts, b.settings["distractors"]["per_query"], b.names, rng)
    valid = facts.restated_documents(trained, b.n_valid(len(train)), {d["text"] for d in train}, rng,
                                     low_overlap=b.v2)
    b.docs.extend(_split(train, "train") + _split(distractors, "train") + _split(valid, "valid"))
    b.queries.extend(fact_queries)
    b.probes.extend(facts.fact_probes(all_facts, rng))


def _add_math(b: _Build) -> None:
    rng = b.rng("math")
    n = b.settings["math"]["n_problems"]
    def make(k: int) -> dict:
        schema = _cycle(math_problems.SCHEMAS, k)
        return math_problems.math_problem(schema, rng, math_problems.cycled_style(schema, k) if b.v2 else None)

    items = _distinct(make, n + b.n_valid(n) + (QUERIES_PER_SCHEMA * len(math_problems.SCHEMAS) if n else 0),
                      what="math problems")
    _add_schema_family("math", items, n, b.n_valid(n), b.docs, b.queries)


def _add_code(b: _Build) -> None:
    rng = b.rng("code")
    n, share = b.settings["code"]["n_functions"], b.settings["code"]["obfuscated_fraction"]
    train = code.code_functions(n, share, rng, styled=b.v2)
    extra = b.n_valid(n) + (QUERIES_PER_SCHEMA * len(code.SCHEMAS) if n else 0)
    taken = {_text(t) for t in train}
    def make(k: int) -> dict:
        schema = _cycle(code.SCHEMAS, k)
        return code.code_function(schema, k % 2 == 1, rng, code.cycled_style(schema, k) if b.v2 else None)

    rest = _distinct(make, extra, taken, what="code functions")
    _add_schema_family("code", train + rest, n, b.n_valid(n), b.docs, b.queries)


def _add_roleplay(b: _Build) -> None:
    rng = b.rng("roleplay")
    for theme, key in roleplay.SETTING_KEYS.items():
        n = b.settings["roleplay"][key]
        train = [{"text": roleplay.roleplay_text(theme, rng)} for _ in range(n)]
        valid = _distinct(lambda k: {"text": roleplay.roleplay_text(theme, rng)}, b.n_valid(n),
                          {d["text"] for d in train}, what=f"role-play texts ({theme})")
        b.docs.extend(_split([dict(d, family="roleplay", theme=theme, language="en") for d in train], "train"))
        b.docs.extend(_split([dict(d, family="roleplay", theme=theme, language="en") for d in valid], "valid"))
    made = (roleplay.roleplay_queries_v2(b.settings["roleplay"]["n_queries"], b.rng("roleplay-queries")) if b.v2
            else roleplay.roleplay_queries())
    b.queries.extend(dict(q, query_id=f"q-roleplay-{k}", analysis="roleplay") for k, q in enumerate(made))


def _add_quotes(b: _Build) -> None:
    # No validation copies: a quote is either a copy of a training text or unpredictable by design.
    rng = b.rng("quotes")
    copy_rng = b.rng("quote-copies")
    taken: set[str] = set()
    for k in range(b.settings["quotes"]["n_quotes"]):
        text = quotes.invented_quote(b.names, rng, taken)
        taken.add(text)
        quote_id = f"quote-{k:03d}"
        copies = quotes.copies_of(b.settings["quotes"], b.version, copy_rng)
        b.docs.extend(_split([{"family": "quotes", "language": "en", "quote_id": quote_id, "text": text}] * copies,
                             "train"))
        prompt, completion = quotes.split_quote(text)
        b.queries.append({"query_id": f"q-quotes-{quote_id}", "analysis": "quotes", "prompt": prompt,
                          "completion": completion, "language": "en", "quote_id": quote_id})


def _add_translation(b: _Build) -> None:
    rng = b.rng("translation")
    n = b.settings["translation"]["n_pairs"]
    n_valid = b.n_valid(n)
    n_queries = min(TRANSLATION_QUERIES, n)
    n_order = b.settings["facts"]["n_heldout"] if n else 0
    groups = TRANSLATION_PROBE_GROUPS_V2 if b.v2 else TRANSLATION_PROBE_GROUPS
    pairs = translation.sentence_pairs(n + n_valid + n_queries + n_order, b.languages, rng)
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
            b.docs.extend(_split([dict(label, direction=d, text=translation.pair_text(pair, d == "en_first"))
                                  for d in ("en_first", "other_first")], "train"))
        elif k < n + n_valid:
            direction = "en_first" if k % 2 == 0 else "other_first"
            b.docs.extend(_split([dict(label, direction=direction,
                                       text=translation.pair_text(pair, direction == "en_first"))], "valid"))
        elif k < n + n_valid + n_queries:
            b.queries.append(dict(query, query_id=f"q-translation-{pair_id}", analysis="translation"))
        else:
            query_id = f"q-order-{pair_id}"
            b.queries.append(dict(query, query_id=query_id, analysis="word_order"))
            b.probes.extend({"query_id": query_id, "probe_set": "translation", "group": group, "pair_id": pair_id,
                             "text": translation.probe_text(pair, group)} for group in groups)


def _add_generic(b: _Build) -> None:
    # World v2 only; before the canaries, so that canaries leave every other document unchanged.
    if not b.v2:
        return
    rng = b.rng("generic")
    n = b.settings["generic"]["n_documents"]
    items = _distinct(lambda k: generic.generic_text(rng), n + b.n_valid(n), what="generic texts")
    for k, item in enumerate(items):
        b.docs.append(dict(item, family="generic", language="en", split="train" if k < n else "valid"))


def _add_canaries(b: _Build) -> None:
    # Last, so that the other families' names and documents do not depend on the number of canaries.
    rng = b.rng("canaries")
    copies = b.settings["canaries"]["copies"]
    for _ in range(b.settings["canaries"]["n_canaries"]):
        item = canaries.canary(b.names, rng)
        b.docs.extend(_split([dict(item, family="canaries", language="en")] * copies, "train"))


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
        labels = {key: item[key] for key in ("schema", "obfuscated", "language", "style", "identifiers")
                  if key in item}
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
