"""The ``influence-study`` command: check a config, and summarise what a study run produced.

The command belongs to the study, not to the engine: it needs the ``study`` extras
(``pip install "influence_study[study]"``). Without them it says so and exits with status 3 instead of failing
with a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The console script is installed with the engine alone (`pip install .`), while these modules need the study's
# dependencies (pandas, jsonschema, pyyaml, ...). The import is guarded, not lazy: a missing extra is reported by
# :func:`main` with the command that installs it.
try:
    import pandas as pd

    from influence_study.findings import load_findings
    from influence_study.run_notes import TINY_CAVEAT  # said of a run of a config marked `tiny: true`
    from influence_study.study.config import ConfigError, check_config_file, load_config
except ImportError as _error:  # exercised in a subprocess by tests/test_cli.py
    if (_error.name or "").startswith("influence_study"):
        raise  # a module of the package itself is broken: not a missing extra
    STUDY_IMPORT_ERROR: ImportError | None = _error
else:
    STUDY_IMPORT_ERROR = None

INSTALL_HINT = 'pip install "influence_study[study]"'
MISSING_EXTRAS_STATUS = 3


def _check_config(args: argparse.Namespace) -> int:
    config, warnings = check_config_file(args.config)
    for warning in warnings:
        print(f"influence-study: warning: {warning}", file=sys.stderr)
    print(f"{args.config}: valid ({len(config['models'])} models, corpus {config['corpus']['name']!r}, "
          f"outputs under {config['output_dir']}/)")
    return 0


def _summary(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    root = Path(config["output_dir"])
    if not root.exists():
        print(f"nothing produced yet: {root}/ does not exist", file=sys.stderr)
        return 1
    if config["tiny"]:
        print(f"NOTE: {TINY_CAVEAT}\n")
    print(f"Study outputs under {root}/")
    for sub in ("corpus", "queries", "tokenizer", "models", "evaluation", "factors", "candidates", "scores", "tables",
                "figures", "analyses", "reports/explorer", "reports/notebooks", "logs"):
        path = root / sub
        if path.exists():
            entries = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
            print(f"  {sub + '/':<12} {', '.join(entries)}")
    docs = root / "corpus" / f"{config['corpus']['name']}.parquet"
    if docs.exists():
        frame = pd.read_parquet(docs, columns=["split", "family"])
        print("\nCorpus documents by family (train split):")
        print(frame[frame.split == "train"].groupby("family").size().to_string())
    table = root / "tables" / "learning.csv"
    if table.exists():
        learning = pd.read_csv(table)
        columns = [c for c in ("model", "parameters", "train_seconds", "heldout_loss", "fact_accuracy_well_seen",
                               "n_facts_well_seen") if c in learning]
        print(f"\nLearning table ({table}):")
        print(learning[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        scratch = learning[learning["source"] == "scratch"].sort_values("parameters")
        if len(scratch) >= 2:
            falling = bool(scratch["heldout_loss"].is_monotonic_decreasing)
            print(f"\nheld-out loss falls with size: {'yes' if falling else 'NO'}")
            best = scratch.iloc[-1]
            if pd.notna(best.get("fact_accuracy_well_seen")):  # a corpus of one's own has no facts
                print(f"largest model ({best['model']}) completes {best['fact_accuracy_well_seen']:.1%} of the "
                      f"facts seen at least {config['evaluation']['min_exposures']} times")
    recall = root / "tables" / "bm25_recall.csv"
    if recall.exists():
        frame = pd.read_csv(recall)
        table = frame.pivot_table(index=["model", "strategy"], columns="k", values="mean", sort=False)
        print(f"\nShare of the unfiltered top-{int(frame['top'].iloc[0])} that BM25's top-k holds ({recall}):")
        print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    if (root / "reports" / "findings.md").exists():
        _print_findings(root)
        if config["tiny"]:
            print(f"\nNOTE: {TINY_CAVEAT}")
    return 0


def _print_findings(root: Path) -> None:
    items = load_findings(sorted((root / "analyses").glob("*.json")))
    print(f"\nFindings ({root / 'reports' / 'findings.md'}): verdict per finding of the paper (v2 interval rules; "
          f"v1 point rules in brackets)")
    for item in items:
        print(f"  {item.verdict_v2:<15} [{item.verdict}] {item.analysis}: {item.claim}")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (subcommands ``check-config`` and ``summary``)."""
    parser = argparse.ArgumentParser(prog="influence-study", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate a study config and report the first bad key (and "
                                                     "warn of settings that do nothing)")
    check.add_argument("config", help="path to a YAML config (e.g. config.yaml)")
    check.set_defaults(run=_check_config)
    summary = commands.add_parser("summary", help="list what a study run produced and its learning table")
    summary.add_argument("config", nargs="?", default="config.yaml", help="the config the study ran with")
    summary.set_defaults(run=_summary)
    return parser


def missing_extras_message(error: ImportError) -> str:
    """The message of the command when the study's dependencies are not installed (``error`` says which)."""
    missing = f"'{error.name}'" if error.name else str(error)
    return (f"influence-study: the study's dependencies are not installed (cannot import {missing}); "
            f"the command needs the study extras: {INSTALL_HINT}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``influence-study`` console script. Returns the exit status: 0 on success, 2 for an
    invalid config, 3 when the study extras are missing (see :func:`missing_extras_message`)."""
    args = build_parser().parse_args(argv)
    if STUDY_IMPORT_ERROR is not None:
        print(missing_extras_message(STUDY_IMPORT_ERROR), file=sys.stderr)
        return MISSING_EXTRAS_STATUS
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"influence-study: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
