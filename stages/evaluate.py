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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from autoprompt.console import run
from autoprompt.data.tasks import Task, TaskFiles, load_task
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
from autoprompt.settings import METHOD_SECTIONS, RepromptSettings, Settings, load_settings
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


@dataclass
class Scope:
    """What evaluate predicts: the test rows first (``rows``, the paper's protocol: slices that hold the structure),
    then the other slices of the test volumes (``extra``), and what scoring them needs. ``volumes``: each whole test
    volume's positions in the scope, in slice order; ``positions``: each scope row's slice position (volumes only);
    ``thickness``: each scope row's slice spacing along its volume, mm (NaN outside whole volumes)."""

    rows: pd.DataFrame
    extra: pd.DataFrame
    frame: pd.DataFrame
    embeddings: torch.Tensor
    truth: torch.Tensor
    boxes: torch.Tensor
    in_whole: torch.Tensor
    volumes: list[torch.Tensor]
    positions: torch.Tensor | None
    thickness: torch.Tensor | None
    spacing: torch.Tensor

    @property
    def masks(self) -> torch.Tensor:
        """The test rows' masks."""
        return self.truth[: len(self.rows)]

    def subjects(self, task: Task) -> list[str] | None:
        return self.rows["subject"].tolist() if task.volumes else None

    def test_volumes(self, task: Task) -> list[torch.Tensor]:
        """The test rows grouped per volume in slice order; each 2D image is a volume of one slice."""
        if not task.volumes:
            return list(torch.arange(len(self.rows))[:, None])
        return volume_slices(self.subjects(task), self.positions[: len(self.rows)])


def load_scope(task: Task, rows: pd.DataFrame) -> Scope:
    """The test rows and the rest of their volumes, with embeddings, masks, boxes and slice geometry."""
    whole = task.volume_rows("test")  # the test volumes whole; predicted: the test rows, then their other slices
    extra = whole.loc[~whole["row"].isin(rows["row"]), [c for c in whole.columns if c in rows.columns]]
    frame = pd.concat([rows, extra], ignore_index=True)
    in_whole = torch.tensor(frame["row"].isin(whole["row"]).to_numpy()).nonzero().flatten()
    positions = torch.tensor(frame["slice"].to_numpy(), dtype=torch.float64) if task.volumes else None
    volumes = (
        [in_whole[v] for v in volume_slices(frame["subject"].iloc[in_whole].tolist(), positions[in_whole])]
        if len(in_whole)
        else []
    )
    thickness = (
        torch.from_numpy(frame["row"].map(whole.set_index("row")["slice_mm"]).to_numpy(dtype="float64"))
        if volumes
        else None
    )
    return Scope(
        rows, extra, frame, task.load_embeddings(frame), task.load_masks(frame), task.boxes(rows), in_whole, volumes,
        positions, thickness, task.spacing(frame),
    )  # fmt: skip


@dataclass
class Runs:
    """Every run's scores and probabilities, folded into its group (``recipe/regime`` or ``method/regime``).
    ``scores``: per reference, per group, each run's; ``sums`` / ``counts``: the group's summed probabilities and
    runs (``means`` divides them, once); ``whole``: per group, each run's whole-volume scores; ``iou_sums``: each head
    group's summed predicted IoU per row (for presence); ``probs``: each head group's runs' probabilities, float16,
    where presence reads the runs' agreement; ``val_sums``: each head group's summed validation probabilities (for
    the margin); ``selected_epochs``: each head run's; ``titles``: the baselines' table names."""

    scores: dict[str, dict[str, list[Scores]]]
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    whole: dict[str, list[list[dict]]] = field(default_factory=dict)
    iou_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    probs: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    val_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    selected_epochs: dict[str, int] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, probs: torch.Tensor, refs: list, scorer: Scorer) -> None:
        """Score one run's N x S x S probabilities of the scope (the test rows first) into its group, on the test rows
        and on whole volumes."""
        group = runs.group_key(key)
        for ref in refs:
            self.scores[ref.name].setdefault(group, []).append(ref.score(probs, scorer.threshold, scorer.tolerance))
        self.sums[group] = self.sums.get(group, 0) + probs
        self.counts[group] = self.counts.get(group, 0) + 1
        if scorer.scope.volumes:
            self.whole.setdefault(group, []).append(scorer.whole(probs))

    def means(self) -> dict[str, torch.Tensor]:
        """Each group's mean probabilities; divides ``sums`` in place (one copy per group), so call it once."""
        return {group: total.div_(self.counts[group]) for group, total in self.sums.items()}


