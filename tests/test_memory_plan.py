"""The memory plan (:mod:`influence_study.engine.memory_plan`) against what the engine really allocates.

How the peaks are measured, independently of the plan: torch's CPU allocator reports every allocation and every
free to the profiler (``torch.profiler.profile(profile_memory=True)``), each report with the allocator's running
total of the bytes allocated since profiling began. The largest total during a call is the call's peak above what
was held before it; tensors held before (the model, the fitted factors) are in neither the peak nor the plan's
total. The count is kept by c10's allocator for every tensor the call creates, including LAPACK workspaces and the
temporaries of each op; the plan sees only module shapes, batch shapes and options, so a plan that forgets a tensor
or counts one twice misses the measured peak.

The plan leaves out the model's own forward/backward graph (it depends on the architecture, not on the engine), so
the models here make the engine's tensors dominate: wide MLP matrices, a GPT-2 with a wide MLP and a tiny
vocabulary (the graph is then a few percent of the peak). Other checks: the ``factors`` column against the bytes
of the tensors a fit stores; a 50k x 50k module refused before any forward pass, with its name and the bytes
needed and available; the logged plan listing every module and a total; the defaults leaving every number as it was.
"""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch
import transformers
from torch import nn
from torch.profiler import ProfilerActivity, profile

from influence_study import ClassificationTask, FactorArguments, LanguageModelingTask, fit_factors, pairwise_scores, \
    self_scores
from influence_study.engine.memory_plan import (GiB, MemoryPlan, MemoryPlanError, available_memory, check_fits,
                                                loader_shape, plan_factor_fit)
from influence_study.engine.tracking import select_modules
from influence_study.study.runtime import logged_to

pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = 0.25  # the bound: the plan within 25% of the measured peak
CLS, LM = ClassificationTask(), LanguageModelingTask()

try:  # the profiler's allocation events (with the allocator's running total)
    from torch._C._profiler import _EventType
except ImportError:  # pragma: no cover - another torch
    _EventType = None


def measured_peak(call) -> tuple[int, object]:
    """``(peak bytes allocated on the CPU during call() above what was allocated before it, its result)``."""
    if _EventType is None:
        pytest.skip("this torch's profiler does not expose allocation events")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = call()
    stack, events = list(prof.profiler.kineto_results.experimental_event_tree()), []
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and str(node.extra_fields.device) == "cpu":
            events.append(node)
    events.sort(key=lambda node: node.start_time_ns)
    assert events, "the profiler recorded no allocation"
    before = events[0].extra_fields.total_allocated - events[0].extra_fields.alloc_size
    return max(node.extra_fields.total_allocated for node in events) - before, result


def logged_plans(caplog) -> list[MemoryPlan]:
    return [r.args[0] for r in caplog.records if r.args and isinstance(r.args[0], MemoryPlan)]


# --- models and data: the engine's tensors dominate the peaks -----------------------------------------------------


def mlp(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10)).to(dtype)


def mlp_batches(n: int, size: int, seed: int, dtype=torch.float32) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"inputs": torch.randn(size, 64, generator=g, dtype=dtype), "labels": torch.randint(0, 10, (size,), generator=g)}
            for _ in range(n // size)]


def gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=1, n_head=2, n_inner=512,
                                     bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config).eval()


def lm_batches(n: int, size: int, tokens: int, seed: int, prompt: int = 0, padding: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n // size):
        ids = torch.randint(1, 50, (size, tokens), generator=g)
        mask = torch.ones_like(ids)
        mask[:, tokens - padding:] = 0
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :prompt] = -100
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


@pytest.fixture(scope="module")
def mlp_setup():
    model = mlp()
    train, queries = mlp_batches(128, 32, 1), mlp_batches(64, 16, 2)
    factors = {s: fit_factors(model, CLS, train, s, progress=False) for s in ("identity", "ekfac")}
    return model, train, queries, factors


