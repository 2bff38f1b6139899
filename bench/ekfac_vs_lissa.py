"""EK-FAC against LiSSA at several depths, both scored against the exact damped Gauss-Newton solve.

On a tiny GPT-2 whose tracked MLP matrices have a few thousand parameters, ``strategy="exact"`` builds the
dense Gauss-Newton matrix G (true labels' expectation, no sampling) over all tracked parameters and solves
(G + λ)^-1 exactly. Every method uses the SAME damping: the exact solver's per-module default
(0.1 x mean diagonal of G's block = 0.1 x mean eigenvalue of the block), passed explicitly as a dict.

For 10 queries: wall time of EK-FAC (factor fitting included) and of LiSSA at each depth (its setup included),
each followed by the same pairwise scoring pass, and each one's Pearson correlation with the exact scores
(per query over the training sequences, averaged over queries). Reports the smallest depth at which LiSSA
reaches EK-FAC's correlation and the time ratio there.

Usage: .venv/bin/python bench/ekfac_vs_lissa.py [--depths 10 30 100 300 1000 --n-train 128 --threads 2]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "ekfac_vs_lissa"


def main() -> int:
    p = C.parser(__doc__)
    C.model_arguments(p, vocab=32, seq_len=16, n_embd=16, n_head=2)
    p.add_argument("--completion", type=int, default=4)
    p.add_argument("--n-inner", type=int, default=48)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--n-train", type=int, default=128)
    p.add_argument("--n-query", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16, help="batch size of every pass (and LiSSA's mini-batch)")
    p.add_argument("--depths", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    p.add_argument("--seed", type=int, default=0)
    args = C.parse_in_process(p)
    from influence_study import LanguageModelingTask, fit_factors, pairwise_scores
    from influence_study.engine.solvers import ExactSolver

    torch.manual_seed(args.seed)
    corpus = C.markov_sequences(1024, args.seq_len, args.vocab, seed=1, successors=3)
    model = C.gpt2(args.vocab, args.seq_len, args.n_embd, args.n_layer, args.n_head, n_inner=args.n_inner)
    losses = C.train_lm(model, corpus, args.train_steps, batch_size=32)
    train = C.lm_batches(corpus[:args.n_train], args.batch_size)
    queries = C.lm_batches(C.markov_sequences(args.n_query, args.seq_len, args.vocab, seed=2, successors=3),
                           args.n_query, prompt_len=args.seq_len - args.completion)
    task = LanguageModelingTask()

    started = time.perf_counter()
    exact = fit_factors(model, task, train, strategy="exact", progress=False)
    exact_fit = time.perf_counter() - started
    tracked = exact.matrix.shape[0]
    damping = exact.default_damping()
    print(f"model: GPT-2 {args.n_layer} layers, n_embd {args.n_embd}, n_inner {args.n_inner}, vocab {args.vocab}; "
          f"trained {args.train_steps} steps (loss {losses[0]} -> {losses[-1]}); {tracked} tracked parameters; "
          f"{args.n_train} training sequences x {args.seq_len} tokens, {args.n_query} queries; threads "
          f"{args.threads}", flush=True)
    print(f"damping (all methods): {{{', '.join(f'{k}: {v:.3g}' for k, v in damping.items())}}}", flush=True)

    def run(make):
        started = time.perf_counter()
        pre = make()
        fitted = time.perf_counter() - started
        scores = pairwise_scores(model, task, pre, queries, train, damping=damping, progress=False).scores
        return time.perf_counter() - started, fitted, scores.double()

    started = time.perf_counter()
    reference = pairwise_scores(model, task, exact, queries, train, damping=damping, progress=False).scores.double()
    exact_total = exact_fit + time.perf_counter() - started

    def corr(scores):
        return C.per_query(C.pearson, scores, reference), C.per_query(C.spearman, scores, reference)

    rows, records = [], []
    mask = torch.block_diag(*[torch.ones(s, s, dtype=torch.bool) for s in exact.functional.sizes])
    blockdiag = ExactSolver(exact.functional, exact.matrix * mask, dict(exact.metadata, block_diagonal=True))
    t_bd, _, s_bd = run(lambda: blockdiag)
    pr, sr = corr(s_bd)
    rows.append(["exact, block-diagonal (EK-FAC's structure)", "-", float("nan"), pr, sr])
    records.append({"method": "exact_block_diagonal", "pearson": pr, "spearman": sr})

    for strategy in ("kfac", "ekfac"):
        total, fitted, scores = run(lambda s=strategy: fit_factors(model, task, train, strategy=s, seed=args.seed,
                                                                   progress=False))
        pr, sr = corr(scores)
        rows.append([f"{strategy} (sampled labels, fit included)", "-", total, pr, sr])
        records.append({"method": strategy, "seconds": total, "fit_seconds": fitted, "pearson": pr, "spearman": sr})
    ekfac = records[-1]

    for depth in args.depths:
        total, fitted, scores = run(lambda d=depth: fit_factors(model, task, train, strategy="lissa", depth=d,
                                                                seed=args.seed, progress=False))
        pr, sr = corr(scores)
        rows.append([f"lissa depth {depth}", depth, total, pr, sr])
        records.append({"method": "lissa", "depth": depth, "seconds": total, "pearson": pr, "spearman": sr})
        print(f"  lissa depth {depth}: {total:.1f} s, Pearson {pr:.4f}", flush=True)

    for row, rec in zip(rows, records):
        row.append(rec["seconds"] / ekfac["seconds"] if "seconds" in rec else float("nan"))
    rows.append(["exact (dense G, fit included): the reference", "-", exact_total, 1.0, 1.0,
                 exact_total / ekfac["seconds"]])
    reached = [r for r in records if r["method"] == "lissa" and r["pearson"] >= ekfac["pearson"]]
    if reached:
        first = reached[0]
        verdict = (f"LiSSA reaches EK-FAC's Pearson ({ekfac['pearson']:.4f}) at depth {first['depth']} "
                   f"(Pearson {first['pearson']:.4f}), taking {first['seconds'] / ekfac['seconds']:.1f}x EK-FAC's "
                   f"time for {args.n_query} queries.")
    else:
        best = max((r for r in records if r["method"] == "lissa"), key=lambda r: r["pearson"])
        verdict = (f"LiSSA does not reach EK-FAC's Pearson ({ekfac['pearson']:.4f}) at the depths tried; its best is "
                   f"{best['pearson']:.4f} at depth {best['depth']}, taking {best['seconds'] / ekfac['seconds']:.1f}x "
                   f"EK-FAC's time for {args.n_query} queries.")
    text = C.table(["method", "depth", f"seconds ({args.n_query} queries)", "Pearson vs exact", "Spearman vs exact",
                    "time / EK-FAC"], rows, title="Correlation with the exact damped Gauss-Newton influence")
    text += "\n\n" + verdict
    print()
    print(text)
    path = C.write_result(NAME, {"args": vars(args), "tracked_parameters": tracked, "damping": damping,
                                 "train_losses": losses, "exact_seconds": exact_total, "results": records,
                                 "verdict": verdict, "table": text})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
