"""simulate@<dataset>: write phantoms in a dataset's official layout (the offline demo's raw data)."""

from __future__ import annotations

import logging
from pathlib import Path

from autoprompt.console import run
from autoprompt.data.phantoms import WRITERS
from autoprompt.errors import InputError
from autoprompt.settings import load_settings
from stages import parser

log = logging.getLogger("simulate")


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--dataset", required=True)
    args.add_argument("--out", type=Path, required=True, help="folder to write the official layout into")
    args = args.parse_args(argv)
    simulate = load_settings(args.params).simulate
    section = getattr(simulate, args.dataset, None) if args.dataset in WRITERS else None
    if section is None:
        raise InputError(f"{simulate.key(args.dataset)}: no phantoms configured; give one of {sorted(WRITERS)}")
    WRITERS[args.dataset](args.out, section)
    log.info("%s phantoms written to %s", args.dataset, args.out)


if __name__ == "__main__":
    run(main)
