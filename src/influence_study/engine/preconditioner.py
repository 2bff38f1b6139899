"""The interface every curvature strategy and solver shares, and the model fingerprint that ties them to a model."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Mapping

import torch

from influence_study._version import __version__
from influence_study.engine.damping import check_damping
from influence_study.engine.tracking import module_dims, module_params


def model_fingerprint(model: torch.nn.Module, module_names) -> str:
    """A hash of the model's parameter names and shapes and of the VALUES of the tracked modules' parameters.

    Two checkpoints of the same architecture differ in their trained weights, so factors fitted on one are
    recognised as foreign on the other; hashing only the tracked weights keeps this fast for large models.
    """
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
    named = dict(model.named_modules())
    for name in sorted(module_names):  # the same modules in any order are the same fingerprint
        digest.update(name.encode())
        for p in module_params(named[name]):
            digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def fitted_metadata(model: torch.nn.Module, modules: Mapping[str, torch.nn.Module], strategy: str, **extra) -> dict:
    """The metadata every fitted preconditioner records: strategy, package version, model class and fingerprint,
    tracked module shapes, and ``extra`` (counts, options, the ``conventions`` of
    :func:`~influence_study.engine.conventions.fit_conventions`)."""
    return {
        "strategy": strategy,
        "package": "influence_study",
        "version": __version__,
        "model_class": type(model).__name__,
        "model_fingerprint": model_fingerprint(model, list(modules)),
        "modules": {name: dict(zip(("out", "in", "bias"), module_dims(m))) for name, m in modules.items()},
        **extra,
    }


class Preconditioner(ABC):
    """Applies ``(G + λI)^-1`` (or an approximation) to per-module gradient matrices.

    ``strategy`` names it; ``module_names`` are the tracked modules in order; ``metadata`` records how it was
    made (model fingerprint, counts, options). Subclasses: :class:`~influence_study.engine.factors.Factors`
    (identity, diagonal, kfac, ekfac) and the solvers of :mod:`influence_study.engine.solvers` (lissa, datainf,
    exact, and the PBRF, which computes its pairwise scores itself: :meth:`direct_pairwise`).
    """

    strategy: str
    module_names: list[str]
    metadata: dict

    @abstractmethod
    def default_damping(self) -> dict[str, float]:
        """The damping used when none is given, per module (0.1 × mean eigenvalue of the module's curvature)."""

    @abstractmethod
    def _precondition(self, grads: Mapping[str, torch.Tensor], damping: Mapping[str, float]) -> dict[str, torch.Tensor]:
        ...

    def damping_values(self, damping: float | Mapping[str, float] | None = None) -> dict[str, float]:
        """Per-module damping: the default rule for ``None``, a number for every module, or a mapping (the default
        rule for the modules it leaves out). Every given value is validated here (a positive finite number)."""
        if damping is None:
            return self.default_damping()
        if isinstance(damping, Mapping):
            unknown = sorted(set(damping) - set(self.module_names))
            if unknown:
                raise KeyError(f"damping: unknown module(s) {unknown}; tracked: {self.module_names}")
            for value in damping.values():
                check_damping(value)
            given = {k: float(v) for k, v in damping.items()}
            # the default rule only for modules the mapping leaves out (it may cost a pass over the data)
            defaults = self.default_damping() if set(self.module_names) - set(given) else {}
            return {name: given[name] if name in given else defaults[name] for name in self.module_names}
        check_damping(damping)
        return {name: float(damping) for name in self.module_names}

    def precondition(self, grads: Mapping[str, torch.Tensor], damping=None) -> dict[str, torch.Tensor]:
        """``{module: (G + λI)^-1 V}`` for gradient matrices ``V`` ``[batch, out, in(+1)]`` per module (``damping``
        as in :meth:`damping_values`)."""
        return self.precondition_with(grads, self.damping_values(damping))

    def precondition_with(self, grads: Mapping[str, torch.Tensor],
                          damping: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """:meth:`precondition` with the per-module ``damping`` that :meth:`damping_values` returned (not validated
        again: the scoring functions resolve the damping once per call and precondition batch after batch)."""
        missing = [n for n in self.module_names if n not in grads]
        if missing:
            raise KeyError(f"precondition: no gradient for module(s) {missing}")
        out = self._precondition({n: g.detach() for n, g in grads.items()}, damping)
        return {n: t.detach() for n, t in out.items()}

    def check_score_options(self, options) -> None:
        """Refuse :class:`~influence_study.engine.options.ScoreArguments` that this preconditioner cannot honour
        (``ValueError``); every option is available by default."""

    def direct_pairwise(self, query_loader, train_loader, damping: Mapping[str, float], start: int,
                        stop: int | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(scores [Q, M], training indices)`` for a preconditioner that computes influence itself instead of
        preconditioning query gradients (the PBRF, by optimisation), for the training examples
        ``start <= index < stop`` and the resolved per-module ``damping``. ``None`` (the default):
        :func:`~influence_study.pairwise_scores` preconditions the query gradients."""
        return None

    def check_model(self, model: torch.nn.Module) -> None:
        """Refuse a model other than the one this was fitted on (by :func:`model_fingerprint`)."""
        expected = self.metadata.get("model_fingerprint")
        named = dict(model.named_modules())
        absent = [n for n in self.module_names if n not in named]
        if absent:
            raise ValueError(f"{self.strategy} factors track module(s) {absent[:5]} that this model does not have: "
                             f"they were fitted on another model ({self.metadata.get('model_class')})")
        if expected is not None:
            actual = model_fingerprint(model, self.module_names)
            if actual != expected:
                raise ValueError(f"{self.strategy} factors were fitted on another model (fingerprint {expected}, "
                                 f"this model has {actual}): refit them with fit_factors on this model")
