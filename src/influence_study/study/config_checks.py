"""The checks of a study config that look beyond its own text: numbers that are not finite, an output directory
that cannot be one, a corpus directory with nothing to read, a query rank that approximates nothing, and hub ids
that can be neither found in the local Hugging Face cache nor downloaded.

Each function returns ``(key, message)`` pairs (the key as :mod:`influence_study.study.config` names it, e.g.
``models[1].checkpoint``); :mod:`~influence_study.study.config` turns them into errors or warnings.
"""

from __future__ import annotations

import json
import math
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, Mapping

import huggingface_hub as hub
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import constants as hub_constants

# the suffixes of the files a directory corpus is read from (corpus.loaders reads this table too)
CORPUS_SUFFIXES = {"text": (".txt",), "jsonl": (".jsonl", ".json"), "parquet": (".parquet",)}
# architectures whose tracked modules' shapes follow from d_model and d_mlp, and whether their linear maps have a bias
_BIAS = {"gpt2": True, "gpt_neox": True, "llama": False}
_TRUE = {"1", "on", "yes", "true"}
_BLOCK = 1 << 16
PROBE_TIMEOUT_S = 3.0


def non_finite_numbers(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, float]]:
    """``(key path, value)`` of every NaN or infinite number in a raw config (YAML ``.nan``, ``.inf``)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from non_finite_numbers(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from non_finite_numbers(item, (*path, index))


def output_dir_problem(output_dir: str) -> str | None:
    """Why ``output_dir`` cannot hold the outputs (it, or a directory above it, is an existing non-directory)."""
    path = Path(output_dir)
    for where in (path, *path.parents):
        if where.exists():
            if where.is_dir():
                return None
            what = "is" if where == path else f"lies under {where}, which is"
            return (f"{path} {what} an existing file, not a directory (every output of the study is written under "
                    f"output_dir); choose another output_dir or move the file away")
    return None


def corpus_problem(source: str, path: str) -> str | None:
    """Why a local ``text``/``jsonl``/``parquet`` corpus at ``path`` gives no document: a directory without files
    of the format at its top level, or files that are all empty (whitespace only, for text and JSON Lines; no row,
    for parquet)."""
    suffixes = CORPUS_SUFFIXES.get(source)
    location = Path(path)
    if suffixes is None or not location.exists():
        return None
    if location.is_dir():
        files = sorted(p for p in location.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            return (f"directory {location} has no {source} files (a {source} corpus is read from the top-level "
                    f"files ending in {', '.join(suffixes)})")
    else:
        files = [location]
    if any(_has_content(source, file) for file in files):
        return None
    which = f"every one of its {len(files)} {source} file(s)" if location.is_dir() else "the file"
    return f"{location}: {which} is empty, so the corpus has no document"


def _has_content(source: str, file: Path) -> bool:
    if source == "parquet":
        try:
            return pq.read_metadata(file).num_rows > 0
        except (pa.ArrowException, OSError):  # not parquet at all: the corpus loader names the file and the problem
            return True
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            if block.decode("utf-8", errors="ignore").strip():
                return True
    return False


def gradient_rank(entry: Mapping, modules) -> int | None:
    """The largest rank a tracked gradient of model ``entry`` can have: ``min(out, in + bias)`` of its largest
    tracked module (the default MLP matrices), or with ``modules`` chosen ``d_model + bias``, a bound for any
    linear map of these architectures (each has ``d_model`` on one side). None when the shapes are unknown (a
    checkpoint whose ``config.json`` is neither local nor cached, or of another architecture)."""
    sizes = _sizes(entry)
    if sizes is None:
        return None
    architecture, d_model, d_mlp = sizes
    bias = int(_BIAS[architecture])
    if modules is not None:
        return d_model + bias
    return max(min(d_mlp, d_model + bias), min(d_model, d_mlp + bias))


def _sizes(entry: Mapping) -> tuple[str, int, int] | None:
    checkpoint = entry.get("checkpoint")
    if checkpoint is None:
        d_model = entry["d_model"]
        return entry["architecture"], d_model, entry.get("d_mlp") or 4 * d_model  # as models.build builds them
    local = Path(checkpoint) / "config.json"
    found = str(local) if local.is_file() else hub.try_to_load_from_cache(str(checkpoint), "config.json",
                                                                             cache_dir=_hub_cache())
    if not isinstance(found, str):
        return None
    try:
        config = json.loads(Path(found).read_text(encoding="utf-8"))
        architecture = config["model_type"]
        d_model = config.get("n_embd") or config.get("hidden_size")
        d_mlp = config.get("n_inner") or config.get("intermediate_size") or 4 * d_model
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if architecture not in _BIAS or not isinstance(d_model, int) or not isinstance(d_mlp, int):
        return None
    return architecture, d_model, d_mlp


def hub_problems(config: Mapping) -> list[tuple[str, str]]:
    """``(key, message)`` for every hub id of ``config`` (a ``checkpoint`` that is not a local path, a hub dataset
    as ``corpus.path``) that is not in the local Hugging Face cache while the hub cannot be reached (offline mode,
    or no connection). Nothing is downloaded; the network is probed only when something is missing."""
    wanted = []  # (key, repo id, repo type, what)
    for i, entry in enumerate(config["models"]):
        checkpoint = entry.get("checkpoint")
        if checkpoint is not None and not Path(checkpoint).exists():
            wanted.append((f"models[{i}].checkpoint", str(checkpoint), "model", f"the checkpoint of model "
                                                                                 f"{entry['name']!r}"))
    corpus = config["corpus"]
    if corpus["source"] == "hf_dataset" and corpus.get("path") and not Path(corpus["path"]).exists():
        wanted.append(("corpus.path", str(corpus["path"]), "dataset", "the corpus dataset"))
    missing = [item for item in wanted if not _cached(item[1], item[2])]
    if not missing:
        return []
    problems, unreachable = [], []  # the network is probed at most once
    for key, repo, kind, what in missing:
        reason = _offline_reason(kind)
        if reason is None:
            if not unreachable:
                unreachable.append(_unreachable_reason())
            reason = unreachable[0]
        if reason is None:
            continue  # the hub is reachable: the job downloads it
        flag = " --repo-type dataset" if kind == "dataset" else ""
        problems.append((key, f"{repo!r} ({what}) is a hub id that is not in the local Hugging Face cache "
                              f"({_hub_cache()}) and the hub cannot be reached ({reason}); download it where the "
                              f"hub is reachable (`hf download {repo}{flag}`), point HF_HUB_CACHE at a "
                              f"cache that has it, or name a local directory instead"))
    return problems


def _hub_cache() -> str:
    """The hub cache, as huggingface_hub resolves it (read now: the environment may have changed since import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return str(hub_constants.HF_HUB_CACHE)


def _cached(repo: str, kind: str) -> bool:
    if kind == "model":
        return isinstance(hub.try_to_load_from_cache(repo, "config.json", cache_dir=_hub_cache()), str)
    try:
        hub.snapshot_download(repo, repo_type="dataset", cache_dir=_hub_cache(), local_files_only=True)
        return True
    except (OSError, ValueError):
        pass
    # datasets' own cache of a prepared dataset (what load_dataset reuses offline)
    home = os.environ.get("HF_HOME") or str(hub_constants.HF_HOME)
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(home) / "datasets")
    return (datasets_cache / repo.replace("/", "___")).is_dir()


def _offline_reason(kind: str) -> str | None:
    names = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE" if kind == "model" else "HF_DATASETS_OFFLINE"]
    for name in names:
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return f"{name}={os.environ[name]}"
    return "HF_HUB_OFFLINE is set (huggingface_hub read it at import)" if hub_constants.HF_HUB_OFFLINE else None


def _unreachable_reason() -> str | None:
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or hub_constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme != "http" else 80)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"no connection to {host}:{port}: {err}"
    return None
