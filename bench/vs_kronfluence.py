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

Two more modes (issue #17):
- ``--sweep [--shapes L,W,T,N,B ...] [--reps 3]``: time (CPU and wall) and peak memory of both tools' EK-FAC fit
  and pairwise scoring over GPT-2 shapes (width, depth, sequence length, training-set size), one process per
  shape in which the tools alternate phase by phase; our fit also with the options ``token_rotation`` +
  ``eigh_dtype=float32`` ("fast") and with ``activation_cache`` added ("fast+cache"). Writes
  bench/results/vs_kronfluence_sweep.json and prints the markdown tables (about 35 minutes on 2 shared cores).
- ``--profile L W T N B [--fast] [--src DIR]``: CPU seconds of each stage of our fit and scoring (forward,
  backward, covariance products, eigendecomposition, eigenvalue correction, preconditioning, ...), of the engine
  under ``DIR`` if given (to profile the code before a change the same way).
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
from safetensors.torch import load_file

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




# -- sweep: cost over shapes, the tools alternating phase by phase in one process per shape --------------------
#: (layers, n_embd, tokens, training sequences, batch size); a subset of width 128/256/512 x depth 2/4 x tokens
#: 64/128/256 x N 64/256 that runs in about 35 minutes on 2 shared cores (the largest shape with N = 32)
SWEEP_SHAPES = ((2, 128, 64, 64, 32), (2, 128, 64, 256, 32), (4, 256, 128, 64, 32), (4, 256, 128, 256, 32),
                (4, 128, 256, 64, 16), (2, 512, 128, 64, 32), (4, 512, 256, 32, 16))
#: our fits: the defaults (bit-identical to the engine before issue #17's work), the round-off and precision
#: options, and those with the activation cache (bit-identical to "fast"; more memory)
OUR_FITS = {"ours": {}, "fast": {"token_rotation": True, "eigh_dtype": torch.float32},
            "fast+cache": {"token_rotation": True, "eigh_dtype": torch.float32, "activation_cache": 2 ** 40}}


def sweep_worker(argv) -> None:
    """One shape: warm up both tools, then ``--reps`` rounds of every fit (ours, kf, fast, fast+cache) and both
    scorings (ours, kf), in alternating order, each phase timed (wall and CPU) with its peak memory."""
    p = argparse.ArgumentParser()
    p.add_argument("--sweep-worker", nargs=5, type=int, metavar=("LAYERS", "N_EMBD", "TOKENS", "N_TRAIN", "BATCH"))
    p.add_argument("--work", type=Path)
    for flag, default in (("--reps", 3), ("--n-query", 12), ("--completion", 16), ("--vocab", 512), ("--threads", 1)):
        p.add_argument(flag, type=int, default=default)
    a = p.parse_args(argv)
    layers, width, tokens, n_train, batch = a.sweep_worker
    C.set_threads(a.threads)
    C.quiet()
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments as KfFactorArguments
    from kronfluence.arguments import ScoreArguments as KfScoreArguments

    from influence_study import Factors, LanguageModelingTask, fit_factors, pairwise_scores
    model = C.gpt2(a.vocab, tokens, width, layers, 4)
    train = C.lm_batches(C.markov_sequences(n_train, tokens, a.vocab, seed=1), batch)
    queries = C.lm_batches(C.markov_sequences(a.n_query, tokens, a.vocab, seed=2), a.n_query,
                           prompt_len=tokens - a.completion)
    task = LanguageModelingTask()
    kf_task = make_kf_task(tracked_names(model), torch.Generator())
    analyzer = Analyzer(analysis_name="sweep", model=prepare_model(copy.deepcopy(model), kf_task), task=kf_task,
                        cpu=True, disable_tqdm=True, output_dir=str(a.work / "kf"))
    train_ds, query_ds = ExampleDataset(train), ExampleDataset(queries)
    kf_factor_args = KfFactorArguments(strategy="ekfac", use_empirical_fisher=True)
    kf_score_args = KfScoreArguments(damping_factor=None)  # 0.1 x mean(Λ) per module, as ours

    def our_fit(variant, loader=train):
        fit_factors(model, task, loader, strategy="ekfac", sampled_labels=False, progress=False,
                    **OUR_FITS[variant]).save(a.work / f"factors_{variant}")

    def our_score(variant, loader=train):
        factors = Factors.load(a.work / f"factors_{variant}", model=model)
        return pairwise_scores(model, task, factors, queries, loader, progress=False).scores

    def kf_fit(dataset=train_ds):
        analyzer.fit_covariance_matrices("f", dataset, per_device_batch_size=batch, factor_args=kf_factor_args,
                                         overwrite_output_dir=True)
        analyzer.perform_eigendecomposition("f", factor_args=kf_factor_args, overwrite_output_dir=True)
        analyzer.fit_lambda_matrices("f", dataset, per_device_batch_size=batch, factor_args=kf_factor_args,
                                     overwrite_output_dir=True)

    def kf_score(dataset=train_ds):  # kronfluence scores grad f^T H^-1 grad(train loss): minus ours
        analyzer.compute_pairwise_scores("s", "f", query_ds, dataset, per_device_query_batch_size=len(query_ds),
                                         per_device_train_batch_size=batch, score_args=kf_score_args,
                                         overwrite_output_dir=True)

    warm = torch.utils.data.Subset(train_ds, range(min(batch, n_train)))
    for variant in OUR_FITS:
        our_fit(variant, train[:1])
    our_score("ours", train[:1])
    kf_fit(warm)
    kf_score(warm)
    fits = {"ours": lambda: our_fit("ours"), "kf": kf_fit, "fast": lambda: our_fit("fast"),
            "fast+cache": lambda: our_fit("fast+cache")}
    scorings = {"ours": lambda: our_score("ours"), "kf": kf_score}
    samples = []
    for rep in range(a.reps):
        order = 1 if rep % 2 == 0 else -1  # alternate which tool goes first
        for phase, tools in (("fit", fits), ("score", scorings)):
            for tool in list(tools)[::order]:
                C.release_memory()
                with C.PeakMemory() as mem, C.Timer() as timer:
                    tools[tool]()
                samples.append({"rep": rep, "phase": phase, "tool": tool, "wall": timer.wall, "cpu": timer.cpu,
                                "peak_mib": mem.peak_mib})
                print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
    ours = our_score("ours").double()
    fast = our_score("fast").double()
    kf = -analyzer.load_pairwise_scores("s")["all_modules"].double()
    same_cache = all(torch.equal(x, y) for x, y in zip(
        load_file(str(a.work / "factors_fast" / "factors.safetensors")).values(),
        load_file(str(a.work / "factors_fast+cache" / "factors.safetensors")).values()))
    print(json.dumps({"shape": a.sweep_worker, "samples": samples, "ours_vs_kf": correlations(ours, kf),
                      "fast_vs_kf": correlations(fast, kf), "fast_vs_ours": correlations(fast, ours),
                      "cache_bit_identical": same_cache}))


def sweep_main(argv) -> int:
    """Run :func:`sweep_worker` for every shape, then print and write the table."""
    p = argparse.ArgumentParser(description="kronfluence/ours over shapes (see bench/README.md)")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--shapes", nargs="+", default=None, help="LAYERS,N_EMBD,TOKENS,N_TRAIN,BATCH (default: all)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--n-query", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=C.RESULTS_DIR / "_work_vs_kronfluence_sweep")
    p.add_argument("--result-name", default=f"{NAME}_sweep")
    args = p.parse_args(argv)
    shapes = SWEEP_SHAPES if args.shapes is None else [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    script = Path(__file__).resolve()
    shutil.rmtree(args.work, ignore_errors=True)
    results = []
    for shape in shapes:
        started = time.perf_counter()
        results.append(C.run_worker(script, [*shape, "--work", args.work, "--reps", args.reps,
                                             "--n-query", args.n_query], args.threads, flag="--sweep-worker"))
        print(f"  {shape}: {time.perf_counter() - started:.0f} s", flush=True)
    shutil.rmtree(args.work, ignore_errors=True)
    text = sweep_tables(results, args)
    print()
    print(text)
    path = C.write_result(args.result_name, {"args": {k: (str(v) if isinstance(v, Path) else v)
                                                       for k, v in vars(args).items()},
                                             "fits": {k: {o: str(v) for o, v in f.items()} for k, f in OUR_FITS.items()},
                                             "shapes": results, "table": text})
    print(f"\nwrote {path}")
    return 0


def sweep_tables(results, args) -> str:
    """The markdown tables of the sweep: CPU-time ratios (the headline), wall-time ratios, memory."""
    def med(result, phase, tool, key):
        return statistics.median(s[key] for s in result["samples"] if s["phase"] == phase and s["tool"] == tool)

    def label(result):
        layers, width, tokens, n_train, batch = result["shape"]
        return f"{layers} x {width} x {tokens}, N {n_train}"

    cpu_rows, wall_rows, memory_rows = [], [], []
    for r in results:
        fit = {t: med(r, "fit", t, "cpu") for t in ("ours", "kf", "fast", "fast+cache")}
        score = {t: med(r, "score", t, "cpu") for t in ("ours", "kf")}
        cpu_rows.append([label(r), fit["ours"], fit["kf"], fit["kf"] / fit["ours"], fit["kf"] / fit["fast"],
                         fit["kf"] / fit["fast+cache"], score["ours"], score["kf"], score["kf"] / score["ours"],
                         f"{r['ours_vs_kf']['pearson']:.7f}", f"{r['fast_vs_kf']['pearson']:.7f}"])
        wfit = {t: med(r, "fit", t, "wall") for t in ("ours", "kf", "fast", "fast+cache")}
        wscore = {t: med(r, "score", t, "wall") for t in ("ours", "kf")}
        wall_rows.append([label(r), wfit["kf"] / wfit["ours"], wfit["kf"] / wfit["fast"],
                          wfit["kf"] / wfit["fast+cache"], wscore["kf"] / wscore["ours"]])
        mem = {(p, t): med(r, p, t, "peak_mib") for p, ts in (("fit", ("ours", "kf", "fast", "fast+cache")),
                                                              ("score", ("ours", "kf"))) for t in ts}
        memory_rows.append([label(r), mem["fit", "ours"], mem["fit", "kf"], mem["fit", "ours"] / mem["fit", "kf"],
                            mem["fit", "fast+cache"] / mem["fit", "kf"], mem["score", "ours"], mem["score", "kf"],
                            mem["score", "ours"] / mem["score", "kf"], r["fast_vs_ours"]["max_rel_diff"],
                            r["cache_bit_identical"]])
    return "\n\n".join([
        C.table(["layers x n_embd x tokens, N", "fit ours s", "fit kf s", "fit kf/ours", "fit kf/fast",
                 "fit kf/fast+cache", "score ours s", "score kf s", "score kf/ours", "Pearson ours-kf",
                 "Pearson fast-kf"], cpu_rows,
                title=f"CPU seconds (medians of {args.reps} alternating rounds, {args.threads} thread per tool)"),
        C.table(["layers x n_embd x tokens, N", "fit kf/ours", "fit kf/fast", "fit kf/fast+cache", "score kf/ours"],
                wall_rows, title="The same ratios in wall time"),
        C.table(["layers x n_embd x tokens, N", "fit ours MiB", "fit kf MiB", "fit ours/kf", "fit fast+cache/kf",
                 "score ours MiB", "score kf MiB", "score ours/kf", "fast vs ours max rel diff",
                 "cache bit-identical"], memory_rows,
                title="Peak memory (resident-set increase of the phase, medians) and the options' effect on scores")])


# -- profile: where our fitting and scoring spend their time -------------------------------------------------------
class StageClock:
    """Self CPU seconds per labelled stage: each wrapped call's time less that of the wrapped calls inside it
    (``nested`` labels are prefixed with the stage they run in: "covariance pass / forward")."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.stack: list[list] = []

    def wrap(self, fn, label: str, nested: bool = False):
        def wrapped(*args, **kwargs):
            name = f"{self.stack[-1][0]} / {label}" if nested and self.stack else label
            self.stack.append([name, 0.0])
            started = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                total = time.process_time() - started
                _, inner = self.stack.pop()
                self.seconds[name] = self.seconds.get(name, 0.0) + total - inner
                if self.stack:
                    self.stack[-1][1] += total
        return wrapped


#: what a stage's own time (not that of its forward and backward passes) is
_STAGE_NAMES = {"covariance pass": "covariance pass: a^T a and s^T s products",
                "eigenvalue-correction pass": "correction pass: per-sequence gradients, rotations, squares",
                "training pass": "training pass: per-example gradients and score products",
                "query gradients": "query gradients: per-example gradients",
                "preconditioning": "preconditioning of the query gradients (4 rotations per module)"}


def profile_main(argv) -> int:
    """Stage profile of our fit and scoring at one shape (optionally of the engine under ``--src``)."""
    p = argparse.ArgumentParser(description="stage profile of our EK-FAC fit and scoring (see bench/README.md)")
    p.add_argument("--profile", nargs=5, type=int, required=True,
                   metavar=("LAYERS", "N_EMBD", "TOKENS", "N_TRAIN", "BATCH"))
    p.add_argument("--src", type=Path, default=None,
                   help="profile the influence_study package under this directory (e.g. the code before a change)")
    p.add_argument("--fast", action="store_true", help=f"fit with the options of 'fast' ({OUR_FITS['fast']})")
    p.add_argument("--n-query", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--result-name", default=None, help="also write bench/results/RESULT_NAME.json")
    args = p.parse_args(argv)
    if args.src is not None:
        sys.path.insert(0, str(args.src.resolve()))
    C.set_threads(args.threads)
    C.quiet()
    import influence_study.engine.factors as factors_module
    import influence_study.engine.scoring as scoring_module
    from influence_study import LanguageModelingTask, fit_factors, pairwise_scores
    from influence_study.engine.preconditioner import Preconditioner
    layers, width, tokens, n_train, batch = args.profile
    model = C.gpt2(512, tokens, width, layers, 4)
    train = C.lm_batches(C.markov_sequences(n_train, tokens, 512, seed=1), batch)
    queries = C.lm_batches(C.markov_sequences(args.n_query, tokens, 512, seed=2), args.n_query, prompt_len=tokens - 16)
    task = LanguageModelingTask()
    options = OUR_FITS["fast"] if args.fast else {}
    factors = fit_factors(model, task, train[:1], strategy="ekfac", sampled_labels=False, progress=False, **options)
    pairwise_scores(model, task, factors, queries, train[:1], progress=False)  # warm-up
    clock = StageClock()
    covariances, correction = "covariance pass", "eigenvalue-correction pass"
    stages = {factors_module: {"_covariance_pass": covariances, "covariance_pass": covariances,
                               "_per_sequence_pass": correction, "per_sequence_pass": correction,
                               "eigendecompose": "eigendecompositions of A and S"},
              scoring_module: {"_query_gradients": "query gradients", "_scoring_pass": "training pass"}}
    for module, names in stages.items():
        for name, label in names.items():
            if hasattr(module, name):
                setattr(module, name, clock.wrap(getattr(module, name), label))
    Preconditioner.precondition_with = clock.wrap(Preconditioner.precondition_with, "preconditioning")
    torch.Tensor.backward = clock.wrap(torch.Tensor.backward, "backward", nested=True)
    task.outputs = clock.wrap(task.outputs, "forward", nested=True)
    out, text = {}, []
    for phase, run in (("fit", lambda: fit_factors(model, task, train, strategy="ekfac", sampled_labels=False,
                                                   progress=False, **options)),
                       ("score", lambda: pairwise_scores(model, task, factors, queries, train, progress=False))):
        clock.seconds = {}
        with C.Timer() as timer:
            run()
        rows = sorted(((_STAGE_NAMES.get(n, n), s) for n, s in clock.seconds.items()), key=lambda item: -item[1])
        rows.append(("other (outside the stages above)", timer.cpu - sum(clock.seconds.values())))
        out[phase] = {"cpu": timer.cpu, "wall": timer.wall, "stages": dict(rows)}
        text.append(C.table(["stage", "CPU s", "share"], [[n, s, f"{100 * s / timer.cpu:.1f} %"] for n, s in rows],
                            title=f"{phase}: {timer.cpu:.2f} CPU s ({timer.wall:.2f} s wall), {layers} layers x "
                                  f"n_embd {width} x {tokens} tokens, N {n_train}, batch {batch}"
                                  + (", fast options" if args.fast else "")
                                  + (f", engine under {args.src}" if args.src else "")))
    print("\n\n".join(text))
    if args.result_name:
        print(f"\nwrote {C.write_result(args.result_name, {'args': vars(args) | {'src': str(args.src)}, **out})}")
    return 0


if __name__ == "__main__":
    if "--sweep-worker" in sys.argv:
        sweep_worker(sys.argv[1:])
        sys.exit(0)
    if "--sweep" in sys.argv:
        sys.exit(sweep_main(sys.argv[1:]) if kronfluence_available() else main())
    if "--profile" in sys.argv:
        sys.exit(profile_main(sys.argv[1:]))
    sys.exit(C.main_or_worker(main, worker))