@pytest.fixture(scope="module")
def gpt2_setup():
    model = gpt2()
    train, queries = lm_batches(32, 8, 16, 3, padding=4), lm_batches(32, 8, 16, 4, prompt=8)
    return model, train, queries, fit_factors(model, LM, train, "ekfac", progress=False)


def check_within(plan: MemoryPlan, peak: int) -> None:
    ratio = plan.total / peak
    assert abs(ratio - 1) <= TOLERANCE, f"plan {plan.total} B vs measured peak {peak} B (ratio {ratio:.3f}):\n{plan}"


# --- (a) the plans against the measured peaks ----------------------------------------------------------------------


@pytest.mark.parametrize("options", [dict(strategy="diagonal"), dict(strategy="kfac"), dict(strategy="ekfac"),
                                     dict(strategy="ekfac", blocks=2, dtype=torch.float64)],
                         ids=["diagonal", "kfac", "ekfac", "ekfac-blocks2-float64"])
def test_the_fit_plan_is_within_25_percent_of_the_measured_peak(options, caplog):
    model, train = mlp(), mlp_batches(128, 32, 1)
    with caplog.at_level(logging.INFO, logger="influence_study"):
        peak, _ = measured_peak(lambda: fit_factors(model, CLS, train, progress=False, **options))
    [logged] = logged_plans(caplog)
    # the plan from the shapes the test knows (batches of 32 examples, one token each) is the one the engine logs
    assert logged == plan_factor_fit(select_modules(model), FactorArguments(**options), 32, 1)
    check_within(logged, peak)


def test_the_fit_plan_of_a_gpt2_with_padding_is_within_25_percent(caplog):
    model, train = gpt2(), lm_batches(32, 8, 16, 3, padding=4)
    with caplog.at_level(logging.INFO, logger="influence_study"):
        peak, _ = measured_peak(lambda: fit_factors(model, LM, train, "ekfac", dtype=torch.float64, progress=False))
    [logged] = logged_plans(caplog)
    assert logged == plan_factor_fit(select_modules(model), FactorArguments(dtype=torch.float64), 8, 16, masked=True)
    check_within(logged, peak)


@pytest.mark.parametrize("strategy, options", [
    ("identity", {}), ("ekfac", {}), ("ekfac", dict(query_rank=4)), ("ekfac", dict(sum_queries=True))],
    ids=["identity", "ekfac", "ekfac-rank4", "ekfac-summed"])
def test_the_pairwise_plan_is_within_25_percent_of_the_measured_peak(mlp_setup, strategy, options, caplog):
    model, train, queries, factors = mlp_setup
    with caplog.at_level(logging.INFO, logger="influence_study"):
        peak, _ = measured_peak(lambda: pairwise_scores(model, CLS, factors[strategy], queries, train, progress=False,
                                                        **options))
    [logged] = logged_plans(caplog)
    check_within(logged, peak)


@pytest.mark.parametrize("options", [dict(per_token=True), dict(query_rank=4, per_token=True), {},
                                     dict(query_rank=4, rescore_top_k=2)],
                         ids=["tokens", "rank4-tokens", "full", "rank4-rescored"])
def test_the_token_scores_plan_is_within_25_percent_of_the_measured_peak(gpt2_setup, options, caplog):
    model, train, queries, factors = gpt2_setup
    with caplog.at_level(logging.INFO, logger="influence_study"):
        peak, _ = measured_peak(lambda: pairwise_scores(model, LM, factors, queries, train, progress=False, **options))
    [logged] = logged_plans(caplog)
    check_within(logged, peak)


def test_the_self_influence_plan_is_within_25_percent_of_the_measured_peak(mlp_setup, caplog):
    model, train, _, factors = mlp_setup
    with caplog.at_level(logging.INFO, logger="influence_study"):
        peak, _ = measured_peak(lambda: self_scores(model, CLS, factors["ekfac"], train, progress=False))
    [logged] = logged_plans(caplog)
    check_within(logged, peak)


