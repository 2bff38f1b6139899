"""The options of fitting and scoring, as dataclasses with one default and one help text per field.

:class:`FactorArguments` holds what :func:`~influence_study.fit_factors` takes, :class:`ScoreArguments` what
:func:`~influence_study.pairwise_scores`, :func:`~influence_study.self_scores` and
:func:`~influence_study.query_gradients` take. Those functions accept an instance, keyword overrides of its fields,
or both (``fit_factors(model, task, loader, FactorArguments(blocks=2), seed=3)``); a keyword that is not a field
raises ``TypeError``. Each field's help is its ``metadata["help"]`` (``dataclasses.fields(FactorArguments)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence, TypeVar

import torch

FACTOR_STRATEGIES = ("identity", "diagonal", "kfac", "ekfac")
SOLVER_STRATEGIES = ("lissa", "datainf", "exact", "pbrf")
STRATEGIES = FACTOR_STRATEGIES + SOLVER_STRATEGIES

#: the fields of :class:`FactorArguments` that only some strategies take (every strategy takes the others)
STRATEGY_OPTIONS: dict[str, tuple[str, ...]] = {
    **{strategy: () for strategy in FACTOR_STRATEGIES},
    "lissa": ("depth", "scale"),
    "datainf": (),
    "exact": ("block_diagonal", "curvature"),
    "pbrf": ("central", "epsilon", "learning_rate", "steps"),
}


@dataclass(frozen=True, kw_only=True)
class FactorArguments:
    """How :func:`~influence_study.fit_factors` fits the curvature (the factors, or a solver that uses none)."""

    strategy: str = field(default="ekfac", metadata={"help": (
        "identity (gradient dot product), diagonal, kfac, ekfac (the paper's), or a solver that uses no factors: "
        "lissa, datainf, exact, pbrf (see influence_study.engine.solvers).")})
    modules: str | Sequence[str] | None = field(default=None, metadata={"help": (
        "Names or glob patterns of the tracked modules; None: the MLP matrices of known architectures (every "
        "nn.Linear/Conv1D of other models).")})
    sampled_labels: bool | None = field(default=None, metadata={"help": (
        "Fit on labels sampled from the model (true Fisher); False uses the true labels (empirical Fisher). None: "
        "each method's paper default, sampled for the factor strategies (Grosse et al.), true labels for datainf "
        "(Kwon et al.).")})
    max_examples: int | None = field(default=None, metadata={"help": (
        "Use at most this many examples of the loader (the count is recorded).")})
    blocks: int = field(default=1, metadata={"help": (
        "kfac/ekfac: split A and S into this many diagonal blocks (the paper's O; saves memory).")})
    dtype: torch.dtype = field(default=torch.float32, metadata={"help": (
        "Dtype of the accumulated factors (float32 or float64), of the per-example gradients of datainf.")})
    seed: int = field(default=0, metadata={"help": "Seed of the sampled labels (and of LiSSA's power iteration)."})
    device: str | torch.device | None = field(default=None, metadata={"help": (
        "Run on this device (the model is moved there, as model.to does); None: where the model is.")})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    depth: int = field(default=1000, metadata={"help": "lissa: the number of Neumann-series iterations."})
    scale: float | None = field(default=None, metadata={"help": (
        "lissa: the scale (above the largest eigenvalue of G + λ); None: twice a power-iteration estimate.")})
    curvature: str = field(default="gauss_newton", metadata={"help": (
        "exact: 'gauss_newton' (the dense Gauss-Newton matrix) or 'empirical_fisher' (the dense empirical Fisher of "
        "the true labels' per-example gradients, the matrix DataInf approximates).")})
    block_diagonal: bool = field(default=False, metadata={"help": (
        "exact: keep only the within-module blocks of the matrix (the structure EK-FAC and DataInf assume).")})
    epsilon: float = field(default=1e-3, metadata={"help": "pbrf: the weight ε of the training example's loss."})
    steps: int = field(default=500, metadata={"help": "pbrf: Adam steps per response."})
    learning_rate: float = field(default=1e-3, metadata={"help": "pbrf: Adam's learning rate."})
    central: bool = field(default=True, metadata={"help": (
        "pbrf: the central difference (f(θ+) - f(θ-)) / 2ε; False: the one-sided (f(θ+) - f(θ_s)) / ε.")})
    attention_kernel: str | None = field(default=None, metadata={"help": (
        "None: the attention the model is configured with (recorded: config._attn_implementation and the enabled "
        "torch SDPA backends); 'eager': a Hugging Face model's plain matmul-softmax attention for this call; "
        "'math': torch's scaled_dot_product_attention restricted to its deterministic math backend (no fused "
        "flash/memory-efficient kernels) for this call.")})
    tf32: bool | None = field(default=None, metadata={"help": (
        "None: float32 matmuls as torch's global settings say (recorded); False: full float32 (no TF32) for this "
        "call; True: TF32 allowed for this call (CUDA only). The settings are restored afterwards.")})
    track_bias: bool = field(default=True, metadata={"help": (
        "Track the bias of modules that have one (the homogeneous column of the gradient matrix, as the paper "
        "and kronfluence do); False: the weights only (factor strategies; the scores then leave the bias out).")})
    memory_check: bool = field(default=True, metadata={"help": (
        "Factor strategies: before any pass, plan the bytes each module needs (engine.memory_plan), log the plan "
        "at INFO and refuse (MemoryPlanError) a module or a fit that needs more than memory_limit; False: neither.")})
    memory_limit: int | None = field(default=None, metadata={"help": (
        "Bytes the memory plan may use; None: what the device has free (torch.cuda.mem_get_info on CUDA, "
        "MemAvailable of /proc/meminfo on the CPU).")})
    token_rotation: bool = field(default=False, metadata={"help": (
        "ekfac: form each batch's eigenvalue correction from tokens rotated into the eigenbasis, (S Q_S)^T (A Q_A), "
        "where that takes fewer multiply-adds than rotating each per-sequence gradient (Q_S^T DW Q_A; short "
        "sequences, wide modules): the same Λ up to float round-off (relative ~1e-6 in float32), not bit-identical. "
        "False: the reference order.")})
    eigh_dtype: torch.dtype = field(default=torch.float64, metadata={"help": (
        "kfac/ekfac: dtype of the eigendecompositions of A and S. float64 (as kronfluence) or float32 (about twice "
        "as fast on the CPU; the eigenvectors of weak directions then differ, which moved ekfac scores by up to "
        "1.2e-3 of the largest, Pearson >= 0.999996, in bench/README.md's sweep).")})
    activation_cache: int = field(default=0, metadata={"help": (
        "ekfac: bytes of memory for keeping the covariance pass's captured inputs and output gradients of each "
        "batch (in loader order, until one does not fit) for the eigenvalue correction, which then runs the model "
        "on none of those batches (true labels) or only backpropagates the correction's sampled labels through the "
        "covariance pass's graph (sampled labels: one forward pass instead of two). The factors are bit-identical "
        "to 0 (no cache); the fit holds up to this many more bytes: about tokens x the sum over modules of (in + out) "
        "x 4 bytes per sequence (float32 activations).")})


@dataclass(frozen=True, kw_only=True)
class ScoreArguments:
    """How :func:`~influence_study.pairwise_scores` (and :func:`~influence_study.self_scores`,
    :func:`~influence_study.query_gradients`, which take the fields named in :data:`SELF_SCORE_OPTIONS` and
    :data:`QUERY_GRADIENT_OPTIONS`) compute influence scores."""

    damping: float | Mapping[str, float] | None = field(default=None, metadata={"help": (
        "None for 0.1 × the mean eigenvalue per module (the paper's rule), a number for all modules, or "
        "{module: λ} (the default rule for the modules it leaves out).")})
    query_rank: int | None = field(default=None, metadata={"help": (
        "Store each module's preconditioned query gradient as a rank-r SVD approximation (the paper's query "
        "batching); None keeps full rank.")})
    per_module: bool = field(default=False, metadata={"help": (
        "Also return each module's share (they sum to the total).")})
    per_token: bool = field(default=False, metadata={"help": (
        "Also return each training token's share (they sum to the total).")})
    rescore_top_k: int | None = field(default=None, metadata={"help": (
        "After low-rank scoring, recompute at full rank every example in any query's top-k.")})
    train_slice: tuple[int, int | None] | slice | None = field(default=None, metadata={"help": (
        "(start, stop) or a slice: score only those training examples (shards).")})
    dtype: torch.dtype = field(default=torch.float32, metadata={"help": (
        "Compute dtype of the gradients and scores (float32 or float64).")})
    sum_queries: bool = field(default=False, metadata={"help": (
        "Score the SUM of the queries' measurements as one query (scores [1, examples]): the influence on the "
        "total measurement of a query set for the cost of one query; equal to summing the rows of the unsummed "
        "scores.")})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    mean_queries: bool = field(default=False, metadata={"help": (
        "As sum_queries, but the MEAN of the queries' measurements (the summed scores divided by the number of "
        "queries); not with sum_queries.")})
    n_train: int | None = field(default=None, metadata={"help": (
        "Divide every score (and its per-module and per-token shares) by this number of training sequences N: "
        "the change of f from adding one copy, as Scores.normalised. None: raw scores.")})
    attention_kernel: str | None = field(default=None, metadata={"help": (
        "As FactorArguments.attention_kernel, for the scoring passes.")})
    tf32: bool | None = field(default=None, metadata={"help": "As FactorArguments.tf32, for the scoring passes."})
    memory_check: bool = field(default=True, metadata={"help": (
        "As FactorArguments.memory_check: plan, log and check the memory of the scoring before any pass.")})
    memory_limit: int | None = field(default=None, metadata={"help": "As FactorArguments.memory_limit."})


#: the fields of :class:`ScoreArguments` that :func:`~influence_study.self_scores` takes
SELF_SCORE_OPTIONS = ("damping", "per_module", "train_slice", "dtype", "progress", "n_train", "attention_kernel",
                      "tf32", "memory_check", "memory_limit")
#: the fields of :class:`ScoreArguments` that :func:`~influence_study.query_gradients` takes
QUERY_GRADIENT_OPTIONS = ("dtype", "progress")

Options = TypeVar("Options", FactorArguments, ScoreArguments)


def field_names(cls) -> tuple[str, ...]:
    """The names of the fields of an options dataclass, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls))


