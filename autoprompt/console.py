"""How every command and stage meets its user: log lines with times, and a bad input as one line, exit status 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from autoprompt.errors import InputError

log = logging.getLogger("autoprompt")


def run(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run ``main``; an ``InputError`` ends it with its one-line message and exit status 2."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        main(argv)
    except InputError as error:
        log.error("%s", error)
        sys.exit(2)
