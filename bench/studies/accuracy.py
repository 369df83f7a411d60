"""Few-shot accuracy on real HC18 images: the tight-box prompt against each training recipe, last and best epoch.

The real HC18 sample (``--hc18``, default ``../shared/data/hc18-sample``) is prepared by the pipeline's own prepare
and encode stages with LiteMedSAM and the paper configuration's ``prepare.hc18`` settings (first image of each
subject, the authors' split lists, crop 640), in a work folder that is kept between runs (``--work``). Then, for each
recipe of ``params.yaml`` (``train.recipe``): 10 shots drawn from the sample's training split, 3 subsets x 1 seed,
each run validated every ``--validate-every`` epochs against the box-prompted masks of the validation split. The
test split is scored with the last epoch's head and with the best one by that validation Dice (one training run
gives both), each run alone and as an ensemble (the runs' mean probability, thresholded once). Runs are shared by
``--jobs`` worker processes of one torch thread each.

Re-prompting (``autoprompt.inference.reprompt``): the last heads' masks give boxes, loosened by each margin of
``MARGINS`` and decoded again, beside the tight box loosened by the same margin. The margin is chosen on the
validation split twice: by its masks' Dice, and as ``reprompt.margin: auto`` does, by its tight boxes alone
(``choose_margin``); both are reported on the test split.

Writes ``bench/results/accuracy.json`` (``--name``: another name, e.g. for a subset of the recipes).
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import common
import torch
import yaml

from autoprompt.data.tasks import Task, TaskFiles, load_task
from autoprompt.device import pin_cpu_numerics
from autoprompt.evaluation.metrics import dice, summarize
from autoprompt.inference.reprompt import choose_margin, loosen, reprompt
from autoprompt.model import backbones, checkpoints
from autoprompt.model.decoding import PromptDecoder, decode
from autoprompt.settings import load_settings, settings_from
from autoprompt.training.fewshot import Run, draw_areas, plan_runs
from autoprompt.training.head_jobs import open_views
from autoprompt.training.inputs import TaskInputs
from autoprompt.training.loop import TrainConfig, train_head
from autoprompt.training.pseudo_labels import box_prompted_masks
from autoprompt.training.validation import ValidationSet
from stages import augment, encode, prepare

log = logging.getLogger("bench.accuracy")

BACKBONE = "lite_medsam"
THRESHOLD = 0.5
MARGINS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2)  # re-prompt margins studied (reprompt.margin)
CPU = torch.device("cpu")


def workspace(work: Path, hc18: Path, params: dict, shots: int, subsets: int) -> Path:
    """Prepare and encode the sample, and encode the views of its few-shot images, under ``work`` (kept between
    runs; the stages skip what is done)."""
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "raw"
    if not raw.exists():
        raw.symlink_to(hc18.resolve())
    settings = copy.deepcopy(params)
    settings["datasets"] = ["hc18"]
    settings["tasks"] = {"hc18": params["tasks"]["hc18"]}
    settings["encode"].update({"backbone": BACKBONE, "checkpoint": None, "device": "cpu", "threads": 2})
    settings["train"].update({"shots": shots, "subsets": subsets, "subset_seed": 0})
    (work / "params.yaml").write_text(yaml.safe_dump(settings))
    p = ["--params", str(work / "params.yaml")]
    store, index, emb = work / "prepared.zarr", work / "prepared.csv", work / "embeddings.zarr"
    if not store.exists():
        prepare.main([*p, "--dataset", "hc18", "--raw", str(raw), "--store", str(store), "--index", str(index)])
    encode.main([*p, "--dataset", "hc18", "--store", str(store), "--out", str(emb)])
    views = ["--store", str(store), "--index", str(index), "--out", str(work / "views.zarr")]
    augment.main([*p, "--dataset", "hc18", *views])
    return work


@functools.cache
def load_workspace(work: Path) -> tuple[Task, PromptDecoder, ValidationSet, TaskInputs]:
    """The task, the frozen decoder, the validation set and the training inputs (views included), once per
    process."""
    settings = load_settings(work / "params.yaml")
    files = TaskFiles(work / "prepared.zarr", work / "prepared.csv", work / "embeddings.zarr")
    task = load_task("hc18", settings.task("hc18"), files, settings.prepare.min_foreground, BACKBONE)
    decoder = backbones.build_prompt_decoder(BACKBONE, checkpoints.resolve_checkpoint(BACKBONE, None))
    val = task.rows("val")
    embeddings = task.load_embeddings(val)
    masks = box_prompted_masks(decoder, embeddings, task.boxes(val), task.label_size, 8, CPU)
    views = settings.augment
    inputs = TaskInputs(task, decoder, CPU, 8, open_views(work / "views.zarr", task, views), views)
    return task, decoder, ValidationSet(embeddings, masks, task.load_masks(val), batch_size=8), inputs


def train_one(work: Path, config: TrainConfig, recipe: str, run: Run) -> dict:
    """One run of a recipe (in a worker process): its test probabilities with the last and the best head."""
    common.setup_logging()
    pin_cpu_numerics(1)  # the pipeline's CPU numerics, one thread per worker
    task, decoder, validation, inputs = load_workspace(work)
    rows = task.rows(ids=run.ids)
    embeddings, boxes = task.load_embeddings(rows), task.boxes(rows)
    pseudo = None
    if config.loss.pseudo_label:
        pseudo = box_prompted_masks(decoder, embeddings, boxes, task.label_size, 8, CPU)
    start = time.perf_counter()
    views = inputs.views(run.ids) if config.augment.views and inputs.has_views(run.ids) else None
    result = train_head(
        embeddings, boxes, task.label_size, decoder, config, run.seed, CPU, pseudo, validation, views=views
    )
    seconds = time.perf_counter() - start
    probs = {}
    for split in ("test", "val"):
        inputs = task.load_embeddings(task.rows(split))
        probs[split] = {
            name: decode(decoder, inputs, task.label_size, 8, CPU, head=head).half()
            for name, head in (("last", result.last), ("best", result.head))
        }
    log.info("%s %s trained in %.0f s (best epoch %d)", recipe, run.key, seconds, result.epoch)
    return {
        "recipe": recipe,
        "run": run,
        "probs": probs["test"],
        "val_probs": probs["val"],
        "best_epoch": result.epoch,
        "seconds": seconds,
    }


def summarize_recipe(outcomes: list[dict], masks: torch.Tensor, config: TrainConfig) -> dict:
    """Per run and over runs: test Dice of the last and the best head, alone and as an ensemble."""
    runs, out = [], {"config": {k: str(v) for k, v in config.__dict__.items()}}
    for outcome in outcomes:
        scores = {name: common.dice_percent(probs.float(), masks) for name, probs in outcome["probs"].items()}
        runs.append(
            {
                "run": outcome["run"].key,
                "ids": list(outcome["run"].ids),
                "test_dice": scores,
                "best_epoch": outcome["best_epoch"],
                "train_seconds": round(outcome["seconds"], 1),
            }
        )
    for name in ("last", "best"):
        out[name] = summarize([r["test_dice"][name] / 100 for r in runs])
        out[f"{name}_ensemble"] = common.dice_percent(
            torch.stack([o["probs"][name].float() for o in outcomes]).mean(0), masks
        )
    out["runs"] = runs
    return out


def reprompt_study(outcomes: list[dict], task: Task, decoder: PromptDecoder) -> dict:
    """The last heads re-prompted with the loosened boxes of their masks, for each margin of ``MARGINS``, on the
    validation and the test split: Dice of the runs and of their ensemble, beside the tight box loosened by the same
    margin; and the margin whose re-prompted ensemble scores best on the validation masks."""
    out: dict = {"margins": list(MARGINS), "head": "last"}
    size = task.label_size
    for split, key in (("val", "val_probs"), ("test", "probs")):
        rows = task.rows(split)
        embeddings, masks, boxes = task.load_embeddings(rows), task.load_masks(rows), task.boxes(rows)
        runs = [o[key]["last"].float() for o in outcomes]
        runs.append(torch.stack(runs).mean(0))  # the ensemble, last
        grid = {}
        for margin in MARGINS:
            refined = [
                common.dice_percent(reprompt(decoder, embeddings, p, margin, THRESHOLD, 8, CPU), masks) for p in runs
            ]
            loosened = decode(decoder, embeddings, size, 8, CPU, boxes=loosen(boxes, margin, size))
            grid[str(margin)] = {
                "runs": summarize([d / 100 for d in refined[:-1]]),
                "ensemble": refined[-1],
                "tight_box_loosened": common.dice_percent(loosened, masks),
            }
            log.info(
                "re-prompt margin %s on %s: ensemble %.2f (tight box loosened: %.2f)",
                margin,
                split,
                refined[-1],
                grid[str(margin)]["tight_box_loosened"],
            )
        out[split] = {"head": common.dice_percent(runs[-1], masks), "by_margin": grid}
        if split == "val":  # as reprompt.margin: auto chooses, from the validation boxes alone
            chosen, scores = choose_margin(decoder, embeddings, boxes, runs[-1], list(MARGINS), THRESHOLD, 8, CPU)
            out["chosen_on_validation_boxes"] = {"margin": chosen, "box_iou": scores}
    out["chosen_on_validation"] = max(MARGINS, key=lambda m: out["val"]["by_margin"][str(m)]["ensemble"])
    return out


def workspace_parser(description: str, name: str, subsets: int, subsets_help: str) -> argparse.ArgumentParser:
    """The options of a bench that trains heads on the real HC18 sample in a kept work folder (``workspace``): this
    script's and ``bench/draw.py``'s."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="real HC18 in the official layout")
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml")
    parser.add_argument("--work", type=Path, default=common.BENCH / ".work" / name, help="kept between runs")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--subsets", type=int, default=subsets, help=subsets_help)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, one torch thread each")
    return parser


