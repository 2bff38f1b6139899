"""Conformance with kronfluence 1.0.1: the same EK-FAC on tiny GPT-2, GPT-NeoX and Llama models gives the same
pairwise scores.

Both tools run on the same float32 model (random weights from a transformers config, eager attention, GPT-2's MLP
``Conv1D`` as ``nn.Linear`` since kronfluence tracks only ``nn.Linear``), the same MLP matrices (biases in the
homogeneous column, as both do), the same padded training sequences and queries (prompt labelled -100), the same
summed token losses, and damping 0.1 x mean eigenvalue per module (kronfluence's ``damping_factor=None``).
kronfluence scores ``grad f^T (G + damping)^-1 grad(train loss)``, minus ours (``grad log p(z)``).

Agreement asserted per query: Pearson >= 0.9999 and ``max_m |ours - kf| / max_m |kf| <= 1e-5``. The bound is float32
round-off: unit round-off is 6e-8, and the two tools accumulate the covariances (a few hundred tokens each), the
eigenvalue correction and the contractions in different orders, so a few hundred unit round-offs are expected at
worst; observed: <= 1e-6 on all three architectures (the tests print the numbers with ``-s``). A real difference of
convention (a token count, a missing bias column, another damping) moves scores by percents.

kronfluence is installed by ``make setup`` (``--no-deps``: its torchvision requirement would replace the CPU torch).
Without it these tests skip, except when the environment variable CI is set: then they fail.
"""

from __future__ import annotations

import copy
import logging
import os

import pytest
import torch
import torch.nn.functional as F

from influence_study import LanguageModelingTask, fit_factors, pairwise_scores, select_modules
from tiny_models import ARCHITECTURES, lm_batches, tiny_causal_lm

try:  # optional outside CI (see the module docstring)
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments as KfFactorArguments
    from kronfluence.arguments import ScoreArguments as KfScoreArguments
    from kronfluence.task import Task as KfTask
    KRONFLUENCE_ERROR = None
except ImportError as err:  # pragma: no cover - depends on the environment
    Analyzer = prepare_model = KfFactorArguments = KfScoreArguments = None
    KfTask = object
    KRONFLUENCE_ERROR = f"{type(err).__name__}: {err}"

INSTALL = ".venv/bin/pip install --no-deps kronfluence==1.0.1 einconv einops opt_einsum accelerate (make setup does)"
SEQ, N_TRAIN, BATCH = 24, 32, 8
QUERY_LENGTHS, PROMPT = (24, 20, 18, 22), 12
MIN_PEARSON, MAX_RELATIVE_DIFFERENCE = 0.9999, 1e-5

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kronfluence's torch.cuda.amp.GradScaler


@pytest.fixture(autouse=True)
def kronfluence_required():
    if KRONFLUENCE_ERROR is not None:
        message = f"kronfluence is not importable ({KRONFLUENCE_ERROR}); install it: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the kronfluence conformance tests must run: {message}")
        pytest.skip(message)


class KfLanguageModeling(KfTask):
    """kronfluence's side of :class:`~influence_study.LanguageModelingTask` (sum or mean over each sequence's
    predicted tokens). With ``generator``, sampled labels are drawn from it in the order our engine draws them."""

    def __init__(self, modules, token_reduction: str = "sum", generator: torch.Generator | None = None):
        self.modules, self.token_reduction, self.generator = list(modules), token_reduction, generator

    def _losses(self, batch, model, sample=False):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        mask = labels != -100
        if sample:
            with torch.no_grad():
                probs = torch.softmax(logits.detach(), dim=-1).reshape(-1, logits.shape[-1])
                labels = torch.multinomial(probs, 1, generator=self.generator).reshape(logits.shape[:-1])
        losses = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none") * mask
        if self.token_reduction == "mean":
            return (losses.sum(-1) / mask.sum(-1)).sum()
        return losses.sum()

    def compute_train_loss(self, batch, model, sample=False):
        return self._losses(batch, model, sample)

    def compute_measurement(self, batch, model):
        return -self._losses(batch, model)

    def get_influence_tracked_modules(self):
        return self.modules

    def get_attention_mask(self, batch):
        return batch["attention_mask"]


class Rows(torch.utils.data.Dataset):
    """The examples of a list of batches, one row each (kronfluence batches them itself, in order)."""

    def __init__(self, batches):
        self.rows = [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["input_ids"]))]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def problem(architecture: str):
    """The model, training batches (padded, 12 to 24 tokens) and queries (12-token prompts) of one architecture."""
    generator = torch.Generator().manual_seed(1)
    model = tiny_causal_lm(architecture, seq_len=SEQ)
    lengths = torch.randint(12, SEQ + 1, (N_TRAIN,), generator=generator).tolist()
    return (model, lm_batches(lengths, generator, SEQ, BATCH),
            lm_batches(QUERY_LENGTHS, generator, SEQ, len(QUERY_LENGTHS), prompt=PROMPT))


def kf_analyzer(model, task, directory) -> Analyzer:
    return Analyzer(analysis_name="conformance", model=prepare_model(copy.deepcopy(model), task), task=task,
                    cpu=True, disable_tqdm=True, output_dir=str(directory), log_level=logging.WARNING)


