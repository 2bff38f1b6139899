"""Executed notebooks: run an analysis notebook with papermill on a study's outputs and render it to HTML."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import nbformat
import papermill
from nbconvert import HTMLExporter

from influence_study.study.io import atomic_path

KERNEL = "python3"
# the kernel's own log, on the job's console: without this every run prints ipykernel's warning that a local kernel
# talks over TCP without encryption, and often an error that the interrupt of its shutdown was caught. A cell's error
# reaches papermill anyway (it raises), and a kernel that dies raises too.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


def execute_notebook(notebook: str | os.PathLike, executed: str | os.PathLike, html: str | os.PathLike,
                     parameters: Mapping, progress: bool = False) -> None:
    """Execute ``notebook`` with papermill (its ``parameters`` cell overridden by ``parameters``), save the executed
    notebook to ``executed`` and an HTML rendering (nbconvert, code shown) to ``html``. A cell that raises makes
    this raise papermill's ``PapermillExecutionError`` naming the cell, and nothing is written under either name."""
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook {notebook} does not exist")
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / notebook.name
        papermill.execute_notebook(str(notebook), str(run), parameters=dict(parameters), kernel_name=KERNEL,
                                   progress_bar=progress, cwd=str(notebook.parent), language="python",
                                   extra_arguments=KERNEL_ARGUMENTS)
        body, _ = HTMLExporter().from_notebook_node(nbformat.read(run, as_version=4))
        with atomic_path(html) as tmp:
            tmp.write_text(body, encoding="utf-8")
        with atomic_path(executed) as tmp:
            shutil.copyfile(run, tmp)

