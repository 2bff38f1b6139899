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

from influence_study.engine.curvature import (diagonal_blocks, eigenbasis_precondition, eigendecompose,
                                              kfac_eigenvalues, rotate)
from influence_study.engine.damping import mean_damping
from influence_study.engine.files import FileIntegrityError, atomic_path, check_sha256, file_sha256
from influence_study.engine.options import (FACTOR_STRATEGIES, SOLVER_STRATEGIES, STRATEGIES, FactorArguments,
                                            check_strategy_options, resolve_options)
from influence_study.engine.passes import backward_gradients, check_finite, iterate, model_device, sampling_generator
from influence_study.engine.preconditioner import Preconditioner, fitted_metadata
from influence_study.engine.solvers import make_solver
from influence_study.engine.tasks import Task
from influence_study.engine.tracking import ModuleTracker, evaluation_mode, select_modules

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
    shapes, how many sequences and tokens were used, and the options.
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


def _covariance_pass(model, task, loader, tracker, options: FactorArguments, kind: str,
                     device) -> tuple[dict, dict, int, int]:
    """Sums of ``a a^T`` over real tokens and of ``s s^T`` over tokens, with token and sequence counts."""
    dtype = options.dtype
    a_sum: dict[str, torch.Tensor] = {}
    s_sum: dict[str, torch.Tensor] = {}
    n_tokens = n_seq = 0
    generator = sampling_generator(options.seed, device)
    for step in iterate(loader, task, device, "fit_factors(loader)", options.max_examples,
                        progress=options.progress, desc="covariances"):
        backward_gradients(model, task, tracker, step.batch, kind, generator)
        mask = task.token_mask(step.batch)
        for name in tracker.modules:
            record = tracker._get(name)
            a, s = record.a.to(dtype), record.s.to(dtype)
            if mask is not None and mask.shape == a.shape[:2]:
                weight = mask.to(dtype).unsqueeze(-1)
                a = a * weight
                s = s * weight
            a2, s2 = a.reshape(-1, a.shape[-1]), s.reshape(-1, s.shape[-1])
            a_sum[name] = a_sum.get(name, 0) + a2.T @ a2
            s_sum[name] = s_sum.get(name, 0) + s2.T @ s2
        n_tokens += int(mask.sum()) if mask is not None and mask.dim() == 2 else step.size * _tokens(tracker)
        n_seq += step.size
    check_finite(a_sum, "activation covariance")
    check_finite(s_sum, "output-gradient covariance")
    return a_sum, s_sum, n_tokens, n_seq


def _tokens(tracker) -> int:
    record = next(iter(tracker.captured.values()))
    return record.a.shape[1]


def _per_sequence_pass(model, task, loader, tracker, options: FactorArguments, kind: str, device, update,
                       desc) -> int:
    """Call ``update(name, DW [B, out, in])`` with per-sequence pseudo-gradients of every batch."""
    n_seq = 0
    generator = sampling_generator(options.seed + 1, device)
    for step in iterate(loader, task, device, "fit_factors(loader)", options.max_examples,
                        progress=options.progress, desc=desc):
        backward_gradients(model, task, tracker, step.batch, kind, generator)
        for name in tracker.modules:  # one module at a time: peak memory is one module's [B, out, in]
            update(name, tracker._get(name).per_example_gradient(options.dtype))
        n_seq += step.size
    return n_seq


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
        return make_solver(model, task, loader, selected, options)
    blocks, dtype = options.blocks, options.dtype
    sampled_labels = True if options.sampled_labels is None else options.sampled_labels
    if blocks != 1 and strategy not in ("kfac", "ekfac"):
        raise ValueError(f"blocks: the block-diagonal split applies to kfac/ekfac, not {strategy!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: factors are accumulated in torch.float32 or torch.float64, got {dtype}")
    device = model_device(model)
    kind = "sampled" if sampled_labels else "loss"
    tracker = ModuleTracker(model, selected)
    started = time.perf_counter()
    tensors: dict[str, dict[str, torch.Tensor]] = {name: {} for name in selected}
    counts: dict[str, int] = {}
    with evaluation_mode(model):
        with tracker.track():
            if strategy == "diagonal":
                sums: dict[str, torch.Tensor] = {}

                def add_square(name, grad):
                    sums[name] = sums.get(name, 0) + (grad ** 2).sum(0)

                counts["sequences"] = _per_sequence_pass(model, task, loader, tracker, options, kind, device,
                                                          add_square, "diagonal")
                check_finite(sums, "diagonal Fisher")
                for name in selected:
                    tensors[name]["diagonal"] = sums[name] / counts["sequences"]
            elif strategy in ("kfac", "ekfac"):
                a_sum, s_sum, n_tokens, n_seq = _covariance_pass(model, task, loader, tracker, options, kind, device)
                counts.update(tokens=n_tokens, sequences=n_seq)
                for name in selected:
                    a_cov, s_cov = a_sum[name] / max(n_tokens, 1), s_sum[name] / max(n_seq, 1)
                    _add_eigenbasis(tensors[name], a_cov, s_cov, _check_blocks(name, a_cov, s_cov, blocks))
                if strategy == "ekfac":
                    corrected: dict[str, torch.Tensor] = {}

                    def add_rotated(name, grad):
                        q_a, q_s = _eigenvectors(tensors[name], blocks)
                        corrected[name] = corrected.get(name, 0) + (rotate(grad, q_s, q_a) ** 2).sum(0)

                    counts["correction_sequences"] = _per_sequence_pass(model, task, loader, tracker, options, kind,
                                                                        device, add_rotated, "eigenvalue correction")
                    check_finite(corrected, "eigenvalue correction")
                    for name in selected:
                        tensors[name]["eigenvalues"] = corrected[name] / counts["correction_sequences"]
    elapsed = time.perf_counter() - started
    log.info("fit_factors(%s): %d modules, %s in %.1f s", strategy, len(selected), counts, elapsed)
    metadata = fitted_metadata(model, selected, strategy, counts=counts, blocks=blocks, sampled_labels=sampled_labels,
                               max_examples=options.max_examples, dtype=str(dtype).replace("torch.", ""),
                               seed=options.seed, seconds=round(elapsed, 3))
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


def _add_eigenbasis(store: dict, a_cov: torch.Tensor, s_cov: torch.Tensor, blocks: int) -> None:
    a_blocks, s_blocks = diagonal_blocks(a_cov, blocks), diagonal_blocks(s_cov, blocks)
    q_a, lam_a = eigendecompose(a_blocks)
    q_s, lam_s = eigendecompose(s_blocks)
    for k in range(blocks):
        store[f"A_covariance.{k}"], store[f"S_covariance.{k}"] = a_blocks[k], s_blocks[k]
        store[f"A_eigenvectors.{k}"], store[f"S_eigenvectors.{k}"] = q_a[k], q_s[k]
    store["A_eigenvalues"], store["S_eigenvalues"] = lam_a, lam_s
    store["eigenvalues"] = kfac_eigenvalues(lam_s, lam_a)