@dataclass(frozen=True)
class Scorer:
    """Thresholds and tolerances shared by every row's scoring."""

    scope: Scope
    threshold: float
    tolerance: float

    def whole(self, probs: torch.Tensor) -> list[dict]:
        """Per test volume, its scores with every slice (``autoprompt.evaluation.volumes``)."""
        s = self.scope
        return volume_scores(probs > self.threshold, s.truth, s.volumes, s.spacing, s.thickness, self.tolerance)


@dataclass
class Policed:
    """The head groups' post-processed rows: ``rows`` (re-prompted, volume-fitted, presence) on the test rows,
    ``whole_rows`` where whole volumes are made differently (as predict makes them), each group's ``margins``, the
    slices prompted again per group and reason (``fitted``) and those emptied (``emptied``)."""

    margins: dict[str, dict]
    rows: dict[str, torch.Tensor] = field(default_factory=dict)
    whole_rows: dict[str, torch.Tensor] = field(default_factory=dict)
    fitted: dict[str, dict[str, int]] = field(default_factory=dict)
    emptied: dict[str, dict[str, int]] = field(default_factory=dict)


def predict_heads(
    run_dirs: list[Path], task: Task, scope: Scope, decoder, val_embeddings: torch.Tensor | None, found: Runs, refs,
    scorer: Scorer, agreeing: bool, batch: int, device: torch.device,
) -> None:  # fmt: skip
    """Each head run's probabilities on the scope (and on the validation rows' ``val_embeddings``, where they choose
    the margin) into ``found``."""
    for run_dir in tqdm(run_dirs, desc=f"evaluate {task.name}", unit="run"):
        head, _ = runs.load_head(run_dir)
        key = runs.run_key(run_dir)
        group = runs.group_key(key)
        probs, iou = decode_scored(decoder, scope.embeddings, task.label_size, batch, device, head=head)
        found.add(key, probs, refs, scorer)
        found.iou_sums[group] = found.iou_sums.get(group, 0) + iou
        if agreeing:
            found.probs.setdefault(group, []).append(probs.half())
        found.selected_epochs[key] = runs.load_record(run_dir).get("selected_epoch")
        if val_embeddings is not None:
            found.val_sums[group] = found.val_sums.get(group, 0) + decode(
                decoder, val_embeddings, task.label_size, batch, device, head=head
            )


def predict_baselines(
    baseline_dirs: list[Path], task: Task, scope: Scope, decoder, found: Runs, refs, scorer: Scorer, batch: int,
    device: torch.device,
) -> torch.Tensor | None:  # fmt: skip
    """Each baseline run's probabilities on the scope into ``found``; the scope's images where a baseline read them."""
    images = task.load_images(scope.frame) if baseline_dirs else None
    for run_dir in tqdm(baseline_dirs, desc=f"evaluate {task.name} baselines", unit="run"):
        name, probs, title = predict_run(run_dir, decoder, images, scope.embeddings, task.label_size, batch, device)
        found.add(runs.run_key(run_dir), probs, refs, scorer)
        found.titles[name] = title
    return images