@pytest.mark.parametrize("strategy, blocks", [("diagonal", 1), ("kfac", 1), ("ekfac", 2)])
def test_the_factors_column_is_what_the_fit_stores(strategy, blocks):
    model, train = mlp(), mlp_batches(64, 32, 1)
    factors = fit_factors(model, CLS, train, strategy, blocks=blocks, progress=False)
    plan = plan_factor_fit(select_modules(model), FactorArguments(strategy=strategy, blocks=blocks), 32, 1)
    for row in plan.modules:
        assert row.factors == sum(t.numel() * t.element_size() for t in factors.tensors[row.name].values()), row.name


# --- (b) a module whose eigendecomposition cannot fit is refused before any pass ----------------------------------


class CountingTask(ClassificationTask):
    """A classification task that counts the forward passes it runs."""

    def __init__(self):
        self.calls = 0

    def outputs(self, model, batch):
        self.calls += 1
        return super().outputs(model, batch)


def test_a_50k_by_50k_module_is_refused_before_any_pass():
    n = 50_000
    model = nn.Sequential(nn.Linear(n, n, bias=False, device="meta"))  # no memory: only its shape
    loader = [{"inputs": torch.zeros(4, n, device="meta"), "labels": torch.zeros(4, dtype=torch.long, device="meta")}]
    task, limit = CountingTask(), 64 * GiB
    with pytest.raises(MemoryPlanError) as caught:
        fit_factors(model, task, loader, "kfac", memory_limit=limit, progress=False)
    message = str(caught.value)
    assert task.calls == 0 and isinstance(caught.value, MemoryError)
    assert re.search(r"module '0' \[50000 x 50000\] needs [\d.]+ GiB at its eigendecomposition", message), message
    assert "64.00 GiB are available (memory_limit)" in message
    # what it needs at least, counted here: the float32 covariances A and S (the sums and their averages) and, for
    # A, the float64 copy, eigenvectors and syevd's 2n^2 doubles of workspace
    needed = float(re.search(r"needs ([\d.]+) GiB", message).group(1)) * GiB
    at_least = 4 * 4 * n * n + 8 * 4 * n * n
    assert at_least <= needed <= 2 * at_least


def test_a_module_beyond_any_machine_is_refused_by_default_and_a_small_limit_refuses_scoring(mlp_setup):
    model = nn.Sequential(nn.Linear(10 ** 6, 10, device="meta"))  # A alone: 10^12 floats
    loader = [{"inputs": torch.zeros(2, 10 ** 6, device="meta"), "labels": torch.zeros(2, dtype=torch.long)}]
    task = CountingTask()
    with pytest.raises(MemoryPlanError, match=r"module '0' \[10 x 1000001\] needs .* GiB .* are available \("):
        fit_factors(model, task, loader, "kfac", progress=False)
    assert task.calls == 0
    small, train, queries, factors = mlp_setup
    counting = CountingTask()
    with pytest.raises(MemoryPlanError, match=r"pairwise_scores: module '2' \[256 x 257\] needs .* MiB .* but 1 MiB"):
        pairwise_scores(small, counting, factors["ekfac"], queries, train, memory_limit=2 ** 20, progress=False)
    assert counting.calls == 0
    with pytest.raises(MemoryPlanError, match=r"self_scores: module"):
        self_scores(small, counting, factors["ekfac"], train, memory_limit=2 ** 20, progress=False)
    assert counting.calls == 0


