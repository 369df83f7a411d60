"""evaluate@<task>: test scores of every trained run, of each group's ensemble, and of the tight-box prompt.

With ``reprompt.margin`` set, each head group's ensemble (or its one run) is also scored re-prompted: the decoder
prompted again with the boxes of its masks, loosened by that margin (``autoprompt.inference.reprompt``). With
``auto``, each group's margin is chosen among ``reprompt.candidates`` on the validation split's tight boxes (boxes
only, no masks), and may be none: the group's re-prompted row is then its plain one; a task without validation images
takes ``reprompt.fallback``. The metrics JSON records each group's margin.

For slices of volumes, with ``reprompt.volume`` set, each re-prompted row has a ``volume`` twin: the boxes fitted
across each test volume's slices, the missing and off-sequence slices prompted again (``autoprompt.inference.volume``;
every test slice holds the structure, so an empty slice at a volume's end is prompted with its neighbour's box). The
metrics JSON counts those slices per group and reason. With ``reprompt.presence`` set, a ``presence`` row follows:
the slices judged not to hold the structure emptied, from each volume's ends in (``autoprompt.inference.presence``).

Beside the paper's protocol (only the slices that hold the structure), the test volumes are scored whole: every
slice the prepared store keeps for them, the empty ones too, stacked per volume (``autoprompt.evaluation.volumes``:
3D Dice, HD95 and NSD per volume, false and missed slices) for every row, under the ``whole_*`` and ``slices`` keys.
There the ``volume`` and ``presence`` rows are what ``predict`` does: the fit leaves the volume's ends alone.

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
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from autoprompt.console import run
from autoprompt.data.tasks import TaskFiles, load_task
from autoprompt.device import pin_cpu_numerics, select_device
from autoprompt.errors import InputError
from autoprompt.evaluation import figures
from autoprompt.evaluation.references import (
    MASK,
    REFERENCE_WORDS,
    TIGHT_BOX,
    Scored,
    metric_blocks,
    per_image,
    references,
    score_rows,
)
from autoprompt.evaluation.scoring import ENSEMBLE, PRESENCE, REPROMPTED, VOLUME, Scores, metrics_json, miss_cell
from autoprompt.evaluation.volumes import summarize_volume_runs, summarize_volumes, volume_scores
from autoprompt.inference.policy import metrics_record, presence_rule
from autoprompt.inference.presence import empty_absent, slice_agreement
from autoprompt.inference.reprompt import group_margins, reprompt
from autoprompt.inference.volume import REASONS, refine_volumes, volume_slices
from autoprompt.io import atomic_path, write_text
from autoprompt.model import backbones, checkpoints
from autoprompt.model import baselines as methods
from autoprompt.model.decoding import decode, decode_scored
from autoprompt.settings import METHOD_SECTIONS, load_settings
from autoprompt.training import runs
from autoprompt.training.baselines import predict_baseline
from stages import task_parser

log = logging.getLogger("evaluate")


def log_dice(task: str, scored: list[Scored]) -> None:
    """One line per reference: each predictor's mean ± std Dice and its misses (``scoring.miss_cell``), and what it
    was measured against."""
    for s in scored:
        log.info(
            "%s: %s (%d images; misses: under 50 Dice): %s",
            task,
            REFERENCE_WORDS[s.reference.name],
            len(s.reference.index),
            ", ".join(
                f"{k} {v['dice']['mean']:.2f} ± {v['dice']['std']:.2f}, misses {miss_cell(v['misses'])}"
                for k, v in s.summaries.items()
            ),
        )


def predict_run(
    run_dir: Path,
    decoder: torch.nn.Module,
    images: torch.Tensor | None,
    embeddings: torch.Tensor,
    label_size: int,
    batch: int,
    device: torch.device,
) -> tuple[str, torch.Tensor, str]:
    """A baseline run's method, N x S x S test probabilities and table title (``images``: N x S x S uint8)."""
    state, config = runs.load_baseline(run_dir)
    name = config["method"]
    section = METHOD_SECTIONS[name].model_validate(config["settings"])
    if getattr(section, "weights", None):  # the run's own weights replace any start
        section = section.model_copy(update={"weights": None})
    model = methods.build(name, section, decoder)
    model.load_state_dict(state)
    size = getattr(section, "input_size", None)
    probs = predict_baseline(name, model, decoder, images, embeddings, label_size, size, batch, device)
    return name, probs, config["title"]


