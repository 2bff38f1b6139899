"""Shared helpers of the benchmarks: synthetic data, tiny GPT-2 models, timing, peak memory, tables, results.

Nothing here is part of the ``influence_study`` package; the benchmark scripts import it as a sibling module.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT / "src"))


# -- data ------------------------------------------------------------------------------------------------------
def markov_table(vocab: int, successors: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A sparse random Markov chain over ``vocab`` tokens: each token has ``successors`` likely next tokens
    (Dirichlet weights). Returns ``(next_tokens [vocab, successors], probabilities [vocab, successors])``."""
    rng = np.random.default_rng(seed)
    nxt = np.stack([rng.choice(vocab, successors, replace=False) for _ in range(vocab)])
    prob = rng.dirichlet(np.full(successors, 0.5), size=vocab)
    return nxt, prob


def markov_sequences(n: int, seq_len: int, vocab: int, seed: int, table_seed: int = 0,
                     successors: int = 4) -> torch.Tensor:
    """``[n, seq_len]`` token ids drawn from :func:`markov_table` (random but learnable structure)."""
    nxt, prob = markov_table(vocab, successors, table_seed)
    rng = np.random.default_rng(seed)
    out = np.empty((n, seq_len), dtype=np.int64)
    out[:, 0] = rng.integers(0, vocab, n)
    cum = prob.cumsum(1)
    for t in range(1, seq_len):
        u = rng.random(n)[:, None]
        choice = (u > cum[out[:, t - 1]]).sum(1).clip(max=successors - 1)
        out[:, t] = nxt[out[:, t - 1], choice]
    return torch.from_numpy(out)


def lm_batches(ids: torch.Tensor, batch_size: int, prompt_len: int = 0) -> list[dict]:
    """Batches for :class:`influence_study.LanguageModelingTask`; with ``prompt_len`` the first ``prompt_len``
    positions are labelled -100, so the measurement is log p(completion | prompt)."""
    out = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        labels = chunk.clone()
        if prompt_len:
            labels[:, :prompt_len] = -100
        out.append({"input_ids": chunk, "attention_mask": torch.ones_like(chunk), "labels": labels})
    return out


def parser(doc: str | None):
    """An argument parser that shows the script's docstring as its --help."""
    import argparse

    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def model_arguments(parser, vocab: int = 512, seq_len: int = 64, n_embd: int = 128, n_layer: int = 2,
                    n_head: int = 4) -> None:
    """The GPT-2 shape options every benchmark takes (--vocab, --seq-len, --n-embd, --n-layer, --n-head)."""
    for flag, default in (("--vocab", vocab), ("--seq-len", seq_len), ("--n-embd", n_embd), ("--n-layer", n_layer),
                          ("--n-head", n_head)):
        parser.add_argument(flag, type=int, default=default)


# -- models ----------------------------------------------------------------------------------------------------
def gpt2(vocab: int, seq_len: int, n_embd: int, n_layer: int, n_head: int, n_inner: int | None = None,
         seed: int = 0, linear_mlp: bool = True) -> nn.Module:
    """A randomly initialised GPT-2 (no dropout). With ``linear_mlp`` the MLP's ``Conv1D`` c_fc/c_proj are
    replaced by equivalent ``nn.Linear`` modules (kronfluence tracks only nn.Linear/nn.Conv2d; our engine
    tracks both, so the same model serves both tools)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=seq_len, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        n_inner=n_inner, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    if linear_mlp:
        conv_to_linear(model)
    return model.eval()


def conv_to_linear(model: nn.Module) -> None:
    """Replace every GPT-2 MLP ``Conv1D`` (weight [in, out]) with the same map as ``nn.Linear``."""
    from transformers.pytorch_utils import Conv1D

    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D) and ".mlp." in f".{name}":
            n_in, n_out = module.weight.shape
            linear = nn.Linear(n_in, n_out, bias=module.bias is not None)
            with torch.no_grad():
                linear.weight.copy_(module.weight.T)
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, linear)


def train_lm(model: nn.Module, ids: torch.Tensor, steps: int, batch_size: int, lr: float = 3e-3,
             seed: int = 0) -> list[float]:
    """A few AdamW steps of next-token training on ``ids``; returns the loss every 50 steps."""
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    losses = []
    for step in range(steps):
        rows = torch.randint(0, len(ids), (batch_size,), generator=gen)
        batch = ids[rows]
        loss = model(input_ids=batch, labels=batch).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            losses.append(round(loss.item(), 4))
    model.eval()
    return losses


# -- measurement -----------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak resident-memory increase of this process over a block, in MiB.

    On Linux the kernel's high-water mark (VmHWM) is reset at entry by writing 5 to /proc/self/clear_refs, so
    ``peak_mib`` = VmHWM at exit - VmRSS at entry: the extra memory the block needed at its worst moment,
    whatever happened before it in the process. Elsewhere it falls back to the increase of ru_maxrss (which
    under-reports when an earlier step of the process peaked higher). Run each measured phase in a fresh
    process (:func:`run_worker`) so freed-but-cached allocator memory of earlier phases does not hide costs.
    """

    def __enter__(self):
        self.method = "VmHWM-reset"
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.method = "ru_maxrss"
        import resource
        self._resource = resource
        self.start_rss = _status_kib("VmRSS")
        self.start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        if self.method == "VmHWM-reset" and self.start_rss is not None:
            self.peak_mib = (_status_kib("VmHWM") - self.start_rss) / 1024
            self.end_rss_mib = _status_kib("VmRSS") / 1024
            self.start_rss_mib = self.start_rss / 1024
        else:
            self.peak_mib = (self._resource.getrusage(self._resource.RUSAGE_SELF).ru_maxrss - self.start_max) / 1024
            self.end_rss_mib = self.start_rss_mib = float("nan")
        return False


