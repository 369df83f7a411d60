"""report: the paper's Table 1 with our rows beside it (metrics/table.md) and a figure of the same numbers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from autoprompt import figures
from autoprompt.errors import InputError
from autoprompt.io import atomic_path, write_text
from autoprompt.report import bar_rows, build_table, to_markdown
from autoprompt.stage import load_params, parser, run

log = logging.getLogger("report")


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--metrics", type=Path, required=True, help="folder holding <task>.json")
    args.add_argument("--table", type=Path, required=True, help="markdown table to write")
    args.add_argument("--figure", type=Path, required=True, help="PNG bar chart to write")
    args = args.parse_args(argv)
    params = load_params(args.params)
    columns = {task: spec["column"] for task, spec in params["tasks"].items()}
    metrics = {}
    for task in columns:
        path = args.metrics / f"{task}.json"
        if not path.is_file():
            raise InputError(f"{path}: metrics of task {task} not found; run its evaluate stage first (dvc repro)")
        metrics[task] = json.loads(path.read_text())
    backbone, shots = params["encode"]["backbone"], params["train"]["shots"]
    table = build_table(metrics, columns, backbone, shots)
    note = (
        f"Bold rows are this pipeline's ({backbone}, params.yaml), mean ± std over runs; the others are the "
        "paper's. '–' marks a task not run here."
    )
    write_text(args.table, to_markdown(table, note))
    with atomic_path(args.figure) as tmp:
        figures.dice_bars(tmp, bar_rows(metrics, columns, shots))
    log.info("wrote %s and %s", args.table, args.figure)


if __name__ == "__main__":
    run(main)
