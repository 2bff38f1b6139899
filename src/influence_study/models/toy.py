"""The settings of the validation against ground truth (Grosse et al. 2023, section 5.1): small models on which the
proximal Bregman response function (PBRF) can be computed, each with its training set, the training points whose
influence is estimated and the measurements f.

- ``mlp_digits``: a 2-hidden-layer MLP classifier on scikit-learn's bundled ``load_digits`` (8x8 digit images);
  f = log p(true class) of a held-out image.
- ``mlp_regression``: a 2-hidden-layer tanh MLP regressor on scikit-learn's bundled ``load_diabetes``; f = the
  Gaussian log-likelihood (up to a constant) of a held-out target.
- ``lm``: the smallest language model of the study's family, on a seeded subset of its training documents; f =
  log p(completion | prompt) of a query.

The MLPs are trained here (seeded, float64, full batch) to convergence: Adam with a cosine schedule, then L-BFGS,
on the mean training loss plus an L2 penalty. :func:`leave_one_out` retrains them without single training points.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from sklearn.datasets import load_diabetes, load_digits
from torch import nn
from tqdm import tqdm

from influence_study.engine.tasks import ClassificationTask, LanguageModelingTask, RegressionTask, Task
from influence_study.study.seeds import validation_lm_seed, validation_mlp_seed

MLP_SETTINGS = ("mlp_digits", "mlp_regression")
LM_SETTING = "lm"
SETTINGS = MLP_SETTINGS + (LM_SETTING,)
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


@dataclass
class ValidationSetting:
    """A trained model with its training set, the scored training points and the measurements.

    ``train_batches(batch_size)`` gives the whole training set as batches (what the curvature, LiSSA and the
    PBRF's Bregman term average over); ``point_batches`` hold the scored training points, whose training-set
    indices in loader order are ``point_ids`` (the columns of a score matrix); ``query_batches`` hold the
    measurements, with ids ``query_ids`` (the rows). ``n_train`` is the size of the training set.
    """

    name: str
    model: nn.Module
    task: Task
    train_batches: Callable[[int], list]
    point_batches: list
    point_ids: np.ndarray
    query_batches: list
    query_ids: np.ndarray
    n_train: int
    description: dict = field(default_factory=dict)
    mlp: "MLPProblem | None" = None  # what retraining needs (MLP settings only)


@dataclass
class MLPData:
    """Standardised float64 tensors of a train/test split (labels: long for classes, [n, 1] float targets)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_train(self) -> int:
        return len(self.x_train)


@dataclass
class MLPProblem:
    """Everything needed to retrain an MLP setting: data, task, initial weights and training options."""

    data: MLPData
    task: Task
    init_state: dict
    options: dict
    trained_state: dict | None = None

    def batch(self, keep: np.ndarray | None = None) -> dict:
        """The training set (or its rows ``keep``) as one batch for the task."""
        x, y = self.data.x_train, self.data.y_train
        if keep is not None:
            index = torch.as_tensor(np.asarray(keep), dtype=torch.long)
            x, y = x[index], y[index]
        return _batch(self.task, x, y)


def _batch(task: Task, x: torch.Tensor, y: torch.Tensor) -> dict:
    key = "labels" if isinstance(task, ClassificationTask) else "targets"
    return {"inputs": x, key: y}


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, classes: bool) -> MLPData:
    """Seeded train/test split; features (and regression targets) standardised with the training statistics."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(test_fraction * len(x))))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0)
    std = np.where(std > 0, std, 1.0)  # constant pixels of the digits stay 0
    x = (x - mean) / std
    if classes:
        y_train, y_test = torch.as_tensor(y[train], dtype=torch.long), torch.as_tensor(y[test], dtype=torch.long)
    else:
        y = (y - y[train].mean()) / y[train].std()
        y_train = torch.as_tensor(y[train], dtype=torch.float64)[:, None]
        y_test = torch.as_tensor(y[test], dtype=torch.float64)[:, None]
    return MLPData(torch.as_tensor(x[train], dtype=torch.float64), y_train,
                   torch.as_tensor(x[test], dtype=torch.float64), y_test)


def digits_data(test_fraction: float, seed: int) -> MLPData:
    """scikit-learn's bundled digits (1797 images of 8x8 pixels, 10 classes), split and standardised."""
    x, y = load_digits(return_X_y=True)
    return _split(x.astype(np.float64), y, test_fraction, seed, classes=True)


def diabetes_data(test_fraction: float, seed: int) -> MLPData:
    """scikit-learn's bundled diabetes regression set (442 patients, 10 features), split and standardised."""
    x, y = load_diabetes(return_X_y=True)
    return _split(x.astype(np.float64), y.astype(np.float64), test_fraction, seed, classes=False)


