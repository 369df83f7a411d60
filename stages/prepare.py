"""prepare@<dataset>: official layout -> clipped images fitted to the square frame, label maps, tight boxes, what the
fit kept of each class, and a subject split (proportional or the authors' lists)."""

from __future__ import annotations

import logging
from pathlib import Path

from autoprompt.console import run
from autoprompt.data.prepare import prepare_dataset
from autoprompt.data.prepared import write_prepared
from autoprompt.model import checkpoints
from autoprompt.settings import load_settings
from stages import parser

log = logging.getLogger("prepare")


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--dataset", required=True)
    args.add_argument("--raw", type=Path, required=True, help="the dataset's official layout")
    args.add_argument("--store", type=Path, required=True, help="output Zarr store")
    args.add_argument("--index", type=Path, required=True, help="output CSV index (kept in git)")
    args = args.parse_args(argv)
    settings = load_settings(args.params)
    prepare, encode = settings.prepare, settings.encode
    # Preflight for the encode stage: a missing checkpoint stops the pipeline here, not after preprocessing.
    checkpoints.resolve_checkpoint(encode.backbone, encode.checkpoint, encode.key("checkpoint"))
    section = prepare.dataset(args.dataset)
    prepared, attrs = prepare_dataset(args.dataset, section, args.raw, prepare.seed, prepare.on_error)
    write_prepared(args.store, args.index, prepared, attrs)
    counts = prepared.table.groupby("split")["subject"].agg(["size", "nunique"])
    log.info(
        "%s: wrote %d images (%s); skipped %d bad cases",
        args.dataset,
        len(prepared.table),
        ", ".join(f"{s}: {r['size']} images of {r['nunique']} subjects" for s, r in counts.iterrows()),
        len(prepared.skipped),
    )


if __name__ == "__main__":
    run(main)
