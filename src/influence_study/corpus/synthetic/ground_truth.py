"""Ground-truth relations between queries and training documents (``SPEC.md``, relations table).

World v1 labels same fact (by language and order), same schema, same theme, lexical overlap (distractors, themed
distractors, math problems of other schemas with the query's person, translations sharing a phrase) and exact
copies. World v2 adds ``same_fact_query_wording`` (a same-fact document that contains the query's prompt text;
neither meaning nor token-only), ``same_template`` (documents of other facts written with the query's template)
and lexical overlap of code of other schemas that uses the query's identifiers.
"""

from __future__ import annotations

import pandas as pd

RELATION_COLUMNS = ["query_id", "doc_id", "relation"]
QUERY_TEMPLATE = 0  # facts queries are written with template 0 of their relation and language


class _Index:
    """The training documents grouped the ways the relations look them up."""

    def __init__(self, documents: pd.DataFrame, version: int):
        train = documents[documents["split"] == "train"]
        self.train, self.version = train, version
        facts = train[train["family"] == "facts"]
        self.fact_docs = facts.groupby("fact_id")
        self.distractors = train[train["family"] == "distractors"].groupby("query_id")["doc_id"].apply(list)
        self.by_schema = {(f, s): list(g["doc_id"]) for (f, s), g in train.groupby(["family", "schema"])}
        self.by_quote = train.groupby("quote_id")["doc_id"].apply(list)
        self.roleplay_docs = train[train["family"] == "roleplay"]
        translations = train[train["family"] == "translation"]
        self.by_phrase = translations.groupby("phrase_key")["doc_id"].apply(list) if len(translations) else {}
        if version >= 2:
            query_form = facts[(facts["order"] == "relation_first") & (facts["template"] == QUERY_TEMPLATE)]
            self.by_template = {key: list(zip(g["fact_id"], g["doc_id"]))
                                for key, g in query_form.groupby(["relation", "language"])}
            code = train[train["family"] == "code"]
            self.code_names = [(d, s, set(str(n).split())) for d, s, n in
                               zip(code["doc_id"], code["schema"], code.get("identifiers", pd.Series(dtype=object)))]


def relations(queries: pd.DataFrame, documents: pd.DataFrame, version: int = 2) -> pd.DataFrame:
    """Ground-truth relations of each query to the training documents (``version``: the world's)."""
    index = _Index(documents, version)
    rows: list[tuple[str, str, str]] = []
    for q in queries.itertuples(index=False):
        if isinstance(q.fact_id, str):
            rows += _fact_relations(q, index)
        elif q.analysis in ("math", "code"):
            rows += _schema_relations(q, index)
        elif q.analysis == "roleplay":
            rows += [(q.query_id, d.doc_id, "lexical_overlap" if d.theme == "themed_distractor" else "same_theme")
                     for d in index.roleplay_docs.itertuples(index=False)]
        elif q.analysis == "quotes":
            rows += [(q.query_id, d, "exact_copy") for d in index.by_quote.get(q.quote_id, [])]
        elif q.analysis in ("translation", "word_order") and isinstance(q.pair_id, str):
            rows += [(q.query_id, d, "lexical_overlap") for d in index.by_phrase.get(q.phrase_key, [])]
    return pd.DataFrame(rows, columns=RELATION_COLUMNS)


def fact_relation(query, doc, version: int) -> str:
    """How a document stating the query's fact relates to it: flipped order, the query's own wording (v2), same
    language or other language."""
    if doc.order == "name_first":
        return "same_fact_flipped"
    if version >= 2 and query.prompt in doc.text:
        return "same_fact_query_wording"
    return "same_fact" if doc.language == query.language else "same_fact_other_language"


def _fact_relations(q, index: _Index) -> list[tuple[str, str, str]]:
    rows = []
    if q.fact_id in index.fact_docs.groups:
        rows += [(q.query_id, d.doc_id, fact_relation(q, d, index.version))
                 for d in index.fact_docs.get_group(q.fact_id).itertuples(index=False)]
    rows += [(q.query_id, d, "lexical_overlap") for d in index.distractors.get(f"q-facts-{q.fact_id}", [])]
    if index.version >= 2:
        rows += [(q.query_id, d, "same_template") for fact_id, d in index.by_template.get((q.relation, q.language), [])
                 if fact_id != q.fact_id]
    return rows


def _schema_relations(q, index: _Index) -> list[tuple[str, str, str]]:
    train = index.train
    rows = [(q.query_id, d, "same_schema") for d in index.by_schema.get((q.analysis, q.schema), [])]
    if q.analysis == "math" and isinstance(q.person, str):
        other = train[(train["family"] == "math") & (train["schema"] != q.schema)
                      & train["text"].str.contains(q.person, regex=False)]
        rows += [(q.query_id, d, "lexical_overlap") for d in other["doc_id"]]
    if q.analysis == "code" and index.version >= 2:
        mine = set(str(q.identifiers).split())
        rows += [(q.query_id, d, "lexical_overlap") for d, schema, names in index.code_names
                 if schema != q.schema and names & mine]
    return rows
