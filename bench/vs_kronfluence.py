"""Our EK-FAC engine against kronfluence 1.0.1 on the same small GPT-2, data, factors and queries.

Reports (see bench/README.md):
- agreement of the pairwise scores (Pearson / Spearman per query, averaged over queries) when both tools fit
  the factors on TRUE labels (empirical Fisher: deterministic, should agree to ~1e-6), and when both sample
  labels from the model (true Fisher) with matched sampling streams (same seed: the same labels are drawn);
- the spread across seeds of the sampled-label fit for each tool (ours-vs-ours, kf-vs-kf) and every
  cross-tool seed pair;
- wall time and peak memory of factor fitting and of pairwise scoring, each phase in a fresh process, as
  ratios ours / kronfluence.

Usage: .venv/bin/python bench/vs_kronfluence.py [--n-train 512 --n-query 16 --seeds 0 1 2 --threads 2]
kronfluence is optional (bench only): without it the script prints a message and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "vs_kronfluence"


def kronfluence_available() -> bool:
    try:
        import kronfluence  # noqa: F401
    except ImportError:
        return False
    return True


# -- kronfluence side ------------------------------------------------------------------------------------------
def make_kf_task(module_names, generator):
    """A kronfluence Task computing exactly what our LanguageModelingTask computes.

    train loss: summed token cross-entropy over labelled positions (labels shifted by one); with sample=True
    the targets are drawn from softmax(logits) with ``generator`` (the same draw order as our engine).
    measurement: log p(completion | prompt) summed (prompt positions labelled -100). kronfluence scores are
    grad(measurement)^T (G + damping)^-1 grad(train loss), so they are MINUS our scores (ours use
    grad log p(z) = -grad(train loss)); the caller negates them.
    """
    from kronfluence.task import Task

    class LanguageModelingKfTask(Task):
        def _shifted(self, batch, model):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return logits[:, :-1].float(), batch["labels"][:, 1:]

        def compute_train_loss(self, batch, model, sample=False):
            logits, labels = self._shifted(batch, model)
            mask = labels != -100
            if sample:
                with torch.no_grad():
                    probs = torch.softmax(logits.detach().float(), dim=-1).reshape(-1, logits.shape[-1])
                    labels = torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])
            losses = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
            return (losses * mask).sum()

        def compute_measurement(self, batch, model):
            logits, labels = self._shifted(batch, model)
            mask = labels != -100
            losses = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
            return -(losses * mask).sum()

        def get_influence_tracked_modules(self):
            return list(module_names)

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    return LanguageModelingKfTask()


class ExampleDataset(torch.utils.data.Dataset):
    """Rows of a batch dict as a map-style dataset (kronfluence builds its own sequential DataLoader)."""

    def __init__(self, batches):
        self.rows = [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["input_ids"]))]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


# -- setup -----------------------------------------------------------------------------------------------------
def setup(args, work: Path) -> dict:
    """Train (or reuse) the model and write model + data into ``work``."""
    config = dict(vocab=args.vocab, seq_len=args.seq_len, n_embd=args.n_embd, n_layer=args.n_layer,
                  n_head=args.n_head, train_steps=args.train_steps, n_train=args.n_train, n_query=args.n_query,
                  completion=args.completion)
    key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    meta_path = work / "setup.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        return json.loads(meta_path.read_text())
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    corpus = C.markov_sequences(2048, args.seq_len, args.vocab, seed=1)
    model = C.gpt2(args.vocab, args.seq_len, args.n_embd, args.n_layer, args.n_head)
    print(f"training the model ({args.train_steps} steps) ...", flush=True)
    started = time.perf_counter()
    losses = C.train_lm(model, corpus, args.train_steps, batch_size=16)
    seconds = time.perf_counter() - started
    torch.save(model.state_dict(), work / "model.pt")
    train_ids = corpus[:args.n_train]  # sequences the model was trained on
    query_ids = C.markov_sequences(args.n_query, args.seq_len, args.vocab, seed=2)
    torch.save({"train": train_ids, "query": query_ids}, work / "data.pt")
    meta = {"key": key, "config": config, "train_losses": losses, "train_seconds": round(seconds, 1)}
    meta_path.write_text(json.dumps(meta))
    return meta


def load(work: Path, cfg: dict, batch_size: int):
    model = C.gpt2(cfg["vocab"], cfg["seq_len"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"])
    model.load_state_dict(torch.load(work / "model.pt"))
    model.eval()
    data = torch.load(work / "data.pt")
    train = C.lm_batches(data["train"], batch_size)
    queries = C.lm_batches(data["query"], len(data["query"]), prompt_len=cfg["seq_len"] - cfg["completion"])
    return model, train, queries


def tracked_names(model) -> list[str]:
    from influence_study import select_modules
    return list(select_modules(model))


# -- workers (one measured phase each, in a fresh process) ------------------------------------------------------
def worker(argv) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", nargs=4, metavar=("TOOL", "PHASE", "FISHER", "SEED"))
    p.add_argument("--work", type=Path)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threads", type=int)
    a = p.parse_args(argv)
    tool, phase, fisher, seed = a.worker
    seed = int(seed)
    C.set_threads(a.threads)
    C.quiet()
    cfg = json.loads((a.work / "setup.json").read_text())["config"]
    model, train, queries = load(a.work, cfg, a.batch_size)
    names = tracked_names(model)
    tag = f"{fisher}_{seed}"
    sampled = fisher == "sampled"
    out: dict = {"tool": tool, "phase": phase, "fisher": fisher, "seed": seed}

    if tool == "ours":
        from influence_study import Factors, LanguageModelingTask, fit_factors, pairwise_scores
        task = LanguageModelingTask()
        if phase == "fit":
            fit_factors(model, task, train[:2], strategy="ekfac", sampled_labels=sampled, seed=seed,
                        progress=False)  # warm-up
            with C.PeakMemory() as mem:
                started, cpu_started = time.perf_counter(), time.process_time()
                factors = fit_factors(model, task, train, strategy="ekfac", sampled_labels=sampled, seed=seed,
                                      progress=False)
                factors.save(a.work / f"ours_factors_{tag}")
                out["seconds"], out["cpu_seconds"] = time.perf_counter() - started, time.process_time() - cpu_started
        else:
            factors = Factors.load(a.work / f"ours_factors_{tag}")
            pairwise_scores(model, task, factors, queries, train[:2], progress=False)  # warm-up
            with C.PeakMemory() as mem:
                started, cpu_started = time.perf_counter(), time.process_time()
                factors = Factors.load(a.work / f"ours_factors_{tag}", model=model)
                scores = pairwise_scores(model, task, factors, queries, train, progress=False)
                torch.save(scores.scores, a.work / f"ours_scores_{tag}.pt")
                out["seconds"], out["cpu_seconds"] = time.perf_counter() - started, time.process_time() - cpu_started
            out["damping"] = scores.metadata["damping"]
    else:
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments, ScoreArguments
        generator = torch.Generator().manual_seed(seed)
        task = make_kf_task(names, generator)
        model = prepare_model(copy.deepcopy(model), task)
        analyzer = Analyzer(analysis_name="bench", model=model, task=task, cpu=True, disable_tqdm=True,
                            output_dir=str(a.work / "kf"))
        train_ds, query_ds = ExampleDataset(train), ExampleDataset(queries)
        factor_args = FactorArguments(strategy="ekfac", use_empirical_fisher=not sampled)
        # damping_factor=None: kronfluence's heuristic 0.1 x mean(Lambda) per module (a number would be an
        # ABSOLUTE damping added to every eigenvalue)
        score_args = ScoreArguments(damping_factor=None)
        warm_ds = torch.utils.data.Subset(train_ds, range(2 * a.batch_size))
        if phase == "fit":
            analyzer.fit_all_factors("warmup", warm_ds, per_device_batch_size=a.batch_size, factor_args=factor_args,
                                     overwrite_output_dir=True)
            with C.PeakMemory() as mem:
                started, cpu_started = time.perf_counter(), time.process_time()
                # the same sampling streams as our fit_factors: seed for the covariance pass, seed + 1 for
                # the eigenvalue-correction (Lambda) pass, drawn batch by batch in the same order
                generator.manual_seed(seed)
                analyzer.fit_covariance_matrices(f"f_{tag}", train_ds, per_device_batch_size=a.batch_size,
                                                 factor_args=factor_args, overwrite_output_dir=True)
                analyzer.perform_eigendecomposition(f"f_{tag}", factor_args=factor_args, overwrite_output_dir=True)
                generator.manual_seed(seed + 1)
                analyzer.fit_lambda_matrices(f"f_{tag}", train_ds, per_device_batch_size=a.batch_size,
                                             factor_args=factor_args, overwrite_output_dir=True)
                out["seconds"], out["cpu_seconds"] = time.perf_counter() - started, time.process_time() - cpu_started
        else:
            analyzer.compute_pairwise_scores("warmup", f"f_{tag}", query_ds, warm_ds,
                                             per_device_query_batch_size=len(query_ds),
                                             per_device_train_batch_size=a.batch_size, score_args=score_args,
                                             overwrite_output_dir=True)
            with C.PeakMemory() as mem:
                started, cpu_started = time.perf_counter(), time.process_time()
                analyzer.compute_pairwise_scores(f"s_{tag}", f"f_{tag}", query_ds, train_ds,
                                                          per_device_query_batch_size=len(query_ds),
                                                          per_device_train_batch_size=a.batch_size,
                                                          score_args=score_args, overwrite_output_dir=True)
                out["seconds"], out["cpu_seconds"] = time.perf_counter() - started, time.process_time() - cpu_started  # includes writing the scores to disk
            result = analyzer.load_pairwise_scores(f"s_{tag}")
            # kronfluence: grad f^T H^-1 grad(train loss) = -(ours); store it in our convention
            torch.save(-result["all_modules"].double(), a.work / f"kf_scores_{tag}.pt")
            if not sampled and seed == 0:  # the per-module Lambda means, to compare damping with ours
                lam = analyzer.load_lambda_matrices(f"f_{tag}")
                out["lambda_mean_x0.1"] = {n: 0.1 * (lam["lambda_matrix"][n] / lam["num_lambda_processed"][n]).double().mean().item()
                                           for n in lam["lambda_matrix"]}
    out["peak_mib"] = mem.peak_mib
    out["memory_method"] = mem.method
    print(json.dumps(out))


# -- driver ----------------------------------------------------------------------------------------------------
def correlations(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.double(), b.double()
    slope = float((a * b).sum() / (b * b).sum())
    rel = float((a - b).abs().max() / b.abs().max())
    return {"pearson": C.per_query(C.pearson, a, b), "spearman": C.per_query(C.spearman, a, b),
            "pearson_all": C.pearson(a, b), "slope_ours_on_kf": slope, "max_rel_diff": rel}


def main() -> int:
    p = C.parser(__doc__)
    C.model_arguments(p)
    p.add_argument("--completion", type=int, default=16, help="completion tokens of each query")
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--n-train", type=int, default=512, help="training sequences (factors and scoring)")
    p.add_argument("--n-query", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=C.RESULTS_DIR / "_work_vs_kronfluence")
    p.add_argument("--keep", action="store_true", help="keep the work directory (model, factors, scores)")
    p.add_argument("--result-name", default=NAME, help="write bench/results/RESULT_NAME.json")
    args = p.parse_args()
    if not kronfluence_available():
        print("kronfluence is not installed: skipping this benchmark (bench only; install with\n"
              "  .venv/bin/pip install --no-deps kronfluence==1.0.1 einconv einops opt-einsum accelerate)")
        return 0
    C.set_threads(args.threads)
    C.quiet()
    meta = setup(args, args.work)
    print(f"model: GPT-2 {args.n_layer} layers, n_embd {args.n_embd}, vocab {args.vocab}, seq {args.seq_len}; "
          f"trained {args.train_steps} steps (loss {meta['train_losses'][0]} -> {meta['train_losses'][-1]}); "
          f"{args.n_train} training sequences, {args.n_query} queries ({args.completion} completion tokens); "
          f"threads {args.threads}", flush=True)
    script = Path(__file__).resolve()
    runs = [("empirical", 0)] + [("sampled", s) for s in args.seeds]
    records = []
    for fisher, seed in runs:
        for phase in ("fit", "score"):
            for tool in ("ours", "kf"):  # interleaved, so load changes on the machine hit both tools alike
                rec = C.run_worker(script, [tool, phase, fisher, seed, "--work", args.work,
                                            "--batch-size", args.batch_size], args.threads)
                records.append(rec)
                print(f"  {tool:4s} {phase:5s} {fisher:9s} seed {seed}: {rec['seconds']:.2f} s wall, "
                      f"{rec['cpu_seconds']:.2f} s CPU, "
                      f"peak +{rec['peak_mib']:.0f} MiB", flush=True)

    def scores(tool, fisher, seed):
        return torch.load(args.work / f"{tool}_scores_{fisher}_{seed}.pt").double()

    det = correlations(scores("ours", "empirical", 0), scores("kf", "empirical", 0))
    matched = {s: correlations(scores("ours", "sampled", s), scores("kf", "sampled", s)) for s in args.seeds}
    within = {}
    for tool in ("ours", "kf"):
        within[tool] = {f"{s}-{t}": correlations(scores(tool, "sampled", s), scores(tool, "sampled", t))
                        for s, t in itertools.combinations(args.seeds, 2)}
    cross = {f"ours{s}-kf{t}": correlations(scores("ours", "sampled", s), scores("kf", "sampled", t))
             for s in args.seeds for t in args.seeds}
    ours_vs_emp = {s: correlations(scores("ours", "sampled", s), scores("ours", "empirical", 0)) for s in args.seeds}

    damping_ours = next(r for r in records if r["tool"] == "ours" and r["phase"] == "score"
                        and r["fisher"] == "empirical")["damping"]
    damping_kf = next(r for r in records if r["tool"] == "kf" and r["phase"] == "score"
                      and r["fisher"] == "empirical")["lambda_mean_x0.1"]

    def cost(tool, phase, key):
        return statistics.median(r[key] for r in records if r["tool"] == tool and r["phase"] == phase)

    cost_rows = []
    for phase in ("fit", "score"):
        t_o, t_k = cost("ours", phase, "seconds"), cost("kf", phase, "seconds")
        c_o, c_k = cost("ours", phase, "cpu_seconds"), cost("kf", phase, "cpu_seconds")
        m_o, m_k = cost("ours", phase, "peak_mib"), cost("kf", phase, "peak_mib")
        cost_rows.append([{"fit": "factor fitting (EK-FAC)", "score": "pairwise scoring"}[phase],
                          t_o, t_k, t_o / t_k, c_o, c_k, c_o / c_k, m_o, m_k,
                          m_o / m_k if m_k > 0 else float("nan")])

    out = []
    out.append(C.table(["comparison", "Pearson", "Spearman", "Pearson (all pairs)", "slope ours/kf", "max rel diff"],
                       [["empirical Fisher (true labels), ours vs kf", det["pearson"], det["spearman"],
                         det["pearson_all"], det["slope_ours_on_kf"], det["max_rel_diff"]]]
                       + [[f"sampled labels, matched seed {s}, ours vs kf", m["pearson"], m["spearman"],
                           m["pearson_all"], m["slope_ours_on_kf"], m["max_rel_diff"]] for s, m in matched.items()],
                       title="Agreement of pairwise scores (per-query correlation, mean over queries)"))
    spread_rows = []
    for tool, label in (("ours", "ours vs ours"), ("kf", "kf vs kf")):
        for pair, m in within[tool].items():
            spread_rows.append([f"{label}, seeds {pair}", m["pearson"], m["spearman"]])
    for pair, m in cross.items():
        spread_rows.append([f"cross-tool {pair}" + (" (matched)" if pair[4] == pair[-1] else ""),
                            m["pearson"], m["spearman"]])
    for s, m in ours_vs_emp.items():
        spread_rows.append([f"ours sampled seed {s} vs ours empirical", m["pearson"], m["spearman"]])
    out.append(C.table(["pair (sampled-label factors)", "Pearson", "Spearman"], spread_rows,
                       title="Spread across factor seeds (sampled labels)"))
    out.append(C.table(["module", "damping ours (0.1 x mean Λ)", "damping kf (0.1 x mean Λ)"],
                       [[n, damping_ours[n], damping_kf.get(n, float("nan"))] for n in damping_ours],
                       title="Damping per module (empirical-Fisher factors)"))
    out.append(C.table(["phase", "ours wall s", "kf wall s", "wall ours/kf", "ours CPU s", "kf CPU s",
                        "CPU ours/kf", "ours peak MiB", "kf peak MiB", "memory ours/kf"], cost_rows,
                       title=f"Cost (median over {len(runs)} fresh-process runs per tool and phase; threads "
                             f"{args.threads}; peak = resident-memory increase during the phase)"))
    text = "\n\n".join(out)
    print()
    print(text)
    path = C.write_result(args.result_name, {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                 "setup": meta, "deterministic": det, "matched_seed": matched,
                                 "within_tool": within, "cross_tool": cross, "sampled_vs_empirical": ours_vs_emp,
                                 "damping": {"ours": damping_ours, "kf": damping_kf}, "runs": records,
                                 "cost": cost_rows, "table": text})
    print(f"\nwrote {path}")
    if not args.keep:
        for child in args.work.iterdir():
            if child.name not in ("setup.json", "model.pt", "data.pt"):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(C.main_or_worker(main, worker))
