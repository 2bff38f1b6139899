"""Peak memory of one workflow shard job (``stages.influence.score_shard``) is bounded by the shard's size, not the
corpus's.

A study directory is built twice, with a corpus of N1 and of N2 = 4 x N1 training documents (the synthetic
world's documents, repeated under new ids), the same queries, model (a small GPT-2, random weights: memory does
not depend on them), factors and BM25 candidates. The shard job then runs in a fresh process for:
  - N1 documents in S1 shards and N2 documents in 4 x S1 shards: the same documents per shard, 4x the corpus;
  - N2 documents in S1 shards: 4x the documents per shard (the control: memory does grow with shard size).
Each reports the peak resident-memory increase during the job (VmHWM reset at entry), with glibc's mmap threshold
fixed as in bench/memory.py, so freed buffers do not linger as heap fragmentation.

Usage: .venv/bin/python bench/shard_memory.py [--n1 2000 --shards 2 --queries 512 --threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "shard_memory"
WORK = C.RESULTS_DIR / "_work_shard_memory"
ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def config(work: Path, n_docs: int, shards: int, queries: int) -> dict:
    from influence_study.study.config import validate_config

    return validate_config({
        "seed": 0, "device": "cpu", "output_dir": str(work),
        "models": [{"name": "bench", "architecture": "gpt2", "n_layer": 2, "d_model": 64, "n_head": 2}],
        "influence": {"strategies": ["ekfac"], "fit_documents": 200, "batch_size": 32, "query_batch_size": 64,
                      "query_rank": 16, "rescore_top_k": 20, "shards": shards},
        "candidates": {"top_k": 50, "recall_k": [10]},
    })


def build(work: Path, n_docs: int, queries: int) -> None:
    """corpus.parquet (n_docs training documents), queries.parquet, model/, factors/, bm25.parquet under work."""
    import pandas as pd

    from influence_study.stages import influence as influence_steps
    from influence_study.corpus.synthetic import generate_world
    from influence_study.models.build import build_model, build_model_config
    from influence_study.corpus.tokenizer import train_tokenizer

    if (work / "bm25.parquet").exists():
        return
    work.mkdir(parents=True, exist_ok=True)
    cfg = config(work, n_docs, 1, queries)
    world = generate_world(cfg["corpus"]["synthetic"], seed=0, valid_fraction=0.05, progress=False)
    texts = world.documents.loc[world.documents["split"] == "train", "text"].tolist()
    docs = pd.DataFrame({"doc_id": [f"doc-{i:07d}" for i in range(n_docs)],
                         "text": [texts[i % len(texts)] for i in range(n_docs)], "split": "train"})
    docs.to_parquet(work / "corpus.parquet")
    world.queries.head(queries).to_parquet(work / "queries.parquet")
    tokenizer = train_tokenizer(texts, vocab_size=1024, progress=False)
    entry = cfg["models"][0]
    model = build_model(build_model_config(entry, len(tokenizer), 128, tokenizer.eos_token_id), seed=0)
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    influence_steps.fit_model_factors(cfg, "bench", "ekfac", str(work / "model"), str(work / "corpus.parquet"),
                                      str(work / "factors"), progress=False)
    influence_steps.make_candidates(cfg, str(work / "corpus.parquet"), str(work / "queries.parquet"),
                                    str(work / "bm25.parquet"))


def worker(argv) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", nargs=3, type=str, metavar=("WORK", "SHARDS", "QUERIES"))
    p.add_argument("--threads", type=int)
    a = p.parse_args(argv)
    work, shards, queries = Path(a.worker[0]), int(a.worker[1]), int(a.worker[2])
    C.set_threads(a.threads)
    C.quiet()
    import pandas as pd

    from influence_study.stages import influence as influence_steps

    n_docs = len(pd.read_parquet(work / "corpus.parquet", columns=["doc_id"]))
    cfg = config(work, n_docs, shards, queries)
    args = (cfg, "bench", "ekfac")
    paths = [str(work / "model"), str(work / "factors"), str(work / "corpus.parquet"), str(work / "queries.parquet"),
             str(work / "bm25.parquet")]
    from influence_study.stages.influence_inputs import load_study_inputs

    load_study_inputs(*paths[:1], paths[2], paths[3])  # warm-up: imports and lazy initialisation, not measured
    with C.PeakMemory() as mem:
        started = time.perf_counter()
        influence_steps.score_shard(*args, f"1-of-{shards}", *paths, str(work / f"shard-1-of-{shards}.parquet"),
                                    progress=False)
        seconds = time.perf_counter() - started
    rows = len(pd.read_parquet(work / f"shard-1-of-{shards}.parquet", columns=["score"]))
    print(json.dumps({"corpus": n_docs, "shards": shards, "documents_per_shard": n_docs / shards,
                      "queries": queries, "peak_mib": mem.peak_mib, "seconds": seconds, "shard_rows": rows,
                      "method": mem.method}))


def main() -> int:
    p = C.parser(__doc__)
    p.add_argument("--n1", type=int, default=2000)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--queries", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    C.quiet()
    n2 = 4 * args.n1
    for n in (args.n1, n2):
        build(WORK / f"corpus-{n}", n, args.queries)
    script = Path(__file__).resolve()
    runs = [(args.n1, args.shards), (n2, 4 * args.shards), (n2, args.shards)]
    records = []
    for n, shards in runs:
        rec = C.run_worker(script, [WORK / f"corpus-{n}", shards, args.queries], args.threads, ENV)
        records.append(rec)
        print(f"  corpus {n:6d}  shards {shards:3d}  docs/shard {n / shards:7.0f}: peak +{rec['peak_mib']:.1f} MiB "
              f"in {rec['seconds']:.1f} s", flush=True)
    rows = [[r["corpus"], r["shards"], int(r["documents_per_shard"]), r["queries"], r["peak_mib"], r["seconds"]]
            for r in records]
    same, bigger_corpus, bigger_shard = records
    text = C.table(["corpus docs", "shards", "docs per shard", "queries", "peak MiB", "seconds"], rows,
                   title=f"Peak resident-memory increase of one score_shard job (GPT-2 2 layers, d_model 64, "
                         f"64 queries per pass, rank 16, re-scoring top 20; threads {args.threads}; "
                         f"MALLOC_MMAP_THRESHOLD_=131072)")
    text += (f"\n\nSame shard size, 4x the corpus: {bigger_corpus['peak_mib'] / same['peak_mib']:.2f}x the peak."
             f"\n4x the shard size (control):    {bigger_shard['peak_mib'] / same['peak_mib']:.2f}x the peak.")
    return C.report(NAME, args, records, text)


if __name__ == "__main__":
    sys.exit(C.main_or_worker(main, worker))
