"""simulate@<dataset>: write phantoms in a dataset's official layout (the offline demo's raw data)."""

from __future__ import annotations

import logging
from pathlib import Path

from autoprompt.data.phantoms import WRITERS
from autoprompt.errors import InputError
from autoprompt.stage import load_params, parser, run

log = logging.getLogger("simulate")


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--dataset", required=True)
    args.add_argument("--out", type=Path, required=True, help="folder to write the official layout into")
    args = args.parse_args(argv)
    if args.dataset not in WRITERS:
        raise InputError(f"{args.params}: no phantoms for dataset {args.dataset!r}; use one of {sorted(WRITERS)}")
    WRITERS[args.dataset](args.out, load_params(args.params)["simulate"][args.dataset])
    log.info("%s phantoms written to %s", args.dataset, args.out)


if __name__ == "__main__":
    run(main)
