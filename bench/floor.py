"""How close pairwise scoring comes to the floor: one plain forward + backward over the training set.

For N training sequences, the ratio

    time(pairwise_scores over the N sequences) / time(plain forward + loss.backward() over the same N sequences)

with the same batch size and tokens. The plain pass (ordinary parameter gradients of the loss) is the cost no
gradient-based influence method avoids: every training example needs at least one forward and one backward.
Reported for Q = 10 and 50 queries, with query batching (query_rank=32) and at full rank, as the median of
several repeats after a warm-up; also split into the query side (query gradients + preconditioning + SVD,
paid once per query set) and the training pass (the part that scales with N). Goal (issue): <= 1.5 with
query batching.

Usage: .venv/bin/python bench/floor.py [--n-train 1024 --queries 10 50 --ranks 32 full --repeats 3]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "floor"


def plain_pass(model, batches) -> None:
    """Ordinary training step without the optimiser: forward, mean loss, loss.backward() into .grad."""
    for p in model.parameters():
        p.requires_grad_(True)
    for batch in batches:
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=batch["labels"]).loss
        loss.backward()
    model.zero_grad(set_to_none=True)


def query_side(model, task, factors, queries, rank):
    """What pairwise_scores does once per query set before streaming the training data."""
    from influence_study import query_gradients
    from influence_study.engine.scoring import _prepare_queries

    grads = query_gradients(model, task, factors.module_names, queries)
    pre = factors.precondition(grads)
    return _prepare_queries(pre, rank, tokens_per_example=queries[0]["input_ids"].shape[1], keep_full_rank=False)


def measure(fn):
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start_wall, time.process_time() - start_cpu


def main() -> int:
    p = C.parser(__doc__)
    C.model_arguments(p)
    p.add_argument("--n-train", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--queries", type=int, nargs="+", default=[10, 50])
    p.add_argument("--ranks", nargs="+", default=["32", "full"], help="query ranks; 'full' = no low-rank")
    p.add_argument("--completion", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = C.parse_in_process(p)
    from influence_study import LanguageModelingTask, fit_factors, pairwise_scores

    model = C.gpt2(args.vocab, args.seq_len, args.n_embd, args.n_layer, args.n_head)  # random init: cost only
    train = C.lm_batches(C.markov_sequences(args.n_train, args.seq_len, args.vocab, seed=1), args.batch_size)
    query_sets = {q: C.lm_batches(C.markov_sequences(q, args.seq_len, args.vocab, seed=2), q,
                                  prompt_len=args.seq_len - args.completion) for q in args.queries}
    ranks = [None if r == "full" else int(r) for r in args.ranks]
    task = LanguageModelingTask()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: GPT-2 {args.n_layer} layers, n_embd {args.n_embd}, vocab {args.vocab}, {n_params / 1e6:.2f}M "
          f"parameters; {args.n_train} training sequences x {args.seq_len} tokens, batch {args.batch_size}; "
          f"threads {args.threads}; median of {args.repeats} repeats", flush=True)

    factors = fit_factors(model, task, train, strategy="ekfac", progress=False)
    configs = [(q, r) for q in args.queries for r in ranks]
    jobs = {"plain": lambda: plain_pass(model, train),
            "fit_factors (ekfac)": lambda: fit_factors(model, task, train, strategy="ekfac", progress=False)}
    for q, r in configs:
        jobs[("score", q, r)] = (lambda q=q, r=r: pairwise_scores(model, task, factors, query_sets[q], train,
                                                                  query_rank=r, progress=False))
        jobs[("query", q, r)] = (lambda q=q, r=r: query_side(model, task, factors, query_sets[q], r))
    for fn in jobs.values():  # warm-up
        fn()
    samples = {k: [] for k in jobs}
    for _ in range(args.repeats):  # interleaved, so slow moments of a shared machine hit every job alike
        for key, fn in jobs.items():
            samples[key].append(measure(fn))
    wall = {k: statistics.median(s[0] for s in v) for k, v in samples.items()}
    cpu = {k: statistics.median(s[1] for s in v) for k, v in samples.items()}

    path_used = {}
    for q, r in configs:
        prepared = query_side(model, task, factors, query_sets[q], r)
        path_used[(q, r)] = "low-rank" if any(x.left is not None for x in prepared.values()) else "dense"

    rows, records = [], []
    for q, r in configs:
        total, query = wall[("score", q, r)], wall[("query", q, r)]
        total_cpu, query_cpu = cpu[("score", q, r)], cpu[("query", q, r)]
        rec = {"queries": q, "query_rank": r, "path": path_used[(q, r)], "score_s": total, "query_side_s": query,
               "plain_s": wall["plain"], "ratio_total": total / wall["plain"],
               "ratio_train_pass": (total - query) / wall["plain"],
               "ratio_total_cpu": total_cpu / cpu["plain"], "ratio_train_pass_cpu": (total_cpu - query_cpu) / cpu["plain"]}
        records.append(rec)
        rows.append([q, "full" if r is None else r, rec["path"], total, query, wall["plain"], rec["ratio_total"],
                     rec["ratio_train_pass"], rec["ratio_total_cpu"], rec["ratio_train_pass_cpu"]])
    text = C.table(["Q", "query_rank", "path used", "pairwise_scores s", "query side s", "plain fwd+bwd s",
                    "ratio total", "ratio training pass", "ratio total (CPU)", "ratio training pass (CPU)"], rows,
                   title=f"Pairwise scoring / plain forward+backward over {args.n_train} sequences")
    fit_rows = [["fit_factors (ekfac: 2 passes)", wall["fit_factors (ekfac)"], wall["plain"],
                 wall["fit_factors (ekfac)"] / wall["plain"], cpu["fit_factors (ekfac)"] / cpu["plain"]]]
    text += "\n\n" + C.table(["phase", "s", "plain fwd+bwd s", "ratio", "ratio (CPU)"], fit_rows,
                             title="Factor fitting on the same sequences, for reference")
    print()
    print(text)
    path = C.write_result(NAME, {"args": vars(args), "n_params": n_params, "results": records,
                                 "fit_ratio": fit_rows[0][3], "samples": {str(k): v for k, v in samples.items()},
                                 "table": text})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
