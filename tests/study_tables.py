"""Content hashes of a study's tables, to prove that a change of code leaves every number the study makes as it was.

A table's hash is the sha256 of its CSV text (``to_csv(index=False)``: floats written exactly, rows in the file's
order) after replacing pytest's temporary paths and dropping the columns that measure the machine rather than
the study (wall times, memory peaks).
"""

from __future__ import annotations

import hashlib
import platform
import re
from pathlib import Path

import pandas as pd
import torch

# columns that hold how long or how much memory a step took: they differ between two runs of the same study
MACHINE_COLUMNS = re.compile(r"(seconds|_time|time_|wall|rss|memory|peak|elapsed|_s$)")

# tables whose other columns are timings under names that elsewhere mean a number of the study
MACHINE_COLUMNS_OF = {"datainf-times.parquet": ("fit", "solve", "gradients", "total")}

# pytest's temporary directories (a checkpoint's path) differ between runs
TEMPORARY_PATH = re.compile(r"/[^,\s\"]*?pytest-\d+")


def table_hash(path: Path) -> str:
    """sha256 (first 16 hex digits) of one parquet or CSV table without its machine-dependent columns."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    timings = MACHINE_COLUMNS_OF.get(path.name, ())
    frame = frame[[c for c in frame.columns if not MACHINE_COLUMNS.search(str(c)) and c not in timings]]
    text = TEMPORARY_PATH.sub("<tmp>", frame.to_csv(index=False))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def study_table_hashes(root: Path) -> dict[str, str]:
    """Hash of every table under a study's output directory, keyed by its path relative to ``root``."""
    paths = sorted(p for p in root.rglob("*") if p.suffix in (".parquet", ".csv") and p.is_file()
                   and "benchmarks" not in p.relative_to(root).parts)
    return {str(p.relative_to(root)): table_hash(p) for p in paths}


def machine_fingerprint() -> str:
    """What float results depend on beside the code: the CPU, the torch build and the Python version."""
    cpu = platform.processor() or platform.machine()
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        cpu = flags.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    return f"{cpu} | torch {torch.__version__} | python {platform.python_version()}"
