"""evaluate@<task>: test scores of every trained run, of each group's ensemble, and of the tight-box prompt.

Writes ``metrics/<task>.json`` (Dice, NSD and HD95, and per-patient 3D Dice for slices of volumes: mean ± std over
runs per recipe and regime, and over test images for the ensembles and the tight box), a per-image CSV
(``dvc plots``) and a figure of test images with the ground truth and the predictions.

Test images without a mask (users' own data with boxes only) are scored against the backbone's mask prompted with
their tight box instead: agreement, not accuracy. Their scores go under ``agreement`` in the same layout, without the
tight box's own row; ``reference`` counts the test images of each kind, and the per-image CSV names each image's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
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
MASK, BOX_PROMPTED = "mask", "box_prompted"  # what a test row is scored against
REFERENCE_WORDS = {MASK: "test Dice against the masks", BOX_PROMPTED: "agreement with the box-prompted masks"}


@dataclass
class Reference:
    """Test rows scored against one kind of reference: ``mask`` (the dataset's masks) or ``box_prompted`` (where the
    dataset has no mask, the backbone's mask prompted with the tight box: agreement, not accuracy).

    ``index``: the rows' positions among the test rows (n); ``truth``: n x S x S bool; ``spacing``: n x 2 mm;
    ``subjects``: n subject ids, for 3D Dice of slices of volumes (None for 2D images)."""

    name: str
    index: torch.Tensor
    truth: torch.Tensor
    spacing: torch.Tensor
    subjects: list[str] | None

    def score(self, probs: torch.Tensor, threshold: float, tolerance: float) -> Scores:
        """N x S x S probabilities of every test row -> the scores of this reference's rows."""
        return scoring.score(probs[self.index] > threshold, self.truth, self.spacing, self.subjects, tolerance)


def references(
    masks: torch.Tensor,
    has_masks: torch.Tensor,
    box_prompted: torch.Tensor,
    spacing: torch.Tensor,
    subjects: list[str] | None,
) -> list[Reference]:
    """The test rows with a mask, scored against it, then those without, scored against ``box_prompted`` (N x S x S
    bool); a kind without rows is left out. ``masks``: N x S x S bool; ``has_masks``: N bool; ``spacing``: N x 2."""
    out = []
    for name, chosen, truth in ((MASK, has_masks, masks), (BOX_PROMPTED, ~has_masks, box_prompted)):
        index = torch.nonzero(chosen).flatten()
        if len(index):
            picked = None if subjects is None else [subjects[i] for i in index.tolist()]
            out.append(Reference(name, index, truth[index], spacing[index], picked))
    return out


@dataclass
class Scored:
    """One reference's rows scored: each predictor's per-image scores (a group: one per run) and its summary."""

    reference: Reference
    predictors: dict[str, Scores | list[Scores]]
    summaries: dict[str, dict]


def score_rows(
    reference: Reference,
    runs: dict[str, list[Scores]],
    means: dict[str, torch.Tensor],
    tight_probs: torch.Tensor | None,
    threshold: float,
    tolerance: float,
) -> Scored:
    """Score one reference's rows: the tight-box prompt (N x S x S probabilities; None leaves its row out), each
    group's runs (``runs``, already scored on these rows) and, for a group of several runs, its ensemble (``means``:
    the mean of its runs' N x S x S probabilities, thresholded once)."""
    predictors: dict[str, Scores | list[Scores]] = {}
    summaries: dict[str, dict] = {}
    if tight_probs is not None:
        predictors[TIGHT_BOX] = reference.score(tight_probs, threshold, tolerance)
        summaries[TIGHT_BOX] = scoring.over_images(predictors[TIGHT_BOX])
    for group, scores in runs.items():
        predictors[group] = scores
        summaries[group] = scoring.over_runs(scores)
        if len(scores) > 1:
            ensemble = predictors[f"{group}_{ENSEMBLE}"] = reference.score(means[group], threshold, tolerance)
            summaries[f"{group}_{ENSEMBLE}"] = scoring.over_images(ensemble)
    return Scored(reference, predictors, summaries)


def metric_blocks(scored: list[Scored]) -> dict:
    """The metrics JSON's scores: how many test rows each reference scored (``reference``), the rows with masks
    under the metric keys (``dice.<row>``, ...) and the rows without under ``agreement`` in the same layout."""
    counts = {s.reference.name: len(s.reference.index) for s in scored}
    out: dict = {"reference": {"masks": counts.get(MASK, 0), "box_prompted": counts.get(BOX_PROMPTED, 0)}}
    for s in scored:
        blocks = scoring.metrics_json(s.summaries)
        out.update(blocks if s.reference.name == MASK else {"agreement": blocks})
    return out


def per_image(rows: pd.DataFrame, scored: list[Scored]) -> pd.DataFrame:
    """One row per test image, in the test rows' order: id, subject, its ``reference`` (``mask`` or
    ``box_prompted``), then each predictor's scores (``scoring.per_image_table``)."""
    tables, positions = [], []
    for s in scored:
        index = s.reference.index.numpy()
        ids = rows[["id", "subject"]].iloc[index].assign(reference=s.reference.name)
        tables.append(scoring.per_image_table(ids, s.predictors))
        positions.append(index)
    table = pd.concat(tables, ignore_index=True)
    return table.iloc[np.argsort(np.concatenate(positions), kind="stable")].reset_index(drop=True)


def log_dice(task: str, scored: list[Scored]) -> None:
    """One line per reference: each predictor's mean ± std Dice, and what it was measured against."""
    for s in scored:
        log.info(
            "%s: %s (%d images): %s",
            task,
            REFERENCE_WORDS[s.reference.name],
            len(s.reference.index),
            ", ".join(f"{k} {v['dice']['mean']:.2f} ± {v['dice']['std']:.2f}" for k, v in s.summaries.items()),
        )


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
    tight_probs = predict(decoder, embeddings, task.label_size, batch, device, boxes=boxes)
    refs = references(masks, task.has_masks(rows), tight_probs > threshold, spacing, subjects)

    groups: dict[str, dict[str, list[Scores]]] = {ref.name: {} for ref in refs}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    selected_epochs: dict[str, int] = {}
    for run_dir in tqdm(run_dirs, desc=f"evaluate {args.task}", unit="run"):
        head, _ = runs.load_head(run_dir)
        key = runs.run_key(run_dir)
        group = runs.group_key(key)
        probs = predict(decoder, embeddings, task.label_size, batch, device, head=head)
        for ref in refs:
            groups[ref.name].setdefault(group, []).append(ref.score(probs, threshold, tolerance))
        sums[group] = sums.get(group, 0) + probs
        counts[group] = counts.get(group, 0) + 1
        selected_epochs[key] = runs.load_record(run_dir).get("selected_epoch")
    means = {group: total.div_(counts[group]) for group, total in sums.items()}  # in place: one copy per group
    scored = [
        score_rows(ref, groups[ref.name], means, tight_probs if ref.name == MASK else None, threshold, tolerance)
        for ref in refs
    ]

    result = {
        "test_images": len(rows),
        "shots": params["train"]["shots"],
        "select": params["train"]["select"],
        "nsd_tolerance_mm": tolerance,
        "std": "over runs for each recipe/regime; over test images for tight_box and the ensembles "
        "(over patients for dice_3d)",
        **metric_blocks(scored),
    }
    if params["train"]["select"] == "best":
        result["selected_epochs"] = selected_epochs
    write_text(args.metrics, json.dumps(result, indent=2) + "\n")
    with atomic_path(args.per_image) as tmp:
        per_image(rows, scored).to_csv(tmp, index=False, float_format="%.5f")

    shown = {TIGHT_BOX: tight_probs[:count]}
    for group, n in counts.items():  # the figure shows each recipe's few-shot ensemble (or its one run)
        if group.endswith("/fewshot"):
            shown[f"{group}_{ENSEMBLE}" if n > 1 else group] = means[group][:count]
    images = torch.from_numpy(task.prepared["images"].get_orthogonal_selection((rows["row"].to_numpy()[:count],)))
    with atomic_path(args.figure) as tmp:
        figures.examples(tmp, images, masks[:count], {k: v > threshold for k, v in shown.items()}, args.task)
    log_dice(args.task, scored)


if __name__ == "__main__":
    run(main)
