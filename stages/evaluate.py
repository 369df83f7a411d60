"""evaluate@<task>: test scores of every trained run, of each group's ensemble, and of the tight-box prompt.

Writes ``metrics/<task>.json`` (Dice, NSD and HD95, and per-patient 3D Dice for slices of volumes: mean ± std over
runs per recipe and regime, and over test images for the ensembles and the tight box), a per-image CSV
(``dvc plots``) and a figure of test images with the ground truth and the predictions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from autoprompt.data.tasks import load_task
from autoprompt.errors import InputError
from autoprompt.evaluation import figures, scoring
from autoprompt.evaluation.scoring import ENSEMBLE, Scores
from autoprompt.io import atomic_path, write_text
from autoprompt.model import backbones
from autoprompt.model.decoding import predict
from autoprompt.stage import load_params, pin_cpu_numerics, run, select_device, task_parser
from autoprompt.training import runs

log = logging.getLogger("evaluate")

TIGHT_BOX = "tight_box"


def main(argv: list[str] | None = None) -> None:
    args = task_parser(__doc__)
    args.add_argument("--models", type=Path, required=True, help="folder of the task's runs")
    args.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    args.add_argument("--per-image", type=Path, required=True, help="per-image CSV to write")
    args.add_argument("--figure", type=Path, required=True, help="PNG of example predictions to write")
    args = args.parse_args(argv)
    params = load_params(args.params)
    settings, encode = params["evaluate"], params["encode"]
    pin_cpu_numerics(settings)

    task = load_task(params, args.task, args.prepared, args.index, args.embeddings)
    rows = task.rows("test")
    if rows.empty:
        raise InputError(f"{args.index}: task {args.task} has no test images; check prepare.{task.name} split")
    run_dirs = runs.finished_runs(args.models)
    if not run_dirs:
        raise InputError(f"{args.models}: no trained runs; run the train stage first (dvc repro)")
    device = select_device(settings["device"])
    threshold, batch, count = float(settings["threshold"]), int(settings["batch_size"]), int(settings["examples"])
    decoder = backbones.build_prompt_decoder(
        encode["backbone"], backbones.resolve_checkpoint(encode["backbone"], encode.get("checkpoint"))
    )
    embeddings, masks, boxes = task.load_embeddings(rows), task.load_masks(rows), task.boxes(rows)
    spacing, subjects = task.spacing(rows), rows["subject"].tolist() if task.volumes else None
    tolerance = float(settings["nsd_tolerance_mm"])

    def score(probs: torch.Tensor) -> Scores:
        return scoring.score(probs > threshold, masks, spacing, subjects, tolerance)

    groups: dict[str, list[Scores]] = {}
    sums: dict[str, torch.Tensor] = {}
    shown: dict[str, torch.Tensor] = {}
    selected_epochs: dict[str, int] = {}
    for run_dir in tqdm(run_dirs, desc=f"evaluate {args.task}", unit="run"):
        head, _ = runs.load_head(run_dir)
        key = runs.run_key(run_dir)
        group = runs.group_key(key)
        probs = predict(decoder, embeddings, task.label_size, batch, device, head=head)
        groups.setdefault(group, []).append(score(probs))
        sums[group] = sums.get(group, 0) + probs
        selected_epochs[key] = runs.load_record(run_dir).get("selected_epoch")
    tight_probs = predict(decoder, embeddings, task.label_size, batch, device, boxes=boxes)

    predictors: dict[str, Scores | list[Scores]] = {}
    summaries: dict[str, dict] = {TIGHT_BOX: scoring.over_images(predictors.setdefault(TIGHT_BOX, score(tight_probs)))}
    shown[TIGHT_BOX] = tight_probs[:count]
    for group, scores in groups.items():
        predictors[group] = scores
        summaries[group] = scoring.over_runs(scores)
        mean_probs = sums[group] / len(scores)
        if len(scores) > 1:
            ensemble = predictors[f"{group}_{ENSEMBLE}"] = score(mean_probs)
            summaries[f"{group}_{ENSEMBLE}"] = scoring.over_images(ensemble)
        if group.endswith("/fewshot"):  # the figure shows each recipe's few-shot ensemble (or its one run)
            shown[f"{group}_{ENSEMBLE}" if len(scores) > 1 else group] = mean_probs[:count]

    result = {
        "test_images": len(rows),
        "shots": params["train"]["shots"],
        "select": params["train"]["select"],
        "nsd_tolerance_mm": tolerance,
        "std": "over runs for each recipe/regime; over test images for tight_box and the ensembles "
        "(over patients for dice_3d)",
        **scoring.metrics_json(summaries),
    }
    if params["train"]["select"] == "best":
        result["selected_epochs"] = selected_epochs
    write_text(args.metrics, json.dumps(result, indent=2) + "\n")
    with atomic_path(args.per_image) as tmp:
        scoring.per_image_table(rows[["id", "subject"]], predictors).to_csv(tmp, index=False, float_format="%.5f")

    images = torch.from_numpy(task.prepared["images"].get_orthogonal_selection((rows["row"].to_numpy()[:count],)))
    with atomic_path(args.figure) as tmp:
        figures.examples(tmp, images, masks[:count], {k: v > threshold for k, v in shown.items()}, args.task)
    log.info(
        "%s: test Dice %s",
        args.task,
        ", ".join(f"{k} {v['dice']['mean']:.2f} ± {v['dice']['std']:.2f}" for k, v in summaries.items()),
    )


if __name__ == "__main__":
    run(main)