def make_mlp(d_in: int, hidden: int, d_out: int, activation: str, seed: int) -> nn.Sequential:
    """A float64 MLP with two hidden layers of width ``hidden``, initialised from ``seed`` (the global torch
    random state is left as it was)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    act = ACTIVATIONS[activation]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(d_in, hidden), act(), nn.Linear(hidden, hidden), act(),
                              nn.Linear(hidden, d_out))
    return model.double()


def training_objective(model: nn.Module, task: Task, batch: Mapping, weight_decay: float) -> torch.Tensor:
    """Mean training loss over the batch plus ``weight_decay / 2 * |θ|²`` (every parameter)."""
    n = task.num_examples(batch)
    loss = task.train_loss(task.outputs(model, batch), batch) / n
    return loss + 0.5 * weight_decay * sum((p ** 2).sum() for p in model.parameters())


def train_mlp(model: nn.Module, task: Task, batch: Mapping, steps: int, learning_rate: float, weight_decay: float,
              polish_iterations: int) -> dict:
    """Train ``model`` in place on one full batch: ``steps`` of Adam with a cosine schedule, then up to
    ``polish_iterations`` of L-BFGS (strong-Wolfe line search) to a near-stationary point. Deterministic.
    Returns the final objective and gradient norm."""
    objective = lambda: training_objective(model, task, batch, weight_decay)  # noqa: E731
    if steps > 0:
        optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
        for _ in range(steps):
            optimiser.zero_grad()
            objective().backward()
            optimiser.step()
            schedule.step()
    if polish_iterations > 0:
        lbfgs = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=polish_iterations, history_size=50,
                                  tolerance_grad=1e-12, tolerance_change=1e-16, line_search_fn="strong_wolfe")

        def closure():
            lbfgs.zero_grad()
            value = objective()
            value.backward()
            return value

        lbfgs.step(closure)
    value = objective()
    gradient = torch.autograd.grad(value, list(model.parameters()))
    model.zero_grad(set_to_none=True)
    norm = torch.sqrt(sum((g ** 2).sum() for g in gradient))
    return {"objective": float(value.detach()), "gradient_norm": float(norm)}


def measurements(model: nn.Module, task: Task, queries: Sequence[Mapping]) -> np.ndarray:
    """f of every example of the query batches, in order."""
    values = []
    with torch.no_grad():
        for batch in queries:
            for i in range(task.num_examples(batch)):
                example = {k: v[i:i + 1] for k, v in batch.items()}
                values.append(float(task.measurement(task.outputs(model, example), example)))
    return np.asarray(values)


def _choose(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``min(k, n)`` distinct indices of ``range(n)`` in random order."""
    return rng.permutation(n)[:min(k, n)]


