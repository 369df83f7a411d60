"""Files: whole-or-nothing writes (outputs appear complete under their final name, or not at all) and hashes."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write a file or folder into; move it into place on success.

    On failure the temporary is removed and whatever stood at ``path`` before is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        previous = None
        if path.is_dir():  # a folder cannot be replaced in one step: move it aside first
            previous = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(previous)
        os.replace(tmp, path)
        if previous is not None:
            _remove(previous)
    finally:
        _remove(tmp)


def save_torch(record: object, path: Path) -> None:
    """``torch.save`` of ``record`` to ``path``, whole or not at all, read back before it takes its name. A write
    that fails (a full disk: torch's writer says so as a RuntimeError, or it leaves a short file) is an ``OSError``
    naming ``path``; whatever stood there is kept."""
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(record, tmp)
            torch.load(tmp, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError) as error:
            reason = str(error).splitlines()[0][:80] if str(error) else error.__class__.__name__
            raise OSError(errno.EIO, f"not written whole ({reason}; is the disk full?)", str(path)) from None


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read once per path, size and modification time (checkpoints are hashed by several
    steps of one process: the store's identity, the converted encoder's name, predict's check)."""
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
