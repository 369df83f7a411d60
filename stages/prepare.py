"""prepare@<dataset>: official layout -> clipped images fitted to the square frame, label maps, tight boxes, what the
fit kept of each class, and a subject split (proportional or the authors' lists)."""

from __future__ import annotations

import logging
from pathlib import Path

from autoprompt.data import get_reader
from autoprompt.data.prepared import apply_split, prepare_cases, split_settings, write_prepared
from autoprompt.model import backbones
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

    reader = get_reader(args.dataset, settings)
    files = reader.find(args.raw, settings)
    # Preflight for the encode stage: a missing checkpoint stops the pipeline here, not after preprocessing.
    backbones.resolve_checkpoint(everything["encode"]["backbone"], everything["encode"].get("checkpoint"))
    split_settings(args.dataset, settings)  # bad split settings stop here too, before the images are read
    log.info("%s: %d cases found under %s", args.dataset, len(files), args.raw)
    fit = settings.get("fit", "crop")
    prepared = prepare_cases(reader, files, settings, int(settings["crop"]), params["on_error"], fit)
    prepared.table = apply_split(prepared.table, args.dataset, settings, int(params["seed"]))
    write_prepared(
        args.store,
        args.index,
        prepared,
        {
            "dataset": args.dataset,
            "crop": int(settings["crop"]),
            "classes": reader.classes,
            "preprocessing": reader.preprocessing(settings).as_dict(),
        },
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
