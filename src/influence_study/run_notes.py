"""What the reports say about the run itself: its scale, read from the run's own tables (never the sizes of one
configuration written into a notebook), and whether it is a tiny configuration (``tiny: true``, like
``configs/ci.yaml``) whose verdicts mean nothing.

The notebooks close with :func:`scale_note` and open with :func:`tiny_note` when the workflow passes
``tiny=True``; ``influence-study summary`` prints :data:`TINY_CAVEAT`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

TINY_CAVEAT = ("This run is a tiny configuration (tiny: true, like configs/ci.yaml): its sizes only exercise every "
               "step of the study in minutes. Its numbers measure nothing, and its verdicts mean nothing about the "
               "paper's claims.")
# what the paper's runs had, for comparison (Grosse et al. 2023)
PAPER_SCALE = ("the paper's models have 810 million to 52 billion parameters and tens of layers, and its top "
               "influences are searched among millions of training sequences")


def tiny_note() -> str:
    """The warning a notebook of a tiny run opens with (Markdown)."""
    return f"**{TINY_CAVEAT}**"


def study_scale(results_dir: str | os.PathLike) -> dict:
    """The scale of the run under ``results_dir``, from its tables: training and validation documents, queries and
    their families, and per model (smallest first) its parameters, transformer layers and hidden size. Missing
    tables give ``None`` (or an empty list of models)."""
    root = Path(results_dir)
    scale: dict = {"train_documents": None, "valid_documents": None, "queries": None, "families": {}, "models": []}
    corpus = _tables(root / "corpus")
    if corpus:
        splits = pd.concat([pd.read_parquet(p, columns=["split"]) for p in corpus])["split"]
        scale["train_documents"] = int((splits == "train").sum())
        scale["valid_documents"] = int((splits == "valid").sum())
    queries = [p for p in _tables(root / "queries") if not p.stem.endswith(("-relations", "-probes"))]
    if queries:
        families = pd.concat([pd.read_parquet(p, columns=["analysis"]) for p in queries])["analysis"]
        scale["queries"] = int(len(families))
        scale["families"] = {str(k): int(v) for k, v in families.value_counts().sort_index().items()}
    learning = root / "tables" / "learning.parquet"
    if learning.is_file():
        table = pd.read_parquet(learning, columns=["model", "parameters"]).sort_values("parameters", kind="stable")
        for row in table.itertuples(index=False):
            settings = _settings(root / "models" / str(row.model) / "config.json")
            scale["models"].append({"model": str(row.model), "parameters": int(row.parameters),
                                    "layers": _setting(settings, "num_hidden_layers", "n_layer"),
                                    "width": _setting(settings, "hidden_size", "n_embd")})
    return scale


def scale_note(results_dir: str | os.PathLike, tiny: bool = False) -> str:
    """The closing caveat of scale of a notebook (Markdown): this run's documents, queries and models, against the
    paper's, and :data:`TINY_CAVEAT` for a tiny run."""
    scale = study_scale(results_dir)
    parts = []
    if scale["train_documents"] is not None:
        parts.append(f"{scale['train_documents']:,} training documents ({scale['valid_documents']:,} held out)")
    if scale["queries"] is not None:
        families = ", ".join(f"{name} {n}" for name, n in scale["families"].items())
        parts.append(f"{scale['queries']:,} queries ({families})")
    models = scale["models"]
    if models:
        sizes = [_span([m["parameters"] for m in models], "parameters", _count),
                 _span([m["layers"] for m in models], "transformer layers"),
                 _span([m["width"] for m in models], "hidden size", before=True)]
        parts.append(f"{len(models)} model{'s' * (len(models) != 1)} ({', '.join(s for s in sizes if s)})")
    text = f"**The scale of this run.** {'; '.join(parts) or 'its tables are not there'}; {PAPER_SCALE}."
    return f"{text}\n\n{tiny_note()}" if tiny else text


def _tables(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def _settings(config_json: Path) -> dict:
    return json.loads(config_json.read_text()) if config_json.is_file() else {}


def _setting(settings: dict, *names: str) -> int | None:
    value = next((settings[n] for n in names if settings.get(n) is not None), None)
    return int(value) if value is not None else None


def _span(values: list, unit: str, show=str, before: bool = False) -> str:
    """``"a to b unit"`` (``"a unit"`` when they are all equal, ``"unit a"`` with ``before``; ``""`` when none is
    known)."""
    known = sorted(v for v in values if v is not None)
    if not known:
        return ""
    span = show(known[0]) if known[0] == known[-1] else f"{show(known[0])} to {show(known[-1])}"
    return f"{unit} {span}" if before else f"{span} {unit}"


def _count(n: int) -> str:
    for size, unit in ((10**9, "billion"), (10**6, "million")):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:,}"