def test_check_fits_refuses_a_stage_whose_total_does_not_fit():
    plan = plan_factor_fit(select_modules(mlp()), "ekfac", 32, 1)
    largest = max(row.need for row in plan.modules)
    assert largest < plan.total  # every module fits alone, not all of them together
    check_fits(plan, plan.total)  # fits exactly
    with pytest.raises(MemoryPlanError, match=r"fit_factors: its eigenvalue correction needs .* for 3 modules"):
        check_fits(plan, (largest + plan.total) // 2, "a test")
    check_fits(plan, None)  # unknown: nothing to check


# --- (c) the logged plan, and the defaults ---------------------------------------------------------------------------


def test_the_logged_plan_lists_every_tracked_module_and_a_total(gpt2_setup, caplog):
    model, train, queries, factors = gpt2_setup
    with caplog.at_level(logging.INFO, logger="influence_study"):
        fit_factors(model, LM, train, "kfac", progress=False)
        pairwise_scores(model, LM, factors, queries, train, progress=False)
    texts = [r.getMessage() for r in caplog.records if "memory plan of" in r.getMessage()]
    assert len(texts) == 2 and texts[0].startswith("memory plan of fit_factors")
    for text in texts:
        for name, module in select_modules(model).items():
            n_out, n_in = module.weight.shape[1], module.weight.shape[0] + 1  # Conv1D: [in, out], with the bias
            assert re.search(rf"^{re.escape(name)} +\[{n_out} x {n_in}\] .*MiB$", text, re.M), (name, text)
        total = re.search(r"^total ([\d.]+) MiB \(peak at ", text, re.M)
        assert total and float(total.group(1)) > 0, text


def test_the_plan_changes_no_number_and_can_be_switched_off(caplog):
    model, train = mlp(), mlp_batches(64, 32, 1)
    with caplog.at_level(logging.INFO, logger="influence_study"):
        planned = fit_factors(model, CLS, train, "ekfac", progress=False)
        assert len(logged_plans(caplog)) == 1
        unplanned = fit_factors(model, CLS, train, "ekfac", memory_check=False, progress=False)
        assert len(logged_plans(caplog)) == 1
    for name, tensors in planned.tensors.items():
        assert all(torch.equal(t, unplanned.tensors[name][k]) for k, t in tensors.items())


def test_loader_shape_reads_the_first_batch_and_leaves_the_random_state():
    data = torch.utils.data.TensorDataset(torch.randint(1, 50, (10, 7)))
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True,
                                         collate_fn=lambda rows: {"input_ids": torch.stack([r[0] for r in rows])})
    torch.manual_seed(5)
    shape, after = loader_shape(CLS, loader), torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # a shuffling DataLoader draws its seed from torch's global state
    assert (shape.batch_size, shape.tokens, shape.masked, shape.examples) == (4, 7, False, 12)  # 3 batches of <= 4
    assert loader_shape(LM, lm_batches(20, 8, 5, 0, padding=2), max_examples=6) == (6, 5, True, 6)
    assert loader_shape(LM, lm_batches(20, 8, 5, 0))[2] is False  # a mask of real tokens only: nothing weighted
    assert loader_shape(CLS, iter([{"inputs": torch.zeros(2, 3)}])) == (0, 0, False, None)


def test_available_memory_reads_the_host_or_the_limit():
    assert available_memory("cpu", 123) == (123, "memory_limit")
    try:
        with open("/proc/meminfo") as meminfo:
            expected = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        pytest.skip("no MemAvailable in /proc/meminfo")
    found, source = available_memory("cpu")
    assert source == "MemAvailable of /proc/meminfo" and math.isclose(found, expected, rel_tol=0.25)
    assert available_memory("meta")[0] is not None  # a meta model is planned against the host


def test_a_study_rule_log_records_the_plan(tmp_path):
    """The study's rules run inside ``study.runtime.logged_to``, which records the package logger's INFO lines: the
    engine's plan reaches each rule's log without anything in the stages."""
    model, train = mlp(), mlp_batches(64, 32, 1)
    with logged_to(tmp_path / "rule.log"):
        fit_factors(model, CLS, train, "kfac", progress=False)
    text = (tmp_path / "rule.log").read_text()
    assert "INFO memory plan of fit_factors (kfac" in text and re.search(r"^total [\d.]+ MiB", text, re.M), text
