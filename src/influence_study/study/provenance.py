"""Provenance of every output: config hash, input hashes and package version, in a sidecar JSON."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

from influence_study._version import __version__
from influence_study.study.io import write_json


def config_hash(config: Mapping) -> str:
    """A short, order-independent hash of a (validated) configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of every file under a directory (names and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def provenance(config: Mapping, inputs: Iterable[str | os.PathLike] = (), **extra) -> dict:
    """The provenance record of an output made from ``inputs`` under ``config``."""
    return {
        "package": "influence_study",
        "version": __version__,
        "config_hash": config_hash(config),
        "inputs": {str(p): file_hash(p) for p in inputs},
        **extra,
    }


def write_provenance(output: str | os.PathLike, config: Mapping, inputs: Iterable = (), **extra) -> Path:
    """Write ``<output>.provenance.json`` (for a directory output: ``<output>/provenance.json``)."""
    output = Path(output)
    sidecar = output / "provenance.json" if output.is_dir() else output.with_name(output.name + ".provenance.json")
    write_json(provenance(config, inputs, **extra), sidecar)
    return sidecar
