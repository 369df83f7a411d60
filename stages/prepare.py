"""prepare@<dataset>: official layout -> clipped, cropped images, label maps, tight boxes and a subject split."""

from __future__ import annotations

import logging
from pathlib import Path

from autoprompt import backbones
from autoprompt.datasets import get_reader
from autoprompt.prepared import prepare_cases, split_table, write_prepared
from autoprompt.stage import load_params, parser, run

log = logging.getLogger("prepare")


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--dataset", required=True)
    args.add_argument("--raw", type=Path, required=True, help="the dataset's official layout")
    args.add_argument("--store", type=Path, required=True, help="output Zarr store")
    args.add_argument("--index", type=Path, required=True, help="output CSV index (kept in git)")
    args = args.parse_args(argv)
    everything = load_params(args.params)
    params = everything["prepare"]
    settings = params[args.dataset]

    reader = get_reader(args.dataset)
    files = reader.find(args.raw, settings)
    # Preflight for the encode stage: a missing checkpoint stops the pipeline here, not after preprocessing.
    backbones.resolve_checkpoint(everything["encode"]["backbone"], everything["encode"].get("checkpoint"))
    log.info("%s: %d cases found under %s", args.dataset, len(files), args.raw)
    prepared = prepare_cases(reader, files, settings, int(settings["crop"]), params["on_error"])
    prepared.table["split"] = split_table(prepared.table, settings["split"], int(params["seed"]))
    write_prepared(
        args.store,
        args.index,
        prepared,
        {"dataset": args.dataset, "crop": int(settings["crop"]), "classes": reader.classes},
    )
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
