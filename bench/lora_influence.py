"""The DataInf stage's influence step: reusing the per-example gradients against fitting every method afresh.

``lora_influence`` computes the LoRA matrices' per-example training gradients once and builds ``datainf`` and
``exact`` (the empirical Fisher) from them; LiSSA's default-damping pass (a sampled-gradient pass over the data)
runs only when a caller leaves the damping to the solver, which ``lora_influence`` never does. The baseline, run in
the same process, is what the stage did before: ``fit_factors`` for every method (DataInf and the empirical Fisher
each compute the training gradients again) and LiSSA's damping pass at fit time.

Model: a GPT-2 shaped like the study's ``gpt2-m`` (3 layers, n_embd 128, 4 heads; random weights: cost only) with
rank-8 LoRA on ``c_attn``; 900 training and 100 test sequences of 32 tokens, the last 2 of which are the
completion (the sentiment task's shape); B drawn at random as after fine-tuning; batch 64; LiSSA depth 10 on all batches, as in ``config.yaml``.
Reports the median over interleaved repeats of each method's fit + solve time and of the whole step, and the
largest relative difference between the two paths' scores.

Usage: .venv/bin/python bench/lora_influence.py [--repeats 3 --threads 2]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "lora_influence"


def refit_every_method(model, train, test, methods, lissa, damping):
    """The baseline: every method fitted by ``fit_factors`` (gradients recomputed), LiSSA's damping pass at fit
    time; returns ``{method: (seconds, total scores)}`` (gradients for the scores computed outside the timing)."""
    from influence_study import LanguageModelingTask, fit_factors
    from influence_study.finetune.influence import METHOD_OPTIONS, _flat
    from influence_study.finetune.lora import LORA_MODULES
    from influence_study.engine.passes import per_example_gradients
    from influence_study.engine.tracking import select_modules

    task = LanguageModelingTask()
    selected = select_modules(model, list(LORA_MODULES))
    names = list(selected)
    train_grads, _ = per_example_gradients(model, task, train, selected, "logp")
    test_grads, _ = per_example_gradients(model, task, test, selected, "measurement")
    summed = {name: g.sum(0, keepdim=True) for name, g in test_grads.items()}
    out = {}
    for method in methods:
        options = {**METHOD_OPTIONS[method], **(lissa if method == "lissa" else {})}
        started = time.perf_counter()
        solver = fit_factors(model, task, train, strategy=method, modules=names, progress=False, **options)
        if method == "lissa":
            solver.default_damping()  # the pass that used to run at fit time
        queries = summed if method == "lissa" else test_grads
        solved = _flat(solver.precondition(queries, damping), names)
        scores = (solved @ _flat(train_grads, names).T).numpy()
        out[method] = (time.perf_counter() - started, scores[0] if method == "lissa" else scores.sum(0))
    return out


def main() -> int:
    p = C.parser(__doc__)
    C.model_arguments(p, vocab=2048, seq_len=32, n_embd=128, n_layer=3, n_head=4)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--n-train", type=int, default=900)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--completion", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = C.parse_in_process(p)
    from influence_study.finetune.influence import METHODS, lora_influence
    from influence_study.finetune.lora import add_lora

    model = add_lora(C.gpt2(args.vocab, args.seq_len, args.n_embd, args.n_layer, args.n_head, linear_mlp=False),
                     args.rank, None, None, seed=0).eval()
    with torch.no_grad():  # LoRA's B starts at zero (then A has no gradient); a fine-tuned B is not
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    prompt = args.seq_len - args.completion
    train = C.lm_batches(C.markov_sequences(args.n_train, args.seq_len, args.vocab, seed=1), args.batch_size, prompt)
    test = C.lm_batches(C.markov_sequences(args.n_test, args.seq_len, args.vocab, seed=2), args.batch_size, prompt)
    lissa = {"depth": args.depth, "scale": None}
    methods = list(METHODS)

    samples = {"reuse": [], "refit": []}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        torch.manual_seed(repeat)  # the same start of LiSSA's power iteration on both paths
        started = time.perf_counter()
        reused = lora_influence(model, train, test, methods, lissa=lissa)
        whole = time.perf_counter() - started
        torch.manual_seed(repeat)
        refit = refit_every_method(model, train, test, methods, lissa, reused.damping)
        if repeat == 0:
            continue
        samples["reuse"].append({"whole": whole, "gradients": reused.gradient_seconds,
                                 **{m: r.fit_seconds + r.solve_seconds for m, r in reused.methods.items()}})
        samples["refit"].append({"whole": reused.gradient_seconds + sum(s for s, _ in refit.values()),
                                 "gradients": reused.gradient_seconds, **{m: s for m, (s, _) in refit.items()}})
        differences = {m: float(np.abs(reused.methods[m].total - refit[m][1]).max()
                                / np.abs(refit[m][1]).max()) for m in methods}

    rows, medians = [], {}
    for key in ["gradients", *methods, "whole"]:
        new = statistics.median(s[key] for s in samples["reuse"])
        old = statistics.median(s[key] for s in samples["refit"])
        medians[key] = {"reuse": new, "refit": old, "ratio": new / old}
        rows.append([key, f"{old:.2f}", f"{new:.2f}", f"{new / old:.2f}",
                     f"{differences[key]:.1e}" if key in differences else ""])
    print(C.table(["part", "refit (s)", "reuse (s)", "reuse / refit", "max rel. score difference"], rows))
    C.write_result(NAME, {"arguments": vars(args), "medians": medians, "samples": samples,
                          "max_relative_difference": differences})
    return 0


if __name__ == "__main__":
    sys.exit(main())
