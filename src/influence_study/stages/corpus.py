"""Steps of the corpus stage: the synthetic world (or the user's corpus) with its queries, ground truth and probes,
and the byte-level BPE tokenizer trained on its training split."""

from __future__ import annotations

from typing import Mapping


from influence_study.corpus.loaders import load_documents
from influence_study.corpus.queries import empty_probes, empty_relations, load_queries
from influence_study.corpus.synthetic import generate_world, write_world
from influence_study.corpus.tokenizer import save_tokenizer, train_tokenizer
from influence_study.study.io import atomic_path, read_parquet, write_json, write_parquet
from influence_study.study.provenance import provenance, write_provenance
from influence_study.study.runtime import get_logger


def make_corpus(config: Mapping, documents: str, queries: str, relations: str, probes: str,
                progress: bool = True) -> None:
    """Generate the synthetic world, or load the user's corpus (``corpus.path``) and its queries
    (``queries.source``, :func:`~influence_study.corpus.queries.load_queries`), and write documents, queries,
    relations and probes (a user corpus has no ground truth: its relations and probes tables are empty)."""
    log = get_logger()
    corpus = config["corpus"]
    if corpus["source"] == "synthetic":
        world = generate_world(corpus["synthetic"], seed=config["seed"], valid_fraction=corpus["valid_fraction"],
                               progress=progress)
        write_world(world, documents, queries, relations, probes)
        frames = {"documents": world.documents, "queries": world.queries}
    else:
        docs = load_documents(corpus["source"], corpus["path"], text_field=corpus["text_field"],
                              hf_split=corpus["hf_split"], max_documents=corpus["max_documents"],
                              valid_fraction=corpus["valid_fraction"], seed=config["seed"])
        query_table = load_queries(config["queries"]["source"])
        write_parquet(docs, documents)
        write_parquet(query_table, queries)
        write_parquet(empty_relations(), relations)
        write_parquet(empty_probes(), probes)
        frames = {"documents": docs, "queries": query_table}
    counts = frames["documents"].groupby("split").size().to_dict()
    log.info("corpus %s: %s documents %s, %d queries", corpus["name"], len(frames["documents"]), counts,
             len(frames["queries"]))
    sources = [] if corpus["source"] == "synthetic" else [config["queries"]["source"]]
    for path in (documents, queries, relations, probes):
        write_provenance(path, config, sources if path == queries else [])


def make_tokenizer(config: Mapping, documents: str, tokenizer_dir: str, progress: bool = True) -> None:
    """Train the byte-level BPE tokenizer on the training split and save it with ``save_pretrained``."""
    docs = read_parquet(documents)
    texts = docs.loc[docs["split"] == "train", "text"].tolist()
    settings = config["tokenizer"]
    tokenizer = train_tokenizer(texts, settings["vocab_size"], settings["min_frequency"], progress=progress)
    with atomic_path(tokenizer_dir, directory=True) as tmp:
        save_tokenizer(tokenizer, tmp)
        write_json(provenance(config, [documents], vocab_size=len(tokenizer)), tmp / "provenance.json")
    get_logger().info("tokenizer: %d tokens, saved to %s", len(tokenizer), tokenizer_dir)
