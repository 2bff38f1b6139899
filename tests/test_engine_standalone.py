"""The influence engine stands alone: ``import influence_study`` needs torch (with safetensors, numpy and tqdm) and
nothing of the study, and fits and scores a plain torch model while the study's dependencies cannot be imported.

- In a subprocess, an import blocker on ``sys.meta_path`` refuses the study's dependencies; the engine then fits
  EK-FAC on a tiny MLP classifier and scores it, and the scores are checked against a dense reference written here
  without the engine (the closed-form per-example gradients of the MLP, the EK-FAC matrix
  ``kron(Q_S, Q_A) diag(Λ) kron(Q_S, Q_A)^T`` as an explicit matrix, its damped inverse by ``torch.linalg.solve``),
  as is the exact empirical-Fisher solve (the explicit dense Fisher of the same gradients). No blocked module and
  no module of the study is imported.
- The engine's source imports, at module level only, the standard library, torch, safetensors, numpy, tqdm and
  other engine modules (parsed with ``ast``), and the engine modules import each other without a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import influence_study

PACKAGE = Path(influence_study.__file__).parent
ENGINE = PACKAGE / "engine"
BLOCKED = ("snakemake", "papermill", "pandas", "transformers", "sklearn", "seaborn", "matplotlib", "jsonschema",
           "yaml", "peft", "datasets", "tokenizers", "scipy")
THIRD_PARTY = {"torch", "safetensors", "numpy", "tqdm"}

SCRIPT = textwrap.dedent('''
    import sys
    import tempfile

    BLOCKED = set(sys.argv[1].split(","))


    class Blocker:
        """Refuses the study's dependencies (a finder first on sys.meta_path)."""

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the engine must not need it")
            return None


    sys.meta_path.insert(0, Blocker())

    import torch
    import torch.nn.functional as F
    from torch import nn

    import influence_study
    from influence_study import ClassificationTask, FactorArguments, Factors, fit_factors, pairwise_scores

    torch.set_num_threads(1)
    F64 = torch.float64
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(13, 4, generator=g, dtype=F64)
    y = torch.randint(0, 3, (13,), generator=g)
    xq = torch.randn(3, 4, generator=g, dtype=F64)
    yq = torch.randint(0, 3, (3,), generator=g)
    train = [{"inputs": x[:5], "labels": y[:5]}, {"inputs": x[5:9], "labels": y[5:9]},
             {"inputs": x[9:], "labels": y[9:]}]
    queries = [{"inputs": xq, "labels": yq}]

    # --- the reference, without the engine -----------------------------------------------------------------
    w1, b1, w2, b2 = (p.detach() for p in model.parameters())
    ones = lambda n: torch.ones(n, 1, dtype=F64)  # noqa: E731


    def loss_gradients(inputs, labels):
        """{module: (a [n, in+1], s [n, out])}: inputs (a 1 appended) and d(cross-entropy)/d(output) per example;
        the per-example gradient of the loss is DW = s a^T [out, in+1] (weight, then the bias column)."""
        z = torch.tanh(inputs @ w1.T + b1)
        s2 = torch.softmax(z @ w2.T + b2, dim=1) - F.one_hot(labels, 3).double()
        s1 = (s2 @ w2) * (1 - z ** 2)
        return {"0": (torch.cat([inputs, ones(len(inputs))], 1), s1), "2": (torch.cat([z, ones(len(z))], 1), s2)}


    train_parts, query_parts = loss_gradients(x, y), loss_gradients(xq, yq)
    # per-example gradients of log p (= minus the loss gradients): what the scores differentiate
    dw = {n: -torch.einsum("no,ni->noi", s, a) for n, (a, s) in train_parts.items()}
    dq = {n: -torch.einsum("no,ni->noi", s, a) for n, (a, s) in query_parts.items()}


    def dense_scores(matrices, damping):
        """sum over modules of vec(dq)^T (M + damping I)^-1 vec(dw)."""
        total = 0
        for name, matrix in matrices.items():
            eye = torch.eye(matrix.shape[0], dtype=F64)
            solved = torch.linalg.solve(matrix + damping[name] * eye, dw[name].flatten(1).T)
            total = total + dq[name].flatten(1) @ solved
        return total


    ekfac_matrices, ekfac_damping = {}, {}
    for name, (a, s) in train_parts.items():
        _, q_a = torch.linalg.eigh(a.T @ a / len(a))
        _, q_s = torch.linalg.eigh(s.T @ s / len(s))
        lam = ((q_s.T @ dw[name] @ q_a) ** 2).mean(0)  # the corrected eigenvalues
        q = torch.kron(q_s, q_a)
        ekfac_matrices[name] = q @ torch.diag(lam.flatten()) @ q.T
        ekfac_damping[name] = 0.1 * lam.mean().item()  # the paper's rule
    fisher = {n: g.flatten(1).T @ g.flatten(1) / len(g) for n, g in dw.items()}  # dense empirical Fisher
    fisher_damping = {n: 0.1 * torch.diagonal(m).mean().item() for n, m in fisher.items()}

    # --- the engine ---------------------------------------------------------------------------------------
    task = ClassificationTask()
    factors = fit_factors(model, task, train, FactorArguments(strategy="ekfac", sampled_labels=False, dtype=F64,
                                                              progress=False))
    assert factors.module_names == ["0", "2"], factors.module_names
    scores = pairwise_scores(model, task, factors, queries, train, dtype=F64, progress=False)
    expected = dense_scores(ekfac_matrices, ekfac_damping)
    assert scores.scores.shape == (3, 13) and scores.train_indices.tolist() == list(range(13))
    assert torch.allclose(scores.scores, expected, rtol=1e-8, atol=1e-10), (scores.scores - expected).abs().max()
    for name in factors.module_names:
        assert abs(scores.metadata["damping"][name] - ekfac_damping[name]) <= 1e-10 * ekfac_damping[name]
    with tempfile.TemporaryDirectory() as tmp:  # safetensors and the engine's atomic writes
        loaded = Factors.load(factors.save(f"{tmp}/factors"), model=model)
        again = pairwise_scores(model, task, loaded, queries, train, dtype=F64, progress=False)
        assert torch.equal(again.scores, scores.scores)
    exact = fit_factors(model, task, train, strategy="exact", curvature="empirical_fisher", block_diagonal=True,
                        progress=False)
    expected = dense_scores(fisher, fisher_damping)
    assert torch.allclose(pairwise_scores(model, task, exact, queries, train, dtype=F64, progress=False).scores,
                          expected, rtol=1e-8, atol=1e-10)

    # --- nothing of the study, nothing blocked --------------------------------------------------------------
    blocked = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    assert not blocked, blocked
    study = sorted(m for m in sys.modules if m.startswith("influence_study") and m not in
                   ("influence_study", "influence_study._version") and not m.startswith("influence_study.engine"))
    assert not study, study
    print("standalone engine: ok")
