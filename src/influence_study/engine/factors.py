"""Fitting, saving and loading curvature factors: ``identity``, ``diagonal``, ``kfac`` and ``ekfac``.

``fit_factors`` is the single entry point for every strategy; the solvers that do not use factors (``lissa``,
``datainf``, ``exact``, ``pbrf``) are created through it too, so that ``pairwise_scores`` takes any of them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from influence_study.engine.conventions import fit_conventions, forced_numerics, make_tracker
from influence_study.engine.curvature import (diagonal_blocks, eigenbasis_precondition, eigendecompose,
                                              kfac_eigenvalues, squared_rotation_sum)
from influence_study.engine.damping import mean_damping
from influence_study.engine.files import FileIntegrityError, atomic_path, check_sha256, file_sha256
from influence_study.engine.fit_passes import ActivationCache, accumulate, covariance_pass, per_sequence_pass
from influence_study.engine.memory_plan import available_memory, check_fits, loader_shape, plan_factor_fit
from influence_study.engine.options import (FACTOR_STRATEGIES, SOLVER_STRATEGIES, STRATEGIES, FactorArguments,
                                            check_strategy_options, resolve_options)
from influence_study.engine.passes import check_finite, model_device, sampling_generator
from influence_study.engine.preconditioner import Preconditioner, fitted_metadata
from influence_study.engine.solvers import make_solver
from influence_study.engine.tasks import Task
from influence_study.engine.tracking import evaluation_mode, select_modules

__all__ = ["FACTOR_STRATEGIES", "SOLVER_STRATEGIES", "STRATEGIES", "FACTORS_FILE", "METADATA_FILE", "CONTENT_KEY",
           "Factors", "FileIntegrityError", "fit_factors"]

log = logging.getLogger(__name__)  # a child of the package logger: study.runtime.logged_to records its lines

FACTORS_FILE = "factors.safetensors"
METADATA_FILE = "metadata.json"
# metadata.json's record of the tensor file as written: {"factors.safetensors": {"sha256": hex, "bytes": size}}
CONTENT_KEY = "content"
_REFIT = "refit the factors (delete {directory} and fit them again)"


class Factors(Preconditioner):
    """Fitted curvature factors of one model, per tracked module.

    ``tensors[module]`` holds, by strategy: ``diagonal``: ``diagonal`` [out, in(+1)]; ``kfac``/``ekfac``:
    ``A_covariance.k``, ``S_covariance.k``, ``A_eigenvectors.k``, ``S_eigenvectors.k`` (k = block),
    ``A_eigenvalues``, ``S_eigenvalues`` and ``eigenvalues`` (``Λ`` [out, in(+1)]: corrected for ``ekfac``,
    ``λ_S λ_A^T`` for ``kfac``); ``identity``: nothing. ``metadata`` records the model fingerprint, the module
    shapes, how many sequences and tokens were used, the options, and ``conventions`` (attention kernel, TF32, the
    task's token reduction and prompt masking, Fisher, bias: :mod:`~influence_study.engine.conventions`).
    """

    def __init__(self, strategy: str, tensors: dict[str, dict[str, torch.Tensor]], metadata: dict):
        if strategy not in FACTOR_STRATEGIES:
            raise ValueError(f"strategy: expected one of {FACTOR_STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        self.tensors = tensors
        self.metadata = metadata
        self.module_names = list(metadata["modules"])

    # -- accessors used by tests and analyses -------------------------------------------------------------
    def covariances(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense (block-diagonal) ``(A, S)`` of module ``name``."""
        blocks = self.metadata["blocks"]
        return (torch.block_diag(*_blocks(self.tensors[name], "A_covariance", blocks)),
                torch.block_diag(*_blocks(self.tensors[name], "S_covariance", blocks)))

    def eigenvectors(self, name: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(Q_A blocks, Q_S blocks)`` of module ``name``."""
        return _eigenvectors(self.tensors[name], self.metadata["blocks"])

    def eigenvalues(self, name: str) -> torch.Tensor:
        """``Λ`` [out, in(+1)] of module ``name`` (``kfac``/``ekfac``)."""
        return self.tensors[name]["eigenvalues"]

    # -- preconditioning ----------------------------------------------------------------------------------
    def default_damping(self) -> dict[str, float]:
        """0.1 × the mean of each module's diagonal (``diagonal``) or eigenvalues ``Λ`` (``kfac``/``ekfac``);
        zero for ``identity``."""
        if self.strategy == "identity":
            return {name: 0.0 for name in self.module_names}
        key = "diagonal" if self.strategy == "diagonal" else "eigenvalues"
        return {name: mean_damping(self.tensors[name][key]) for name in self.module_names}

    def damping_values(self, damping=None) -> dict[str, float]:
        """As :meth:`Preconditioner.damping_values`; zero for every module of ``identity`` (whatever is given)."""
        if self.strategy == "identity":  # gradient dot product: no curvature, no damping
            return {name: 0.0 for name in self.module_names}
        return super().damping_values(damping)

    def _precondition(self, grads, damping):
        out = {}
        for name in self.module_names:
            v = grads[name]
            if self.strategy == "identity":
                out[name] = v
                continue
            if self.strategy == "diagonal":
                diagonal = self.tensors[name]["diagonal"].to(v.device)
                out[name] = (v.to(diagonal.dtype) / (diagonal + damping[name])).to(v.dtype)
                continue
            q_a, q_s = ([q.to(v.device) for q in blocks] for blocks in self.eigenvectors(name))
            lam = self.tensors[name]["eigenvalues"].to(v.device)
            out[name] = eigenbasis_precondition(v.to(lam.dtype), q_s, q_a, lam, damping[name]).to(v.dtype)
        return out

    # -- persistence --------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``factors.safetensors`` and ``metadata.json`` into ``directory`` (atomically: a killed save
        leaves no directory behind). ``metadata.json`` records the SHA-256 and size of the tensor file, which
        :meth:`load` checks; both files are read-only (mode 0o444)."""
        directory = Path(directory)
        flat = {f"{name}::{key}": t.detach().cpu().contiguous()
                for name, tensors in self.tensors.items() for key, t in tensors.items()}
        with atomic_path(directory, directory=True, read_only=True) as tmp:
            tensor_path = tmp / FACTORS_FILE
            save_file(flat, str(tensor_path), metadata={"strategy": self.strategy})
            content = {FACTORS_FILE: {"sha256": file_sha256(tensor_path), "bytes": tensor_path.stat().st_size}}
            # no sort_keys: the order of metadata['modules'] is the modules' order in the model
            record = {**self.metadata, CONTENT_KEY: content}
            (tmp / METADATA_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, model: torch.nn.Module | None = None,
             device: str | torch.device = "cpu") -> "Factors":
        """Read factors written by :meth:`save`. With ``model``, refuse (``ValueError``) factors fitted on
        another model. A tensor file whose bytes are not those :meth:`save` recorded (changed in place,
        truncated) or that cannot be read raises :class:`~influence_study.engine.files.FileIntegrityError`
        naming the file."""
        directory = Path(directory)
        meta_path, tensor_path = directory / METADATA_FILE, directory / FACTORS_FILE
        refit = _REFIT.format(directory=directory)
        for path in (meta_path, tensor_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: not found; is {directory} a directory written by Factors.save?")
        try:
            metadata = json.loads(meta_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise FileIntegrityError(f"{meta_path}: not readable as JSON ({err}); {refit}") from err
        recorded = metadata.pop(CONTENT_KEY, {}).get(FACTORS_FILE)
        if recorded is not None:
            check_sha256(tensor_path, recorded["sha256"], str(meta_path), refit, size=recorded.get("bytes"))
        else:
            log.warning("%s: records no SHA-256 of %s (written before checksums were recorded); loaded unchecked",
                        meta_path, FACTORS_FILE)
        try:
            stored = load_file(str(tensor_path), device=str(device))
        except (SafetensorError, OSError, ValueError) as err:
            raise FileIntegrityError(f"{tensor_path}: cannot be read as a safetensors file ({err}); {refit}") from err
        tensors: dict[str, dict[str, torch.Tensor]] = {name: {} for name in metadata["modules"]}
        for key, tensor in stored.items():
            name, _, field = key.partition("::")
            if name not in tensors:
                raise ValueError(f"{tensor_path}: tensor {key!r} belongs to no module listed in {meta_path}")
            tensors[name][field] = tensor
        factors = cls(metadata["strategy"], tensors, metadata)
        if model is not None:
            factors.check_model(model)
        return factors


def fit_factors(model: torch.nn.Module, task: Task, loader: Iterable, options: FactorArguments | str | None = None,
                **overrides) -> Preconditioner:
    """Fit the curvature of ``model`` on the examples of ``loader``.

    Args:
        model: any ``torch.nn.Module``; it stays on its device, and factors are fitted there.
        task: how batches give the loss (:class:`~influence_study.engine.tasks.Task`).
        loader: an iterable of batches (dicts of tensors, dimension 0 = examples) in a fixed order.
        options: a :class:`~influence_study.engine.options.FactorArguments` (``None``: its defaults), or a strategy
            name as a shorthand for ``FactorArguments(strategy=name)``.
        **overrides: fields of :class:`~influence_study.engine.options.FactorArguments` that replace those of
            ``options`` (``strategy="kfac", blocks=2, seed=3``); their help is on the fields. A name that is not
            a field, or a solver option that the strategy does not take, raises ``TypeError``.

    Returns:
        :class:`Factors` for the factor strategies (``identity``, ``diagonal``, ``kfac``, ``ekfac``), the solver
        object otherwise (:mod:`influence_study.engine.solvers`); both precondition gradients for
        :func:`~influence_study.pairwise_scores`.
    """
    if isinstance(options, str):
        if "strategy" in overrides:
            raise TypeError(f"fit_factors: the strategy given twice ({options!r} and {overrides['strategy']!r})")
        options = FactorArguments(strategy=options)
    options = resolve_options(FactorArguments, options, overrides, "fit_factors")
    strategy = options.strategy
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    check_strategy_options(options, overrides)
    if options.device is not None:
        model.to(options.device)
    selected = select_modules(model, options.modules)
    if strategy in SOLVER_STRATEGIES:
        if not options.track_bias:
            raise ValueError(f"track_bias=False: only {FACTOR_STRATEGIES} leave biases out, not {strategy!r}")
        with forced_numerics(model, options) as numerics:
            solver = make_solver(model, task, loader, selected, options)
        solver.metadata["conventions"] = fit_conventions(numerics, task, solver.metadata.get("sampled_labels"), True)
        return solver
    blocks, dtype = options.blocks, options.dtype
    sampled_labels = True if options.sampled_labels is None else options.sampled_labels
    if blocks != 1 and strategy not in ("kfac", "ekfac"):
        raise ValueError(f"blocks: the block-diagonal split applies to kfac/ekfac, not {strategy!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: factors are accumulated in torch.float32 or torch.float64, got {dtype}")
    if options.eigh_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"eigh_dtype: eigendecompositions run in torch.float32 or torch.float64, got "
                         f"{options.eigh_dtype}")
    ActivationCache(options.activation_cache)  # validated before any pass
    device = model_device(model)
    if options.memory_check:  # engine.memory_plan: logged; a module or fit that cannot fit is refused before any pass
        shape = loader_shape(task, loader, options.max_examples)
        plan = plan_factor_fit(selected, options, shape.batch_size, shape.tokens, shape.masked)
        log.info("%s", plan)
        check_fits(plan, *available_memory(device, options.memory_limit))
    kind = "sampled" if sampled_labels else "loss"
    tracker = make_tracker(model, selected, options.track_bias)
    started = time.perf_counter()
    tensors: dict[str, dict[str, torch.Tensor]] = {name: {} for name in selected}
    counts: dict[str, int] = {}
    correction_generator = sampling_generator(options.seed + 1, device)  # the per-sequence pass's labels
    with evaluation_mode(model), forced_numerics(model, options) as numerics:
        with tracker.track():
            if strategy == "diagonal":
                sums: dict[str, torch.Tensor] = {}

                def add_square(name, a, s):
                    accumulate(sums, name, torch.bmm(s.transpose(1, 2), a).square_().sum(0))

                counts["sequences"] = per_sequence_pass(model, task, loader, tracker, options, kind, device,
                                                        add_square, "diagonal", correction_generator)
                check_finite(sums, "diagonal Fisher")
                for name in selected:
                    tensors[name]["diagonal"] = sums[name] / counts["sequences"]
            elif strategy in ("kfac", "ekfac"):
                cache = ActivationCache(options.activation_cache if strategy == "ekfac" else 0)
                a_sum, s_sum, n_tokens, n_seq = covariance_pass(model, task, loader, tracker, options, kind, device,
                                                                sampling_generator(options.seed, device), cache,
                                                                correction_generator)
                counts.update(tokens=n_tokens, sequences=n_seq)
                for name in selected:
                    a_cov, s_cov = a_sum.pop(name) / max(n_tokens, 1), s_sum.pop(name) / max(n_seq, 1)  # freed as used
                    _add_eigenbasis(tensors[name], a_cov, s_cov, _check_blocks(name, a_cov, s_cov, blocks),
                                    options.eigh_dtype)
                if strategy == "ekfac":
                    corrected: dict[str, torch.Tensor] = {}

                    def add_rotated(name, a, s):
                        q_a, q_s = _eigenvectors(tensors[name], blocks)
                        accumulate(corrected, name, squared_rotation_sum(a, s, q_s, q_a, options.token_rotation))

                    counts["correction_sequences"] = per_sequence_pass(model, task, loader, tracker, options, kind,
                                                                       device, add_rotated, "eigenvalue correction",
                                                                       correction_generator, cache)
                    check_finite(corrected, "eigenvalue correction")
                    for name in selected:
                        tensors[name]["eigenvalues"] = corrected[name] / counts["correction_sequences"]
    elapsed = time.perf_counter() - started
    log.info("fit_factors(%s): %d modules, %s in %.1f s", strategy, len(selected), counts, elapsed)
    metadata = fitted_metadata(model, selected, strategy, counts=counts, blocks=blocks, sampled_labels=sampled_labels,
                               max_examples=options.max_examples, dtype=str(dtype).replace("torch.", ""),
                               seed=options.seed, seconds=round(elapsed, 3), token_rotation=options.token_rotation,
                               eigh_dtype=str(options.eigh_dtype).replace("torch.", ""),
                               activation_cache=options.activation_cache,
                               conventions=fit_conventions(numerics, task, sampled_labels, options.track_bias))
    if not options.track_bias:  # the tracked gradient matrices are [out, in]: the weights only
        for shape in metadata["modules"].values():
            shape["bias"] = False
    return Factors(strategy, tensors, metadata)


def _blocks(store: Mapping[str, torch.Tensor], key: str, blocks: int) -> list[torch.Tensor]:
    """The ``blocks`` stored blocks ``key.0``, ``key.1``, ... of one module."""
    return [store[f"{key}.{k}"] for k in range(blocks)]


def _eigenvectors(store: Mapping[str, torch.Tensor], blocks: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(Q_A blocks, Q_S blocks)`` of one module's stored tensors."""
    return _blocks(store, "A_eigenvectors", blocks), _blocks(store, "S_eigenvectors", blocks)


def _check_blocks(name, a_cov, s_cov, blocks) -> int:
    smallest = min(a_cov.shape[0], s_cov.shape[0])
    if blocks > smallest:
        raise ValueError(f"blocks: {blocks} blocks do not fit module {name!r}, whose smallest factor has "
                         f"dimension {smallest}")
    return blocks


def _add_eigenbasis(store: dict, a_cov: torch.Tensor, s_cov: torch.Tensor, blocks: int,
                    eigh_dtype: torch.dtype = torch.float64) -> None:
    a_blocks, s_blocks = diagonal_blocks(a_cov, blocks), diagonal_blocks(s_cov, blocks)
    q_a, lam_a = eigendecompose(a_blocks, eigh_dtype)
    q_s, lam_s = eigendecompose(s_blocks, eigh_dtype)
    for k in range(blocks):
        store[f"A_covariance.{k}"], store[f"S_covariance.{k}"] = a_blocks[k], s_blocks[k]
        store[f"A_eigenvectors.{k}"], store[f"S_eigenvectors.{k}"] = q_a[k], q_s[k]
    store["A_eigenvalues"], store["S_eigenvalues"] = lam_a, lam_s
    store["eigenvalues"] = kfac_eigenvalues(lam_s, lam_a)