def post_process(
    task: Task, scope: Scope, decoder, found: Runs, means: dict[str, torch.Tensor], head_groups: list[str],
    reprompting: RepromptSettings, val: pd.DataFrame, val_embeddings: torch.Tensor | None, threshold: float,
    batch: int, device: torch.device,
) -> Policed:  # fmt: skip
    """Each head group's ensemble re-prompted at its margin (chosen on ``val``'s boxes where ``auto``), fitted across
    volumes and emptied where judged absent, as the module's docstring says."""
    val_means = {group: total / found.counts[group] for group, total in found.val_sums.items()}
    margins = group_margins(
        reprompting, decoder, head_groups, val_embeddings, task.boxes(val), val_means, threshold, batch, device
    )
    out, ious = Policed(margins), {}
    for group in head_groups:  # each ensemble (or its one run), re-prompted with its masks' loosened boxes
        ious[group] = found.iou_sums[group] / found.counts[group]
        m, box_threshold = margins[group]["margin"], margins[group].get("box_threshold", threshold)
        if m is None:
            out.rows[f"{group}_{REPROMPTED}"] = means[group]
        else:
            out.rows[f"{group}_{REPROMPTED}"] = reprompt(
                decoder, scope.embeddings, means[group], m, threshold, batch, device, iou=ious[group],
                box_threshold=box_threshold,
            )  # fmt: skip
    fit = reprompting.volume if task.volumes else None
    rule = presence_rule(reprompting.presence)
    for group in head_groups:
        probs, iou = out.rows[f"{group}_{REPROMPTED}"], ious[group]
        whole_probs, whole_iou = probs, iou.clone()
        margin = margins[group]["margin"] or 0.0
        if fit is not None:
            test_iou = iou.clone()  # every test slice holds the structure: an empty end slice is a miss too
            probs, why = refine_volumes(
                decoder, scope.embeddings, probs, scope.test_volumes(task), scope.positions, margin, fit.min_iou,
                True, threshold, batch, device, iou=test_iou,
            )  # fmt: skip
            out.rows[f"{group}_{VOLUME}"], iou = probs, test_iou
            out.fitted[group] = {reason: why[reason] for reason in REASONS}
            log.info("%s: %s fitted across volumes, slices prompted again: %s", task.name, group, out.fitted[group])
            if scope.volumes:  # whole volumes, as predict fits them: their ends left alone
                whole_probs, _ = refine_volumes(
                    decoder, scope.embeddings, whole_probs, scope.volumes, scope.positions, margin, fit.min_iou,
                    False, threshold, batch, device, iou=whole_iou,
                )  # fmt: skip
                out.whole_rows[f"{group}_{VOLUME}"] = whole_probs
        if rule is not None:  # a 2D image is a volume of one slice
            agreeing = "agreement" in rule.cues
            agreement = slice_agreement(found.probs[group], threshold) if agreeing else torch.ones(len(scope.frame))
            out.rows[f"{group}_{PRESENCE}"], on_test = empty_absent(
                probs, iou, agreement, scope.test_volumes(task), rule, threshold
            )
            out.emptied[group] = {"test_slices": on_test}
            if scope.volumes:
                out.whole_rows[f"{group}_{PRESENCE}"], on_whole = empty_absent(
                    whole_probs, whole_iou, agreement, scope.volumes, rule, threshold
                )
                out.emptied[group]["whole_volumes"] = on_whole
            log.info("%s: %s slices judged absent, emptied: %s", task.name, group, out.emptied[group])
    for group, choice in margins.items():
        margin = choice["margin"] if choice["margin"] is not None else "none (off)"
        taken = "box_threshold" in choice and choice["margin"] is not None
        above = f", boxes of the masks above {choice['box_threshold']:g}" if taken else ""
        log.info("%s: %s re-prompted with margin %s%s", task.name, group, margin, above)
    return out


def whole_volume_summaries(
    scorer: Scorer, tight_probs: torch.Tensor, found: Runs, means: dict[str, torch.Tensor], policed: Policed
) -> dict[str, dict]:
    """Every row's summary on the whole test volumes: the tight box, each group's runs and ensemble, the
    post-processed rows (as predict makes them on whole volumes)."""
    summaries = {TIGHT_BOX: summarize_volumes(scorer.whole(tight_probs))}
    for group, scores in found.whole.items():
        summaries[group] = summarize_volume_runs(scores)
        if found.counts[group] > 1:
            summaries[f"{group}_{ENSEMBLE}"] = summarize_volumes(scorer.whole(means[group]))
    for row, probs in {**policed.rows, **policed.whole_rows}.items():
        summaries[row] = summarize_volumes(scorer.whole(probs))
    for row, summary in summaries.items():
        log.info(
            "%s on whole volumes: 3D Dice %.2f, HD95 %.1f mm, false slices %g, missed %g",
            row, summary["whole_dice_3d"]["mean"], summary["whole_hd95_mm"]["mean"], summary["slices"]["false"],
            summary["slices"]["missed"],
        )  # fmt: skip
    return summaries


