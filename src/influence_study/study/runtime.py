"""Run-time settings shared by every step: device choice, threads, logging to a per-rule log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO

import torch

LOGGER_NAME = "influence_study"


def get_logger() -> logging.Logger:
    """The package logger (messages go to stderr, and to the rule's log file inside :func:`logged_to`)."""
    return logging.getLogger(LOGGER_NAME)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' was requested but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


def gpu_jobs(config) -> int:
    """The ``gpu`` resource a job on the model's device declares: 1 when the config's device is (or, for
    ``auto``, resolves here to) CUDA, else 0. With ``--resources gpu=1`` a local run serialises those jobs."""
    device = config["device"]
    return int(device == "cuda" or (device == "auto" and torch.cuda.is_available()))


def autocast(dtype: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Mixed precision for the config's ``dtype``: ``bfloat16`` runs matrix products in bf16 (weights and
    optimiser state stay float32); ``float32`` changes nothing."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


class _Tee:
    """A text stream that writes to two streams (the terminal and a log file)."""

    def __init__(self, first: TextIO, second: TextIO):
        self.first, self.second = first, second

    def write(self, text: str) -> int:
        self.first.write(text)
        self.second.write(text)
        return len(text)

    def flush(self) -> None:
        self.first.flush()
        self.second.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self.first, name)


@contextlib.contextmanager
def logged_to(log_path: str | os.PathLike | None, threads: int | None = None) -> Iterator[logging.Logger]:
    """Send stderr (progress bars, warnings) and the package logger to ``log_path`` as well as the terminal,
    and limit torch to ``threads`` CPU threads."""
    if threads:
        torch.set_num_threads(threads)
    logger = get_logger()
    logger.setLevel(logging.INFO)
    if log_path is None:
        yield logger
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        old_stderr = sys.stderr
        sys.stderr = _Tee(old_stderr, log_file)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        try:
            yield logger
        except BaseException:
            logger.exception("step failed")
            raise
        finally:
            logger.removeHandler(handler)
            sys.stderr = old_stderr
