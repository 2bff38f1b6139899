"""Steps of the reports: the executed analysis notebooks and ``reports/findings.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from influence_study.findings import write_findings_report
from influence_study.notebooks import execute_notebook
from influence_study.run_notes import TINY_CAVEAT
from influence_study.study.runtime import get_logger


def run_notebook(config: Mapping, notebook: str, executed: str, html: str, **analysis_files) -> None:
    """Step of the ``notebook`` rule: the notebook runs with ``results_dir`` (the study's output directory, absolute),
    ``seed`` and ``tiny`` (the config's mark of a tiny configuration, whose verdicts the notebook says mean nothing)
    as parameters; it reads the ``analysis_files`` itself (they are inputs only for the workflow)."""
    get_logger().info("executing %s", notebook)
    execute_notebook(notebook, executed, html, {"results_dir": str(Path(config["output_dir"]).resolve()),
                                                "seed": config["seed"], "tiny": bool(config["tiny"])})


def findings_report(config: Mapping, summaries: Sequence[str], report: str) -> None:
    """Step of the ``findings`` rule: ``reports/findings.md`` from every analysis summary
    (:func:`influence_study.findings.write_findings_report`), opening with the tiny-configuration caveat when the
    config is marked ``tiny``."""
    write_findings_report(summaries, report, [m["name"] for m in config["models"]],
                          caveat=TINY_CAVEAT if config["tiny"] else "")