def start(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, dict]:
    """Parse, log the machine, and refuse a missing HC18 sample in one line."""
    args, machine = common.parse_and_start(parser)
    if not (args.hc18 / "training_set").is_dir():
        raise SystemExit(f"{args.hc18}: real HC18 sample not found (no training_set/); pass --hc18 PATH")
    return args, machine


def data_record(task: Task) -> dict:
    """What a result says of the data: the sample, its split and the images of each part."""
    return {
        "source": "real HC18 sample (../shared/data/hc18-sample), first image of each subject",
        "split": "the authors' lists (autoprompt/reference/splits)",
        "images": {s: len(task.rows(s)) for s in ("train", "val", "test")},
    }


def main() -> None:
    parser = workspace_parser(__doc__, "accuracy", 3, "few-shot subsets, seed 0 each")
    parser.add_argument("--validate-every", type=int, default=5, help="epochs between validations")
    parser.add_argument("--recipes", nargs="*", help="recipes to run (default: train.recipe of --params)")
    parser.add_argument("--name", default="accuracy", help="results file bench/results/<name>.json")
    args, machine = start(parser)
    params = yaml.safe_load(args.params.read_text())
    work = workspace(args.work.resolve(), args.hc18, params, args.shots, args.subsets)
    task, decoder, _, _ = load_workspace(work)
    test = task.rows("test")
    masks = task.load_masks(test)
    tight = decode(decoder, task.load_embeddings(test), task.label_size, 8, CPU, boxes=task.boxes(test))
    tight_dice = dice(tight > THRESHOLD, masks).numpy()
    log.info("tight box: %.2f on %d test images", 100 * tight_dice.mean(), len(test))

    recipes = args.recipes or list(load_settings(args.params).train.recipe)
    train = settings_from(
        {"train": {**params["train"], "select": "best", "validate_every": args.validate_every}}, str(args.params)
    ).train
    configs = {recipe: TrainConfig.from_settings(train, recipe, "fewshot") for recipe in recipes}
    train_rows = task.rows("train")
    areas = draw_areas(train_rows, train)  # as the workspace's augment stage drew the shots whose views it encoded
    plan = plan_runs(train_rows["id"].tolist(), args.shots, args.subsets, [0], 0, False, "hc18", areas=areas)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_one, work, configs[recipe], recipe, run) for recipe in recipes for run in plan]
        outcomes = [future.result() for future in futures]
    by_recipe = {recipe: [o for o in outcomes if o["recipe"] == recipe] for recipe in recipes}
    results = {
        recipe: summarize_recipe(done, masks, configs[recipe]) | {"reprompt": reprompt_study(done, task, decoder)}
        for recipe, done in by_recipe.items()
    }
    for recipe, result in results.items():
        log.info(
            "%s: last %.2f ± %.2f (ensemble %.2f), best %.2f ± %.2f (ensemble %.2f)",
            recipe,
            result["last"]["mean"],
            result["last"]["std"],
            result["last_ensemble"],
            result["best"]["mean"],
            result["best"]["std"],
            result["best_ensemble"],
        )
    rows = [
        (recipe, row, result[row]["mean"] if isinstance(result[row], dict) else result[row])
        for recipe, result in results.items()
        for row in ("last", "best", "last_ensemble", "best_ensemble")
    ]
    best = max(rows, key=lambda item: item[2])
    reprompted = {}
    for recipe, result in results.items():
        study = result["reprompt"]
        chosen = study["test"]["by_margin"][str(study["chosen_on_validation"])]
        by_boxes = study["chosen_on_validation_boxes"]["margin"]
        boxes_ensemble = (
            study["test"]["head"] if by_boxes is None else study["test"]["by_margin"][str(by_boxes)]["ensemble"]
        )
        reprompted[recipe] = {
            "margin": study["chosen_on_validation"],
            "ensemble": chosen["ensemble"],
            "runs": chosen["runs"],
            "gap_to_tight_box": round(100 * float(tight_dice.mean()) - chosen["ensemble"], 2),
            "gap_to_tight_box_loosened": round(chosen["tight_box_loosened"] - chosen["ensemble"], 2),
            "by_validation_boxes": {  # reprompt.margin: auto
                "margin": by_boxes,
                "ensemble": boxes_ensemble,
                "gap_to_tight_box": round(100 * float(tight_dice.mean()) - boxes_ensemble, 2),
            },
        }
        log.info("%s re-prompted at the validation's margin: %s", recipe, reprompted[recipe])
    common.write_result(
        args.name,
        {
            "machine": machine,
            "data": data_record(task),
            "settings": {
                "backbone": BACKBONE,
                "encoder": " ".join(str(task.embeddings.attrs.get(k)) for k in ("runtime", "precision")),
                "shots": args.shots,
                "subsets": args.subsets,
                "seeds": [0],
                "validate_every": args.validate_every,
                "views": params["augment"],
                "params": str(args.params.resolve().relative_to(common.REPO)),
                "threshold": THRESHOLD,
                "jobs": args.jobs,
            },
            "tight_box": summarize(tight_dice) | {"over": "test images"},
            "recipes": results,
            "best_row": {
                "recipe": best[0],
                "row": best[1],
                "dice": best[2],
                "gap_to_tight_box": round(100 * float(tight_dice.mean()) - best[2], 2),
            },
            "reprompted_last_ensemble": reprompted,
            "notes": "test Dice (%); a recipe's last/best: mean ± std over runs; *_ensemble: one predictor; "
            "reprompt: the last heads re-prompted with their masks' boxes loosened by each margin, the margin chosen "
            "on the validation masks (reprompted_last_ensemble: at that margin, on the test split), and on the "
            "validation boxes alone as reprompt.margin: auto does (by_validation_boxes; None: not re-prompted)",
        },
    )


if __name__ == "__main__":
    main()