def metrics_result(
    everything: Settings, scope: Scope, scored: list[Scored], whole: dict[str, dict], found: Runs, policed: Policed,
    volumes_kind: bool, tolerance: float,
) -> dict:  # fmt: skip
    """The metrics JSON: the rows' blocks, the whole-volume ones, the baselines' names and the policy recorded."""
    reprompting = everything.reprompt
    result = {
        "test_images": len(scope.rows),
        "shots": everything.train.shots,
        "select": everything.train.select,
        "nsd_tolerance_mm": tolerance,
        "std": "over runs for each recipe/regime; over test images for tight_box and the ensembles "
        "(over patients for dice_3d)",
        **metric_blocks(scored),
        **metrics_json(whole),
    }
    if scope.volumes:
        present = int(scope.truth[scope.in_whole].flatten(1).any(1).sum())
        result["whole_volumes"] = {
            "volumes": len(scope.volumes), "slices": len(scope.in_whole), "slices_with_structure": present
        }  # fmt: skip
    if found.titles:
        result["methods"] = dict(sorted(found.titles.items()))  # the baselines' names in the table
    if policed.margins:  # the policy predict --reprompt-from follows (autoprompt.inference.policy)
        result["reprompt"] = {
            "margin": reprompting.margin,
            "groups": policed.margins,
            **metrics_record(reprompting, volumes_kind),
        }
    if policed.fitted:
        result["reprompt"]["volume"]["slices_prompted_again"] = policed.fitted
    if policed.emptied:
        result["reprompt"]["presence"]["slices_emptied"] = policed.emptied
    if everything.train.select == "best":
        result["selected_epochs"] = found.selected_epochs
    return result


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
    scope = load_scope(task, rows)
    scorer = Scorer(scope, threshold, settings.nsd_tolerance_mm)
    tight_probs = decode(decoder, scope.embeddings[: len(rows)], task.label_size, batch, device, boxes=scope.boxes)
    tight_probs = torch.cat([tight_probs, torch.zeros(len(scope.extra), *tight_probs.shape[1:])])  # no box: no mask
    refs = references(
        scope.masks, task.has_masks(rows), tight_probs[: len(rows)] > threshold, task.spacing(rows),
        scope.subjects(task),
    )  # fmt: skip
    rule = presence_rule(reprompting.presence)
    # the runs' agreement needs each run's probabilities (float16: N x S x S x 2 bytes a run), as predict has them
    agreeing = rule is not None and "agreement" in rule.cues

    found = Runs({ref.name: {} for ref in refs})
    val = task.rows("val") if reprompting.auto else rows.iloc[:0]  # the images that choose the margins
    val_embeddings = task.load_embeddings(val) if len(val) else None
    predict_heads(run_dirs, task, scope, decoder, val_embeddings, found, refs, scorer, agreeing, batch, device)
    planned = set(everything.baseline.methods)  # runs of methods no longer planned may be kept there: left out
    baseline_dirs = runs.finished_runs(args.baselines, runs.MODEL) if args.baselines else []
    baseline_dirs = [d for d in baseline_dirs if runs.run_key(d).split("/")[0] in planned]
    images = predict_baselines(baseline_dirs, task, scope, decoder, found, refs, scorer, batch, device)
    means = found.means()
    heads = sorted({runs.group_key(key) for key in found.selected_epochs}) if reprompting.margin is not None else []
    policed = post_process(
        task, scope, decoder, found, means, heads, reprompting, val, val_embeddings, threshold, batch, device
    )
    scored = [
        score_rows(
            ref, found.scores[ref.name], means, tight_probs if ref.name == MASK else None, threshold,
            scorer.tolerance, policed.rows,
        )
        for ref in refs
    ]  # fmt: skip
    whole = whole_volume_summaries(scorer, tight_probs, found, means, policed) if scope.volumes else {}
    result = metrics_result(everything, scope, scored, whole, found, policed, task.volumes, scorer.tolerance)
    write_text(args.metrics, json.dumps(result, indent=2) + "\n")
    with atomic_path(args.per_image) as tmp:
        per_image(rows, scored).to_csv(tmp, index=False, float_format="%.5f")

    shown = {TIGHT_BOX: tight_probs[:count]}
    for group, n in found.counts.items():  # each recipe's and baseline's few-shot ensemble (or its one run)
        if group.endswith(("/fewshot", "/oneshot")):
            shown[f"{group}_{ENSEMBLE}" if n > 1 else group] = means[group][:count]
    shown_images = images[:count] if images is not None else task.load_images(rows.iloc[:count])
    with atomic_path(args.figure) as tmp:
        figures.examples(
            tmp, shown_images, scope.masks[:count], {k: v > threshold for k, v in shown.items()}, task.name
        )
    log_dice(args.task, scored)


if __name__ == "__main__":
    run(main)
