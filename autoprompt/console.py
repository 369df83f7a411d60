"""How every command and stage meets its user: log lines with times, and a bad input, or a file system that refuses
a write, as one line with exit status 2; Ctrl-C as one line with status 130."""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Callable

from autoprompt.errors import InputError

log = logging.getLogger("autoprompt")

FIXES = {  # what to do about a file system's refusal
    errno.ENOSPC: "the disk is full: free some space and run again (finished work is kept)",
    errno.EDQUOT: "the disk quota is used up: free some space and run again (finished work is kept)",
    errno.EACCES: "no permission: write to a folder of yours, or change its permissions",
    errno.EPERM: "no permission: write to a folder of yours, or change its permissions",
    errno.EROFS: "a read-only file system: write somewhere else",
    errno.ENOTDIR: "a file stands where a folder is needed: move it, or write somewhere else",
    errno.EISDIR: "a folder stands where a file is needed: move it, or give a file name",
    errno.ENOENT: "not found: check the path",
    errno.EIO: "free some space (or check the disk) and run again; the file that stood there is kept",
}


def describe(error: OSError) -> str:
    """An ``OSError`` as one line: the path, what the system said, and what to do."""
    where = error.filename or "a file"
    fix = FIXES.get(error.errno, "check the path and the disk")
    return f"{where}: {error.strerror or error.__class__.__name__}; {fix}"


def run(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run ``main``; an ``InputError`` or an ``OSError`` ends it with one line and exit status 2, Ctrl-C with one
    line and status 130 (every output is whole or absent, so the same command resumes)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        main(argv)
    except InputError as error:
        log.error("%s", error)
        sys.exit(2)
    except OSError as error:
        log.error("%s", describe(error))
        sys.exit(2)
    except KeyboardInterrupt:
        log.error("interrupted; what was finished is kept, and the same command goes on from there")
        sys.exit(130)
