"""report: the paper's Table 1 with our rows beside it (metrics/table.md), our surface metrics and misses
(metrics/table_surface.md) and a figure of the Dice numbers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from autoprompt.console import run
from autoprompt.errors import InputError
from autoprompt.evaluation import figures
from autoprompt.evaluation.report import bar_rows, build_table, headline, surface_table, to_markdown
from autoprompt.io import atomic_path, write_text
from autoprompt.settings import load_settings
from stages import parser

log = logging.getLogger("report")


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--metrics", type=Path, required=True, help="folder holding <task>.json")
    args.add_argument("--table", type=Path, required=True, help="markdown table to write")
    args.add_argument("--surface", type=Path, required=True, help="markdown table of surface metrics to write")
    args.add_argument("--figure", type=Path, required=True, help="PNG bar chart to write")
    args = args.parse_args(argv)
    settings = load_settings(args.params)
    columns = {task: spec.column or task for task, spec in settings.tasks.items()}
    metrics = {}
    for task in columns:
        path = args.metrics / f"{task}.json"
        if not path.is_file():
            raise InputError(f"{path}: metrics of task {task} not found; run its evaluate stage first (dvc repro)")
        metrics[task] = json.loads(path.read_text())
    backbone, shots = settings.encode.backbone, settings.train.shots
    recipes = list(settings.train.recipe)
    select = settings.train.select
    note = (
        f"Bold rows are this pipeline's ({backbone}, params.yaml, head of the {select} epoch); the others are the "
        "paper's. ± is the std over runs (subsets x seeds) for a prompt-module row, and over test images for the "
        "tight-box prompt and for the ensembles (one predictor each: the runs' mean probability, thresholded once). "
        "'–' marks a task not run here. First the rows to compare: the tight box, the paper's few-shot row beside our "
        "best recipe's ensemble re-prompted, and our best baseline trained on a few masks beside the paper's; every "
        "row below."
    )
    table = build_table(metrics, columns, recipes, backbone, shots)
    write_text(args.table, to_markdown(table, "Table 1: test Dice (%)", note, headline(table)))
    tolerance = next(iter(metrics.values()))["nsd_tolerance_mm"]
    surface_note = (
        f"This pipeline's rows ({backbone}): normalised surface Dice (%) at a tolerance of {tolerance:g} mm, the "
        "95th-percentile Hausdorff distance (mm; over the images where both masks are non-empty) and, for slices of "
        "volumes, Dice (%) per patient with the slices stacked. ± as in Table 1. Misses: the test images under 50 "
        "Dice, a user's to find and redraw, and of those the empty masks where the reference is not; for a row of "
        "runs, the mean count per run. 'whole': the test volumes as users have them, every slice (those without "
        "the structure too), scored per volume; false slices have a mask where the reference is empty, missed "
        "slices none where it is not (docs/volumes.md: Whole volumes)."
    )
    surface = surface_table(metrics, columns, recipes, backbone, shots)
    write_text(args.surface, to_markdown(surface, "Surface metrics and misses on the test images", surface_note))
    with atomic_path(args.figure) as tmp:
        figures.dice_bars(tmp, bar_rows(metrics, columns, recipes, shots))
    log.info("wrote %s, %s and %s", args.table, args.surface, args.figure)


if __name__ == "__main__":
    run(main)
