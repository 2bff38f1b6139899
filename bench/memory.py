"""Peak memory of pairwise scoring as the number of training sequences N grows (and what it does grow with).

Each point runs ``pairwise_scores`` in a fresh process over a training loader that GENERATES its batches on the
fly (nothing of the training set is held in memory), and reports the peak resident-memory increase during the
call. The result itself, ``[queries, N]`` scores (plus the per-module parts ``[modules, queries, N]`` kept to
sum them), necessarily grows with N; the bench subtracts its size and checks that what remains (the working
set) stays flat in N. It also varies the number of queries Q, the query rank and the batch size, which are
what the working set grows with.

Every point runs twice: with glibc's default malloc, and with ``MALLOC_MMAP_THRESHOLD_=131072``. By default
glibc raises its mmap threshold each time a large block is freed, so later activation buffers come from the
heap, where the small long-lived result tensors pin freed pages: the resident size then creeps up with the number
of batches although nothing is retained (``malloc_trim`` gives it back). A fixed threshold keeps every large
buffer in mmap, returned to the system on free, so the resident size shows what the engine actually holds.

Usage: .venv/bin/python bench/memory.py [--n-train 256 1024 4096 --threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "memory"
MALLOC = {"glibc default": {}, "fixed mmap 128K": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


class GeneratedBatches:
    """A re-iterable loader of ``n`` random Markov sequences, made batch by batch (O(batch) memory)."""

    def __init__(self, n: int, batch_size: int, seq_len: int, vocab: int, seed: int = 1):
        self.n, self.batch_size, self.seq_len, self.vocab, self.seed = n, batch_size, seq_len, vocab, seed

    def __iter__(self):
        for i, start in enumerate(range(0, self.n, self.batch_size)):
            size = min(self.batch_size, self.n - start)
            ids = C.markov_sequences(size, self.seq_len, self.vocab, seed=self.seed * 100_003 + i)
            yield C.lm_batches(ids, size)[0]


def worker(argv) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", nargs=4, type=int, metavar=("N", "Q", "RANK", "BATCH"))
    p.add_argument("--model", type=str)
    p.add_argument("--threads", type=int)
    a = p.parse_args(argv)
    n, q, rank, batch_size = a.worker
    cfg = json.loads(a.model)
    C.set_threads(a.threads)
    C.quiet()
    from influence_study import LanguageModelingTask, fit_factors, pairwise_scores

    model = C.gpt2(cfg["vocab"], cfg["seq_len"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"])
    task = LanguageModelingTask()
    factors = fit_factors(model, task, GeneratedBatches(64, 16, cfg["seq_len"], cfg["vocab"]), strategy="ekfac",
                          progress=False)
    queries = C.lm_batches(C.markov_sequences(q, cfg["seq_len"], cfg["vocab"], seed=2), q,
                           prompt_len=cfg["seq_len"] // 2)
    train = GeneratedBatches(n, batch_size, cfg["seq_len"], cfg["vocab"])
    pairwise_scores(model, task, factors, queries, GeneratedBatches(2 * batch_size, batch_size, cfg["seq_len"],
                                                                    cfg["vocab"]),
                    query_rank=rank or None, progress=False)  # warm-up: allocator pools, lazy imports
    with C.PeakMemory() as mem:
        started = time.perf_counter()
        scores = pairwise_scores(model, task, factors, queries, train, query_rank=rank or None, progress=False)
        seconds = time.perf_counter() - started
    result_mib = (scores.scores.numel() * (1 + len(scores.module_names)) * scores.scores.element_size()
                  + scores.train_indices.numel() * 8) / 2 ** 20
    print(json.dumps({"n": n, "queries": q, "query_rank": rank or None, "batch_size": batch_size,
                      "peak_mib": mem.peak_mib, "result_mib": result_mib, "working_mib": mem.peak_mib - result_mib,
                      "seconds": seconds, "method": mem.method}))


def main() -> int:
    p = C.parser(__doc__)
    C.model_arguments(p)
    p.add_argument("--n-train", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--queries", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    model = json.dumps({k: getattr(args, k) for k in ("vocab", "seq_len", "n_embd", "n_layer", "n_head")})
    script = Path(__file__).resolve()
    runs = [(n, args.queries, 0, args.batch_size) for n in args.n_train]
    mid = args.n_train[0]
    runs += [(mid, 4 * args.queries, 0, args.batch_size), (mid, 4 * args.queries, 8, args.batch_size),
             (mid, args.queries, 0, 4 * args.batch_size)]
    records = []
    for n, q, rank, batch_size in runs:
        for malloc, env in MALLOC.items():
            rec = C.run_worker(script, [n, q, rank, batch_size, "--model", model], args.threads, env)
            rec["malloc"] = malloc
            records.append(rec)
            print(f"  N {n:6d}  Q {q:3d}  rank {rank or 'full':>4}  batch {batch_size:3d}  malloc {malloc:15s}: "
                  f"peak +{rec['peak_mib']:.1f} MiB (result {rec['result_mib']:.2f} MiB) in {rec['seconds']:.1f} s",
                  flush=True)
    rows = [[r["n"], r["queries"], r["query_rank"] or "full", r["batch_size"], r["malloc"], r["peak_mib"],
             r["result_mib"], r["working_mib"], r["seconds"]] for r in records]
    text = C.table(["N train", "Q", "query_rank", "batch", "malloc", "peak MiB", "result MiB", "peak - result MiB",
                    "seconds"], rows,
                   title=f"Peak resident-memory increase of pairwise_scores (GPT-2 {args.n_layer} layers, "
                         f"n_embd {args.n_embd}, seq {args.seq_len}; streamed training loader; threads {args.threads})")
    for malloc in MALLOC:
        flat = [r["working_mib"] for r in records if r["malloc"] == malloc][:len(args.n_train)]
        text += (f"\n\nWorking set (peak - result), malloc {malloc}, over N = {args.n_train}: {min(flat):.1f} to "
                 f"{max(flat):.1f} MiB ({max(flat) / max(min(flat), 1e-9):.2f}x for a "
                 f"{args.n_train[-1] / args.n_train[0]:.0f}x larger N).")
    return C.report(NAME, args, records, text)


if __name__ == "__main__":
    sys.exit(C.main_or_worker(main, worker))