def release_memory() -> None:
    """Collect garbage and hand the allocator's free memory back to the OS (glibc ``malloc_trim``), so that the
    resident set at the start of a measured phase is what is really held and :class:`PeakMemory` of a phase run
    after others in the same process is not hidden by memory they freed."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class Timer:
    """Wall and CPU (user + system of this process) seconds of a block: ``wall``, ``cpu``. On a machine shared
    with other jobs, CPU time is the steadier measure of the work a phase does (it excludes time spent waiting
    for a core)."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        return False


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = [timed(fn)[0] for _ in range(repeats)]
    return statistics.median(times), times


def run_worker(script: Path, args: Sequence[str], threads: int, env: dict | None = None,
               flag: str = "--worker") -> dict:
    """Run ``script FLAG ARGS`` (``--worker`` by default) in a fresh interpreter (with ``env`` added to its
    environment); it must print one JSON object as its last line."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1",
               TOKENIZERS_PARALLELISM="false", **(env or {}))
    cmd = [sys.executable, str(script), flag, *map(str, args), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed ({' '.join(cmd)}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"worker printed no JSON ({' '.join(cmd)}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def main_or_worker(main: Callable[[], int], worker: Callable[[list[str]], None]) -> int:
    """The entry point of a script with workers: ``script --worker ...`` runs one measured phase (see
    :func:`run_worker`), anything else runs ``main``."""
    if "--worker" in sys.argv:
        worker(sys.argv[1:])
        return 0
    return main()


def parse_in_process(parser, threads: int = 2):
    """Add ``--threads`` to ``parser``, parse the command line, and set up this process to run the benchmark itself:
    that many intra-op threads (:func:`set_threads`), progress bars and library logging off (:func:`quiet`)."""
    parser.add_argument("--threads", type=int, default=threads)
    args = parser.parse_args()
    set_threads(args.threads)
    quiet()
    return args


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def quiet() -> None:
    """Silence progress bars and library logging in benchmark output."""
    import logging
    import warnings

    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")


# -- statistics ------------------------------------------------------------------------------------------------
def pearson(x, y) -> float:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(x).ravel(), np.asarray(y).ravel()).statistic)


def per_query(fn, a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over queries (rows) of ``fn(row_a, row_b)``."""
    return float(np.mean([fn(a[i].numpy(), b[i].numpy()) for i in range(a.shape[0])]))


# -- output ----------------------------------------------------------------------------------------------------
def machine() -> dict:
    return {"date": date.today().isoformat(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform()}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> str:
    """A plain-text table (also valid Markdown)."""
    def fmt(v):
        if isinstance(v, float):
            if v != v:
                return "n/a"
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        return str(v)
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda parts: "| " + " | ".join(p.ljust(w) for p, w in zip(parts, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells]
    return ((f"{title}\n\n" if title else "") + "\n".join(out))


def write_result(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2, default=float) + "\n")
    return path


def report(name: str, args, records: list, text: str) -> int:
    """Print the result table and write it, with every record and the arguments, to results/<name>.json."""
    print()
    print(text)
    path = write_result(name, {"args": vars(args), "results": records, "table": text})
    print(f"\nwrote {path}")
    return 0