def build_mlp_setting(name: str, section: Mapping, seed: int) -> ValidationSetting:
    """Build and train the MLP setting ``name`` (``mlp_digits`` or ``mlp_regression``) from the config's
    ``analyses.validation`` section: ``points`` random training points, ``measurements`` random test points
    (drawn from :func:`~influence_study.study.seeds.validation_mlp_seed`; the split and the initialisation use
    ``seed`` itself)."""
    options = section["mlp"]
    if name == "mlp_digits":
        data, task, d_out, activation = digits_data(options["test_fraction"], seed), ClassificationTask(), 10, \
            options["activation"]
    elif name == "mlp_regression":
        data, task, d_out, activation = diabetes_data(options["test_fraction"], seed), RegressionTask(), 1, "tanh"
    else:
        raise ValueError(f"setting: expected one of {MLP_SETTINGS}, got {name!r}")
    model = make_mlp(data.x_train.shape[1], options["hidden"], d_out, activation, seed)
    train_options = {k: options[k] for k in ("steps", "learning_rate", "weight_decay", "polish_iterations")}
    problem = MLPProblem(data, task, copy.deepcopy(model.state_dict()), train_options)
    diagnostics = train_mlp(model, task, problem.batch(), **train_options)
    model.eval()
    problem.trained_state = copy.deepcopy(model.state_dict())
    rng = np.random.default_rng(validation_mlp_seed(seed))
    points = np.sort(_choose(data.n_train, section["points"], rng))
    queries = np.sort(_choose(len(data.x_test), section["measurements"], rng))
    x, y = data.x_train, data.y_train

    def train_batches(batch_size: int) -> list:
        return [_batch(task, x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]

    point_index, query_index = torch.as_tensor(points), torch.as_tensor(queries)
    test_outputs = task.outputs(model, {"inputs": data.x_test}).detach()
    quality = (test_outputs.argmax(1) == data.y_test).double().mean() if d_out > 1 else \
        ((test_outputs - data.y_test) ** 2).mean()
    description = {
        "data": "sklearn.datasets.load_digits" if name == "mlp_digits" else "sklearn.datasets.load_diabetes",
        "architecture": f"MLP {data.x_train.shape[1]}-{options['hidden']}-{options['hidden']}-{d_out} ({activation})",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "n_train": data.n_train, "n_test": int(len(data.x_test)),
        "test_accuracy" if d_out > 1 else "test_mse": float(quality),
        **train_options, **{f"final_{k}": v for k, v in diagnostics.items()},
    }
    return ValidationSetting(
        name=name, model=model, task=task, train_batches=train_batches,
        point_batches=[_batch(task, x[point_index], y[point_index])], point_ids=points,
        query_batches=[_batch(task, data.x_test[query_index], data.y_test[query_index])], query_ids=queries,
        n_train=data.n_train, description=description, mlp=problem)


def build_lm_setting(inputs, section: Mapping, seed: int, *, model_dir: str, documents: str,
                     queries: str) -> ValidationSetting:
    """The language-model setting on ``inputs``, the loaded model, training documents and queries (a
    :class:`~influence_study.stages.influence_inputs.StudyInputs`, as ``load_study_inputs(model_dir, documents,
    queries, device=...)`` returns it; ``model_dir``, ``documents`` and ``queries`` name where they came from).

    ``section['lm']['documents']`` seeded training documents form the training set (the PBRF's Bregman term, the
    factors and LiSSA use them), ``points`` of them are scored, against ``measurements`` seeded queries (all drawn
    from :func:`~influence_study.study.seeds.validation_lm_seed`)."""
    options = section["lm"]
    rng = np.random.default_rng(validation_lm_seed(seed))
    train = np.sort(_choose(len(inputs.document_sequences), options["documents"], rng))
    points = np.sort(rng.choice(train, size=min(options["points"], len(train)), replace=False))
    chosen_queries = np.sort(_choose(len(inputs.query_sequences), options["measurements"], rng))
    if len(chosen_queries) == 0:
        raise ValueError(f"{queries}: no query to measure")
    batch_size = options["batch_size"]
    point_batches = inputs.document_batches(batch_size, points)
    query_batches = inputs.query_batches(batch_size, chosen_queries)

    def train_batches(size: int) -> list:
        return inputs.document_batches(size, train).batches

    model = inputs.model
    description = {
        "data": f"{len(train)} of {len(inputs.document_sequences)} training documents of {documents}",
        "architecture": type(model).__name__, "model_dir": str(model_dir),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "n_train": int(len(train)),
        "doc_ids": inputs.documents["doc_id"].iloc[point_batches.order].astype(str).tolist(),
        "query_ids": inputs.queries["query_id"].iloc[query_batches.order].astype(str).tolist(),
    }
    return ValidationSetting(
        name=LM_SETTING, model=model, task=LanguageModelingTask(), train_batches=train_batches,
        point_batches=point_batches.batches, point_ids=point_batches.order, query_batches=query_batches.batches,
        query_ids=query_batches.order, n_train=int(len(train)), description=description)


def leave_one_out(setting: ValidationSetting, points: Sequence[int], start: str = "init",
                  progress: bool = True) -> np.ndarray:
    """``[measurements, len(points)]``: the change of each measurement when training point ``points[j]`` (an
    index into the training set) is removed and the MLP retrained with the setting's options.

    ``start="init"`` retrains from the same initial weights with the same schedule (leave-one-out retraining);
    ``start="trained"`` starts from the trained weights and runs only the L-BFGS polish (the local response of the
    optimum, which removes the trajectory's chaos)."""
    problem = setting.mlp
    if problem is None:
        raise ValueError(f"setting {setting.name!r}: leave-one-out retraining needs an MLP setting")
    if start not in ("init", "trained"):
        raise ValueError(f"start: expected 'init' or 'trained', got {start!r}")
    baseline = measurements(setting.model, setting.task, setting.query_batches)
    model = copy.deepcopy(setting.model)
    options = dict(problem.options)
    if start == "trained":
        options["steps"] = 0
    changes = np.empty((len(baseline), len(points)))
    everything = np.arange(problem.data.n_train)
    for j, point in enumerate(tqdm(points, desc=f"leave-one-out ({start})", disable=not progress)):
        model.load_state_dict(problem.init_state if start == "init" else problem.trained_state)
        train_mlp(model, problem.task, problem.batch(np.delete(everything, int(point))), **options)
        changes[:, j] = measurements(model, setting.task, setting.query_batches) - baseline
    return changes