''')


def test_engine_fits_and_scores_with_the_study_dependencies_blocked(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(BLOCKED)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "standalone engine: ok" in result.stdout


def _module_level_imports(body: list[ast.stmt]):
    """The import statements run when the module is imported: in its body, also inside a module-level if/try."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try)):
            blocks = [node.body, node.orelse] + ([node.finalbody] + [h.body for h in node.handlers]
                                                 if isinstance(node, ast.Try) else [])
            for block in blocks:
                yield from _module_level_imports(block)


def _imports(path: Path) -> list[tuple[ast.stmt, str, bool]]:
    """``(node, imported module, at module level)`` for every import of ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    module_level = {id(node) for node in _module_level_imports(tree.body)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node, alias.name, id(node) in module_level) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module == "influence_study.engine":  # from influence_study.engine import solvers: a submodule
                out.extend((node, f"{module}.{alias.name}", id(node) in module_level) for alias in node.names)
            elif module != "__future__":
                out.append((node, module, id(node) in module_level))
    return out


def _engine_files() -> list[Path]:
    return sorted(ENGINE.glob("*.py"))


def test_engine_imports_only_torch_and_itself_at_module_level():
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for path in _engine_files() + [PACKAGE / "__init__.py", PACKAGE / "_version.py"]:
        for node, module, module_level in _imports(path):
            top = module.partition(".")[0]
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {module}"
            if not module_level:
                problems.append(f"{where} inside a function or class")
            if top == "influence_study":
                if not (module in ("influence_study", "influence_study._version")
                        or module == "influence_study.engine" or module.startswith("influence_study.engine.")):
                    problems.append(f"{where}: outside the engine")
            elif top not in THIRD_PARTY and top not in stdlib:
                problems.append(f"{where}: not torch, safetensors, numpy, tqdm or the standard library")
    assert not problems, "\n".join(problems)


def test_engine_modules_import_each_other_without_a_cycle():
    graph = {}
    for path in _engine_files():
        name = f"influence_study.engine.{path.stem}" if path.stem != "__init__" else "influence_study.engine"
        graph[name] = {m for _, m, _ in _imports(path) if m.startswith("influence_study.engine.")}
    done, visiting = set(), []

    def visit(node):
        if node in done:
            return
        assert node not in visiting, f"import cycle: {' -> '.join(visiting[visiting.index(node):] + [node])}"
        visiting.append(node)
        for dependency in sorted(graph.get(node, ())):
            visit(dependency)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    assert "influence_study.engine.solvers" in graph and "influence_study.engine.factors" in graph
