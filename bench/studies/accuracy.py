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

``--set KEY=VALUE`` changes a key of ``--params`` for this study (``augment.zoom=0.25``, ``augment.count=0``): each
entry of ``accuracy`` in ``bench/params.yaml`` is one such study, a stage of ``bench/dvc.yaml``.

    python -m bench.studies.accuracy [--recipes augmented] [--set augment.zoom=0.7] [--name NAME] [--jobs 3]

Writes ``bench/results/accuracy.json`` (``--name``: another name, e.g. for a subset of the recipes).
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import torch

from autoprompt.data.tasks import Task
from autoprompt.evaluation.metrics import dice, summarize
from autoprompt.inference.reprompt import choose_margin, loosen, reprompt
from autoprompt.model.decoding import PromptDecoder, decode
from autoprompt.settings import settings_from
from autoprompt.training.fewshot import draw_areas, plan_runs
from autoprompt.training.loop import TrainConfig
from bench.lib import common
from bench.lib.workspace import (
    BACKBONE,
    CPU,
    THRESHOLD,
    data_record,
    load_workspace,
    start,
    study_params,
    train_one,
    workspace,
    workspace_parser,
)

log = logging.getLogger("bench.accuracy")

MARGINS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2)  # re-prompt margins studied (reprompt.margin)


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
            chosen = choose_margin(decoder, embeddings, boxes, runs[-1], list(MARGINS), THRESHOLD, 8, CPU)
            out["chosen_on_validation_boxes"] = {"margin": chosen.margin, "box_iou": chosen.scores}
    out["chosen_on_validation"] = max(MARGINS, key=lambda m: out["val"]["by_margin"][str(m)]["ensemble"])
    return out


def main() -> None:
    parser = workspace_parser(__doc__, "accuracy", 3, "few-shot subsets, seed 0 each")
    parser.add_argument("--validate-every", type=int, default=5, help="epochs between validations")
    parser.add_argument("--recipes", nargs="*", help="recipes to run (default: train.recipe of --params)")
    parser.add_argument("--name", default="accuracy", help="results file bench/results/<name>.json")
    args, machine = start(parser)
    params = study_params(args)
    work = workspace(args.work.resolve(), args.hc18, params, args.shots, args.subsets)
    task, decoder, _, _ = load_workspace(work)
    test = task.rows("test")
    masks = task.load_masks(test)
    tight = decode(decoder, task.load_embeddings(test), task.label_size, 8, CPU, boxes=task.boxes(test))
    tight_dice = dice(tight > THRESHOLD, masks).numpy()
    log.info("tight box: %.2f on %d test images", 100 * tight_dice.mean(), len(test))

    recipes = args.recipes or list(params["train"]["recipe"])
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
                "set": args.set,
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
