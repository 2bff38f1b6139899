"""Run-time settings shared by every step: threads and logging to a per-rule log file.

No torch here (the device helpers are in :mod:`influence_study.study.devices`), so that a step that uses none (an
analysis of tables, a figure, the findings report) does not pay for importing it (about 1.3 CPU-seconds per job).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO

LOGGER_NAME = "influence_study"


def get_logger() -> logging.Logger:
    """The package logger (messages go to stderr, and to the rule's log file inside :func:`logged_to`)."""
    return logging.getLogger(LOGGER_NAME)


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
    and limit torch to ``threads`` CPU threads: now if torch is imported, through ``OMP_NUM_THREADS`` if it is
    imported later (torch reads it when it starts)."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
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