def kf_scores(analyzer, queries, train, **score_args) -> torch.Tensor:
    """kronfluence's pairwise scores of the fitted factors ``"f"``, in our sign convention."""
    analyzer.compute_pairwise_scores("s", "f", Rows(queries), Rows(train), per_device_query_batch_size=len(queries[0]
                                     ["input_ids"]), per_device_train_batch_size=BATCH,
                                     score_args=KfScoreArguments(damping_factor=None, **score_args),
                                     overwrite_output_dir=True)
    return -analyzer.load_pairwise_scores("s")["all_modules"].double()


def agreement(ours: torch.Tensor, kf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query: Pearson correlation and ``max |ours - kf| / max |kf|``."""
    ours, kf = ours.double(), kf.double()
    a, b = ours - ours.mean(-1, keepdim=True), kf - kf.mean(-1, keepdim=True)
    pearson = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return pearson, (ours - kf).abs().amax(-1) / kf.abs().amax(-1)


def assert_agrees(ours, kf, what):
    pearson, relative = agreement(ours, kf)
    print(f"\n{what}: 1 - Pearson per query {[f'{1 - float(p):.1e}' for p in pearson]}, max relative difference "
          f"per query {[f'{float(r):.1e}' for r in relative]}")
    assert ours.shape == kf.shape
    assert (pearson >= MIN_PEARSON).all(), (what, pearson)
    assert (relative <= MAX_RELATIVE_DIFFERENCE).all(), (what, relative)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_ekfac_scores_agree_with_kronfluence(architecture, tmp_path):
    """Empirical Fisher (true labels, deterministic), the sum over tokens; also the summed query (kronfluence's
    ``aggregate_query_gradients``, our ``sum_queries``)."""
    model, train, queries = problem(architecture)
    modules = list(select_modules(model))
    task = LanguageModelingTask()
    factors = fit_factors(model, task, train, strategy="ekfac", sampled_labels=False, progress=False)
    ours = pairwise_scores(model, task, factors, queries, train, progress=False)

    analyzer = kf_analyzer(model, KfLanguageModeling(modules), tmp_path)
    analyzer.fit_all_factors("f", Rows(train), per_device_batch_size=BATCH, overwrite_output_dir=True,
                             factor_args=KfFactorArguments(strategy="ekfac", use_empirical_fisher=True))
    assert_agrees(ours.scores, kf_scores(analyzer, queries, train), f"{architecture}, empirical Fisher")
    summed = pairwise_scores(model, task, factors, queries, train, sum_queries=True, progress=False)
    assert_agrees(summed.scores, kf_scores(analyzer, queries, train, aggregate_query_gradients=True),
                  f"{architecture}, summed queries")
    # the settings both tools shared are the ones recorded
    assert factors.metadata["conventions"]["attention_implementation"] == "eager"
    assert factors.metadata["conventions"]["fisher"] == "empirical"
    assert ours.metadata["conventions"]["task"] == "LanguageModelingTask"
    assert summed.metadata["conventions"]["query_reduction"] == "sum"


def test_sampled_label_factors_agree_with_kronfluence_for_the_same_draws(tmp_path):
    """True Fisher (labels sampled from the model): with the same sampling streams (seed for the covariances,
    seed + 1 for the eigenvalue correction, drawn batch by batch in the same order) the same labels are drawn."""
    model, train, queries = problem("gpt2")
    seed = 5
    factors = fit_factors(model, LanguageModelingTask(), train, strategy="ekfac", sampled_labels=True, seed=seed,
                          progress=False)
    ours = pairwise_scores(model, LanguageModelingTask(), factors, queries, train, progress=False)

    generator = torch.Generator()
    analyzer = kf_analyzer(model, KfLanguageModeling(select_modules(model), generator=generator), tmp_path)
    factor_args = KfFactorArguments(strategy="ekfac", use_empirical_fisher=False)
    generator.manual_seed(seed)
    analyzer.fit_covariance_matrices("f", Rows(train), per_device_batch_size=BATCH, factor_args=factor_args,
                                     overwrite_output_dir=True)
    analyzer.perform_eigendecomposition("f", factor_args=factor_args, overwrite_output_dir=True)
    generator.manual_seed(seed + 1)
    analyzer.fit_lambda_matrices("f", Rows(train), per_device_batch_size=BATCH, factor_args=factor_args,
                                 overwrite_output_dir=True)
    assert_agrees(ours.scores, kf_scores(analyzer, queries, train), "gpt2, sampled labels (same draws)")
    assert factors.metadata["conventions"]["fisher"] == "true (sampled labels)"
    assert ours.metadata["conventions"]["sampled_labels"] is True


def test_mean_over_tokens_agrees_with_kronfluence(tmp_path):
    """The mean over each sequence's tokens (a task convention) on both sides, for the loss and the measurement."""
    model, train, queries = problem("llama")
    task = LanguageModelingTask(token_reduction="mean")
    factors = fit_factors(model, task, train, strategy="ekfac", sampled_labels=False, progress=False)
    ours = pairwise_scores(model, task, factors, queries, train, progress=False)

    analyzer = kf_analyzer(model, KfLanguageModeling(select_modules(model), token_reduction="mean"), tmp_path)
    analyzer.fit_all_factors("f", Rows(train), per_device_batch_size=BATCH, overwrite_output_dir=True,
                             factor_args=KfFactorArguments(strategy="ekfac", use_empirical_fisher=True))
    assert_agrees(ours.scores, kf_scores(analyzer, queries, train), "llama, mean over tokens")
    assert factors.metadata["conventions"]["token_reduction"] == "mean"
    assert ours.metadata["conventions"]["token_reduction"] == "mean"