def resolve_options(cls: type[Options], options: Options | None, overrides: Mapping[str, Any], where: str,
                    accepted: Iterable[str] | None = None) -> Options:
    """``options`` (``None``: the defaults of ``cls``) with the keyword ``overrides`` applied.

    ``TypeError`` (naming the bad keys) for an override that is not one of ``accepted`` (default: every field),
    or for ``options`` that is not a ``cls``.
    """
    if options is None:
        options = cls()
    elif not isinstance(options, cls):
        raise TypeError(f"{where}: options must be a {cls.__name__} (or None), got {type(options).__name__}")
    accepted = field_names(cls) if accepted is None else tuple(accepted)
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise TypeError(f"{where}: unexpected option(s) {unknown}; it takes {sorted(accepted)} "
                        f"(the fields of {cls.__name__})")
    return dataclasses.replace(options, **overrides) if overrides else options


def changed_fields(options, names: Iterable[str], overrides: Mapping[str, Any] = ()) -> list[str]:
    """Those of ``names`` that ``overrides`` sets or whose value in ``options`` is not the field's default."""
    defaults = {f.name: f.default for f in dataclasses.fields(options)}
    return sorted(name for name in names if name in overrides or getattr(options, name) != defaults[name])


def check_strategy_options(options: FactorArguments, overrides: Mapping[str, Any]) -> None:
    """``TypeError`` for a strategy-specific field (:data:`STRATEGY_OPTIONS`) that ``options.strategy`` does not
    take, set by ``overrides`` or to a value other than its default."""
    allowed = STRATEGY_OPTIONS[options.strategy]
    specific = {name for names in STRATEGY_OPTIONS.values() for name in names}
    unexpected = changed_fields(options, specific - set(allowed), overrides)
    if unexpected:
        raise TypeError(f"fit_factors: unexpected option(s) {unexpected} for strategy {options.strategy!r}; "
                        f"it takes {sorted(allowed) or 'none'}")


def check_unused_options(options: ScoreArguments, accepted: Iterable[str], where: str) -> None:
    """``ValueError`` for fields of ``options`` that ``where`` does not take but that are set to something other
    than their default (they would be silently ignored)."""
    unused = changed_fields(options, set(field_names(ScoreArguments)) - set(accepted))
    if unused:
        raise ValueError(f"{where}: option(s) {unused} are not available here; it takes {sorted(accepted)}")
