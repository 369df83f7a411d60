"""What a command may write, checked before any work: one rule for every command's outputs.

- An output never is, contains or lies inside one of the command's inputs (``refuse_overlap``): a mask folder inside
  the image folder would be read back as images by the next call, a model file over ``boxes.csv`` would destroy it.
- An output replaces only a file that the same command wrote (``refuse_foreign``): a model file only over a model
  file, a CSV only over its own CSV; ``--overwrite`` never extends to anything else.
- A folder that a long command writes into is held by one process at a time (``hold``): a second one is refused in
  one line that says who holds it. The lock is the kernel's (``flock``), so a killed process releases it.
- Temporaries left by a killed process (``.NAME.tmp-PID``, ``.predict-HOST-PID-*``) are removed by the next call that
  holds the folder (``clear_stale``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from autoprompt.errors import InputError

log = logging.getLogger(__name__)

STALE = re.compile(r"^\..+\.tmp-(\d+)(\.\w+)?$")  # io.atomic_path's and predict's overlays' temporaries
HOST = socket.gethostname().replace("-", "_")


def resolved(path: Path | str) -> Path:
    """``path`` made absolute with its links followed, as far as it exists."""
    return Path(os.path.abspath(Path(path).expanduser())).resolve(strict=False)


def refuse_overlap(outputs: Mapping[str, Path], inputs: Mapping[str, Path | list[Path]], fix: str) -> None:
    """Refuse an output that is, contains or lies inside an input, in one line naming both and ``fix``.

    ``outputs`` and ``inputs`` map what a path is to the user (``-o``, ``--boxes``) to the path (or paths)."""
    for out_name, out in outputs.items():
        target = resolved(out)
        for in_name, paths in inputs.items():
            for path in paths if isinstance(paths, list) else [paths]:
                source = resolved(path)
                if target == source:
                    how = "is"
                elif source in target.parents:
                    how = "lies inside"
                elif target in source.parents:
                    how = "contains"
                else:
                    continue
                raise InputError(f"{out_name} {out} {how} the input {in_name} {path}; {fix}")


def refuse_foreign(path: Path, ours: Callable[[Path], bool], what: str, fix: str) -> None:
    """Refuse to replace an existing ``path`` that ``ours`` does not recognise as ``what``; a folder is never
    replaced."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the {what}, e.g. {path / 'model.pt'}")
    if path.exists() and not ours(path):
        raise InputError(f"{path}: exists and is not a {what}, so it is not replaced; {fix}")


def alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale(folder: Path, pattern: re.Pattern[str] = STALE, own_host_only: bool = False) -> list[Path]:
    """Remove the temporaries under ``folder`` that ``pattern`` matches (its first group: the writer's pid) and whose
    writer is gone. ``own_host_only``: the pattern's names carry ``HOST`` and only this machine's are judged (other
    machines may share the folder)."""
    removed = []
    if not Path(folder).is_dir():
        return removed
    names = [Path(top) / n for top, dirs, files in os.walk(folder) for n in dirs + files]  # links not followed
    for path in sorted(p for p in names if p.name.startswith(".")):
        found = pattern.match(path.name)
        if not found or alive(int(found[1])) or (own_host_only and HOST not in path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info("%s: removed %d temporaries of a killed run (%s)", folder, len(removed), removed[0].name)
    return removed


@contextlib.contextmanager
def hold(folder: Path, command: str, name: str = "autoprompt") -> Iterator[Path]:
    """Hold ``folder`` for ``command`` while the block runs: a second holder is refused in one line naming the
    first (its command, process id, machine and start time). The lock is the kernel's, on ``folder/.NAME.lock``:
    a killed holder never blocks the next call. The file is removed when the block ends (what DVC tracks in the
    folder stays the outputs alone), and so is a folder that the block made and left empty, failing."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.lock"
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing is held
        yield path
        return
    handle = _locked(path, fcntl)
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": since}))
        handle.flush()
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still held: a caller that opened it before retries (_locked)
        handle.close()
        if created and not any(folder.iterdir()):  # refused before anything was written
            folder.rmdir()


def _locked(path: Path, fcntl) -> IO[str]:
    """``path`` opened and locked for this process, emptied; a locked one refused with its holder's record. A file
    that its holder removed between this process's open and lock is opened again."""
    while True:
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            handle.close()
            raise InputError(
                f"{path.parent}: in use by {holder.get('command', 'another autoprompt process')} (pid "
                f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}); wait for "
                "it to end, or give another folder"
            ) from None
        try:
            same = os.fstat(handle.fileno()).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if same:
            handle.seek(0)
            handle.truncate()
            return handle
        handle.close()