def main(argv: list[str] | None = None) -> None:
    args = task_parser(__doc__)
    args.add_argument("--models", type=Path, required=True, help="folder of the task's runs")
    args.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    args.add_argument("--per-image", type=Path, required=True, help="per-image CSV to write")
    args.add_argument("--figure", type=Path, required=True, help="PNG of example predictions to write")
    args.add_argument("--baselines", type=Path, help="folder of the task's baseline runs (the baseline stage's)")
    args = args.parse_args(argv)
    everything = load_settings(args.params)
    settings, encode, reprompting = everything.evaluate, everything.encode, everything.reprompt
    pin_cpu_numerics(settings.threads)

    files = TaskFiles(args.prepared, args.index, args.embeddings)
    task = load_task(
        args.task, everything.task(args.task), files, everything.prepare.min_foreground, everything.encode.backbone
    )
    rows = task.rows("test")
    if rows.empty:
        raise InputError(f"{args.index}: task {args.task} has no test images; check its dataset's split")
    run_dirs = runs.finished_runs(args.models)
    if not run_dirs:
        raise InputError(f"{args.models}: no trained runs; run the train stage first (dvc repro)")
    device = select_device(settings.device, settings.key("device"))
    threshold, batch, count = settings.threshold, settings.batch_size, settings.examples
    checkpoint = checkpoints.resolve_checkpoint(encode.backbone, encode.checkpoint, encode.key("checkpoint"))
    decoder = backbones.build_prompt_decoder(encode.backbone, checkpoint)
    whole = task.volume_rows("test")  # the test volumes whole; predicted: the test rows, then their other slices
    extra = whole.loc[~whole["row"].isin(rows["row"]), [c for c in whole.columns if c in rows.columns]]
    scope = pd.concat([rows, extra], ignore_index=True)
    embeddings, truth, boxes = task.load_embeddings(scope), task.load_masks(scope), task.boxes(rows)
    masks = truth[: len(rows)]
    spacing, subjects = task.spacing(rows), rows["subject"].tolist() if task.volumes else None
    tolerance = settings.nsd_tolerance_mm
    tight_probs = decode(decoder, embeddings[: len(rows)], task.label_size, batch, device, boxes=boxes)
    tight_probs = torch.cat([tight_probs, torch.zeros(len(extra), *tight_probs.shape[1:])])  # no box: no mask
    refs = references(masks, task.has_masks(rows), tight_probs[: len(rows)] > threshold, spacing, subjects)
    in_whole = torch.tensor(scope["row"].isin(whole["row"]).to_numpy()).nonzero().flatten()
    scope_positions = torch.tensor(scope["slice"].to_numpy(), dtype=torch.float64) if task.volumes else None
    volumes = (
        [in_whole[v] for v in volume_slices(scope["subject"].iloc[in_whole].tolist(), scope_positions[in_whole])]
        if len(in_whole)
        else []
    )
    thickness = (  # each slice's spacing along the volume, mm (NaN outside whole volumes)
        torch.from_numpy(scope["row"].map(whole.set_index("row")["slice_mm"]).to_numpy(dtype="float64"))
        if volumes
        else None
    )
    scope_spacing = task.spacing(scope)
    rule = presence_rule(reprompting.presence)
    # the runs' agreement needs each run's probabilities (float16: N x S x S x 2 bytes a run), as predict has them
    agreeing = rule is not None and "agreement" in rule.cues

    def whole_scores(probs: torch.Tensor) -> list[dict]:
        """Per test volume, its scores with every slice (``autoprompt.evaluation.volumes``)."""
        return volume_scores(probs > threshold, truth, volumes, scope_spacing, thickness, tolerance)

    groups: dict[str, dict[str, list[Scores]]] = {ref.name: {} for ref in refs}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    whole_runs: dict[str, list[list[dict]]] = {}

    def add(key: str, probs: torch.Tensor) -> None:
        """Score one run's N x S x S probabilities of the predicted rows (the test rows first) into its group
        (``recipe/regime`` or ``method/regime``), on the test rows and on whole volumes."""
        group = runs.group_key(key)
        for ref in refs:
            groups[ref.name].setdefault(group, []).append(ref.score(probs, threshold, tolerance))
        sums[group] = sums.get(group, 0) + probs
        counts[group] = counts.get(group, 0) + 1
        if volumes:
            whole_runs.setdefault(group, []).append(whole_scores(probs))

    iou_sums: dict[str, torch.Tensor] = {}  # each head group's summed predicted IoU per row, for presence
    run_probs: dict[str, list[torch.Tensor]] = {}

    val = task.rows("val") if reprompting.auto else rows.iloc[:0]  # the images that choose the margins
    val_embeddings, val_sums = (task.load_embeddings(val) if len(val) else None), {}
    selected_epochs: dict[str, int] = {}
    for run_dir in tqdm(run_dirs, desc=f"evaluate {args.task}", unit="run"):
        head, _ = runs.load_head(run_dir)
        key = runs.run_key(run_dir)
        probs, iou = decode_scored(decoder, embeddings, task.label_size, batch, device, head=head)
        add(key, probs)
        iou_sums[runs.group_key(key)] = iou_sums.get(runs.group_key(key), 0) + iou
        if agreeing:
            run_probs.setdefault(runs.group_key(key), []).append(probs.half())
        selected_epochs[key] = runs.load_record(run_dir).get("selected_epoch")
        if len(val):
            group = runs.group_key(key)
            val_sums[group] = val_sums.get(group, 0) + decode(
                decoder, val_embeddings, task.label_size, batch, device, head=head
            )
    titles = {}
    planned = set(everything.baseline.methods)  # runs of methods no longer planned may be kept there: left out
    baseline_dirs = runs.finished_runs(args.baselines, runs.MODEL) if args.baselines else []
    baseline_dirs = [d for d in baseline_dirs if runs.run_key(d).split("/")[0] in planned]
    images = task.load_images(scope) if baseline_dirs else None
    for run_dir in tqdm(baseline_dirs, desc=f"evaluate {args.task} baselines", unit="run"):
        name, probs, title = predict_run(run_dir, decoder, images, embeddings, task.label_size, batch, device)
        add(runs.run_key(run_dir), probs)
        titles[name] = title
    means = {group: total.div_(counts[group]) for group, total in sums.items()}  # in place: one copy per group
    head_groups = sorted({runs.group_key(key) for key in selected_epochs}) if reprompting.margin is not None else []
    val_means = {group: total / counts[group] for group, total in val_sums.items()}
    margins = group_margins(
        reprompting, decoder, head_groups, val_embeddings, task.boxes(val), val_means, threshold, batch, device
    )
    reprompted, ious = {}, {}  # each head group's ensemble (or its one run), re-prompted with its masks' loosened boxes
    for group in head_groups:
        ious[group] = iou_sums[group] / counts[group]
        m = margins[group]["margin"]
        reprompted[f"{group}_{REPROMPTED}"] = (
            means[group]
            if m is None
            else reprompt(decoder, embeddings, means[group], m, threshold, batch, device, iou=ious[group])
        )
    fit = reprompting.volume if task.volumes else None
    fitted: dict[str, dict[str, int]] = {}
    whole_rows: dict[str, torch.Tensor] = {}  # rows scored differently on whole volumes, as predict makes them
    emptied: dict[str, dict[str, int]] = {}
    for group in head_groups:
        probs, iou = reprompted[f"{group}_{REPROMPTED}"], ious[group]
        whole_probs, whole_iou = probs, iou.clone()
        if fit is not None:
            test_volumes = volume_slices(subjects, scope_positions[: len(rows)])
            test_iou = iou.clone()  # every test slice holds the structure: an empty end slice is a miss too
            probs, why = refine_volumes(
                decoder, embeddings, probs, test_volumes, scope_positions, margins[group]["margin"] or 0.0,
                fit.min_iou, True, threshold, batch, device, iou=test_iou,
            )  # fmt: skip
            reprompted[f"{group}_{VOLUME}"], iou = probs, test_iou
            fitted[group] = {reason: why[reason] for reason in REASONS}
            log.info("%s: %s fitted across volumes, slices prompted again: %s", args.task, group, fitted[group])
            if volumes:  # whole volumes, as predict fits them: their ends left alone
                whole_probs, _ = refine_volumes(
                    decoder, embeddings, whole_probs, volumes, scope_positions, margins[group]["margin"] or 0.0,
                    fit.min_iou, False, threshold, batch, device, iou=whole_iou,
                )  # fmt: skip
                whole_rows[f"{group}_{VOLUME}"] = whole_probs
        if rule is not None:  # a 2D image is a volume of one slice
            agreement = slice_agreement(run_probs[group], threshold) if agreeing else torch.ones(len(scope))
            test_volumes = (
                volume_slices(subjects, scope_positions[: len(rows)])
                if task.volumes
                else list(torch.arange(len(rows))[:, None])
            )
            reprompted[f"{group}_{PRESENCE}"], on_test = empty_absent(
                probs, iou, agreement, test_volumes, rule, threshold
            )
            emptied[group] = {"test_slices": on_test}
            if volumes:
                whole_rows[f"{group}_{PRESENCE}"], on_whole = empty_absent(
                    whole_probs, whole_iou, agreement, volumes, rule, threshold
                )
                emptied[group]["whole_volumes"] = on_whole
            log.info("%s: %s slices judged absent, emptied: %s", args.task, group, emptied[group])
    for group, choice in margins.items():
        log.info(
            "%s: %s re-prompted with margin %s",
            args.task,
            group,
            choice["margin"] if choice["margin"] is not None else "none (off)",
        )
    scored = [
        score_rows(
            ref, groups[ref.name], means, tight_probs if ref.name == MASK else None, threshold, tolerance, reprompted
        )
        for ref in refs
    ]

    whole_summaries: dict[str, dict] = {}
    if volumes:
        whole_summaries[TIGHT_BOX] = summarize_volumes(whole_scores(tight_probs))
        for group, scores in whole_runs.items():
            whole_summaries[group] = summarize_volume_runs(scores)
            if counts[group] > 1:
                whole_summaries[f"{group}_{ENSEMBLE}"] = summarize_volumes(whole_scores(means[group]))
        for row, probs in {**reprompted, **whole_rows}.items():
            whole_summaries[row] = summarize_volumes(whole_scores(probs))
        for row, summary in whole_summaries.items():
            log.info(
                "%s: %s on whole volumes: 3D Dice %.2f, HD95 %.1f mm, false slices %g, missed %g",
                args.task, row, summary["whole_dice_3d"]["mean"], summary["whole_hd95_mm"]["mean"],
                summary["slices"]["false"], summary["slices"]["missed"],
            )  # fmt: skip

    result = {
        "test_images": len(rows),
        "shots": everything.train.shots,
        "select": everything.train.select,
        "nsd_tolerance_mm": tolerance,
        "std": "over runs for each recipe/regime; over test images for tight_box and the ensembles "
        "(over patients for dice_3d)",
        **metric_blocks(scored),
        **metrics_json(whole_summaries),
    }
    if volumes:
        present = int(truth[in_whole].flatten(1).any(1).sum())
        result["whole_volumes"] = {"volumes": len(volumes), "slices": len(in_whole), "slices_with_structure": present}
    if titles:
        result["methods"] = dict(sorted(titles.items()))  # the baselines' names in the table
    if margins:  # the policy predict --reprompt-from follows (autoprompt.inference.policy)
        result["reprompt"] = {
            "margin": reprompting.margin,
            "groups": margins,
            **metrics_record(reprompting, task.volumes),
        }
    if fitted:
        result["reprompt"]["volume"]["slices_prompted_again"] = fitted
    if emptied:
        result["reprompt"]["presence"]["slices_emptied"] = emptied
    if everything.train.select == "best":
        result["selected_epochs"] = selected_epochs
    write_text(args.metrics, json.dumps(result, indent=2) + "\n")
    with atomic_path(args.per_image) as tmp:
        per_image(rows, scored).to_csv(tmp, index=False, float_format="%.5f")

    shown = {TIGHT_BOX: tight_probs[:count]}
    for group, n in counts.items():  # each recipe's and baseline's few-shot ensemble (or its one run)
        if group.endswith(("/fewshot", "/oneshot")):
            shown[f"{group}_{ENSEMBLE}" if n > 1 else group] = means[group][:count]
    shown_images = images[:count] if images is not None else task.load_images(rows.iloc[:count])
    with atomic_path(args.figure) as tmp:
        figures.examples(tmp, shown_images, masks[:count], {k: v > threshold for k, v in shown.items()}, args.task)
    log_dice(args.task, scored)


if __name__ == "__main__":
    run(main)
