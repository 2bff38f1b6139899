"""Files that are never half-written (write to a temporary sibling, then rename it into place) and whose content
can be checked later (a SHA-256 recorded when they are written, compared when they are read)."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

_DEFAULT_MODE = 0o666
READ_ONLY_MODE = 0o444  # what read_only=True gives every written file: readable by all, writable and executable by none
_UMASK = os.umask(0)
os.umask(_UMASK)
_BLOCK = 1 << 20


class FileIntegrityError(ValueError):
    """A file's content is not what was written (changed in place, truncated, or unreadable); the message names
    the file."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False, read_only: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success rename it to ``path``, on error remove it.

    With ``directory=True`` the temporary path is an empty directory, and an existing directory at ``path``
    is replaced. With ``read_only=True`` the file (or every file under the directory) gets mode
    :data:`READ_ONLY_MODE` (0o444: no write, no execute bit) whatever the writer or the umask gave it; a
    directory itself stays writable by its owner, so it can still be deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and path.exists():
            shutil.rmtree(path)
        if read_only:
            for file in ([p for p in tmp.rglob("*") if p.is_file() and not p.is_symlink()] if directory else [tmp]):
                file.chmod(READ_ONLY_MODE)
        if directory or not read_only:
            tmp.chmod(_DEFAULT_MODE & ~_UMASK | (0o111 if directory else 0))  # mkstemp/mkdtemp made it private
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporaries that an earlier, killed writer of ``path`` left behind (``.<name>.*.tmp`` siblings;
    one output has one writer, so none of them can be in use). Returns what was removed."""
    path = Path(path)
    stale = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")) if path.parent.is_dir() else []
    for tmp in stale:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return stale


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (memory stays flat for large files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str, where: str, advice: str, size: int | None = None) -> None:
    """Raise :class:`FileIntegrityError` naming ``path`` unless its SHA-256 is ``expected`` (recorded in
    ``where`` when the file was written; ``size``: its size then, to tell a truncation). ``advice`` says what to do."""
    path = Path(path)
    actual = file_sha256(path)
    if actual == expected:
        return
    now = path.stat().st_size
    sized = f"; it has {now} bytes, {size} when written" if size is not None and size != now else ""
    raise FileIntegrityError(f"{path}: the file changed since it was written (SHA-256 {actual[:16]}..., "
                             f"{where} records {expected[:16]}...{sized}); {advice}")
