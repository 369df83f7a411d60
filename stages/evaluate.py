"""evaluate@<task>: test Dice of every trained run and of the backbone prompted with the tight box.

Writes ``metrics/<task>.json`` (mean and std over runs, per regime), a per-image CSV (``dvc plots``) and a figure
of test images with the ground truth and the predictions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from autoprompt import backbones, figures, runs
from autoprompt.errors import InputError
from autoprompt.fewshot import FEWSHOT
from autoprompt.io import atomic_path, write_text
from autoprompt.metrics import dice, summarize
from autoprompt.stage import load_params, run, select_device, task_parser
from autoprompt.tasks import load_task
from autoprompt.training import predict

log = logging.getLogger("evaluate")

TIGHT_BOX = "tight_box"


def summarize_runs(per_run: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Regime -> mean and std over its runs of each run's mean test Dice (Table 1's convention)."""
    regimes: dict[str, list[float]] = {}
    for key, values in per_run.items():
        regimes.setdefault(key.split("/")[0], []).append(float(values.mean()))
    return {regime: summarize(means) for regime, means in regimes.items()}


def main(argv: list[str] | None = None) -> None:
    args = task_parser(__doc__)
    args.add_argument("--models", type=Path, required=True, help="folder of the task's runs")
    args.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    args.add_argument("--per-image", type=Path, required=True, help="per-image CSV to write")
    args.add_argument("--figure", type=Path, required=True, help="PNG of example predictions to write")
    args = args.parse_args(argv)
    params = load_params(args.params)
    settings, encode = params["evaluate"], params["encode"]

    task = load_task(params, args.task, args.prepared, args.index, args.embeddings)
    rows = task.rows("test")
    if rows.empty:
        raise InputError(f"{args.index}: task {args.task} has no test images; check prepare.split")
    run_dirs = runs.finished_runs(args.models)
    if not run_dirs:
        raise InputError(f"{args.models}: no trained runs; run the train stage first (dvc repro)")
    device = select_device(settings["device"])
    threshold, batch, count = float(settings["threshold"]), int(settings["batch_size"]), int(settings["examples"])
    decoder = backbones.build_prompt_decoder(
        encode["backbone"], backbones.resolve_checkpoint(encode["backbone"], encode.get("checkpoint"))
    )
    embeddings, masks, boxes = task.load_embeddings(rows), task.load_masks(rows), task.boxes(rows)

    def score(**prompt: object) -> tuple[torch.Tensor, torch.Tensor]:
        probs = predict(decoder, embeddings, task.label_size, batch, device, **prompt)
        return dice(probs > threshold, masks), probs[:count]

    per_run, shown = {}, {}
    for run_dir in tqdm(run_dirs, desc=f"evaluate {args.task}", unit="run"):
        head, _ = runs.load_head(run_dir)
        key = runs.run_key(run_dir)
        per_run[key], probs = score(head=head)
        shown.setdefault(key.split("/")[0], probs)  # the first run of each regime is drawn
    tight, shown[TIGHT_BOX] = score(boxes=boxes)

    regimes = summarize_runs(per_run)
    result = {"test_images": len(rows), "dice": {**regimes, TIGHT_BOX: summarize(tight.numpy())}}
    if FEWSHOT in result["dice"]:
        result["dice"][FEWSHOT]["shots"] = int(params["train"]["shots"])
    write_text(args.metrics, json.dumps(result, indent=2) + "\n")

    table = rows[["id", "subject"]].copy()
    for regime in regimes:
        table[regime] = torch.stack([v for k, v in per_run.items() if k.startswith(f"{regime}/")]).mean(0).numpy()
    table[TIGHT_BOX] = tight.numpy()
    with atomic_path(args.per_image) as tmp:
        table.to_csv(tmp, index=False, float_format="%.5f")

    images = torch.from_numpy(task.prepared["images"].get_orthogonal_selection((rows["row"].to_numpy()[:count],)))
    with atomic_path(args.figure) as tmp:
        figures.examples(tmp, images, masks[:count], {k: v > threshold for k, v in shown.items()}, args.task)
    log.info("%s: %s", args.task, ", ".join(f"{k} {v['mean']:.2f} ± {v['std']:.2f}" for k, v in result["dice"].items()))


if __name__ == "__main__":
    run(main)
