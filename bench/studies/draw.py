"""Shots drawn uniformly, one per stratum of box area, or as ``autoprompt suggest`` lists them (``train.draw``): test
Dice and misses on real HC18 images.

Ten images drawn uniformly rarely include the smallest heads, and the misses of a few-shot head are mostly there.
``train.draw: box_area`` cuts the training split, sorted by tight-box area, into ``shots`` strata and draws one image
from each; ``suggest`` takes the central image of each of ten k-means clusters of the split's pooled embeddings, as
``autoprompt suggest`` lists the images a user should box (subset 0 with k-means++ seed 0, as ``suggest``; the others
with seeded seeds). This study trains the same recipe on ``--subsets`` subsets of each draw (seed 0), on the real HC18
sample prepared and encoded as ``bench.studies.accuracy`` does (``bench.lib.workspace``: its work folder, its worker
processes), with the last epoch's head, and scores the test split: each run, alone and re-prompted at the margin that
``reprompt.margin: auto`` chooses on the validation boxes for it (a user's model: one ten), the ensemble of the runs,
and that ensemble re-prompted: with the masks' own boxes, as ``params.yaml`` pins, and (the ensemble alone: five box
thresholds cost each run minutes of decoding) with the box threshold chosen among ``reprompt.box_thresholds`` with the
margin (``box_threshold: auto``, ``autoprompt train``'s default). Misses: test images under 50 Dice, and masks empty
where the reference is not (``autoprompt.evaluation.metrics``). It also records which box-area percentiles each subset
covers.

    python -m bench.studies.draw [--subsets 4] [--recipe augmented] [--draws uniform box_area suggest] [--name draw]

Writes ``bench/results/NAME.json``. Every call shares the work folder (``--work``, default ``bench/.work/draw``): the
sample is prepared and encoded once, in the first draw's folder, and each draw encodes its shots' views in its own;
two calls on one folder at once would clash.
"""

from __future__ import annotations

import argparse
import copy
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from autoprompt.evaluation.metrics import MISS, dice, empty_misses, summarize
from autoprompt.inference.reprompt import choose_margin, reprompt
from autoprompt.model.decoding import decode
from autoprompt.settings import RepromptSettings, settings_from
from autoprompt.training.fewshot import box_areas, draw_areas, draw_features, plan_runs
from autoprompt.training.loop import TrainConfig
from bench.lib import common
from bench.lib.workspace import (
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

log = logging.getLogger("bench.draw")

DRAWS = ("uniform", "box_area", "suggest", "kcenter")


def scored(probs: torch.Tensor, masks: torch.Tensor) -> dict:
    """Test Dice (%) of N x S x S probabilities, and their misses."""
    pred = probs.float() > THRESHOLD
    values = 100 * dice(pred, masks)
    return {
        "dice": round(float(values.mean()), 4),
        "below_50_dice": int((values < MISS).sum()),
        "empty": int(empty_misses(pred, masks).sum()),
    }


def percentile_ranks(ids: tuple[str, ...], areas: dict[str, float]) -> list[float]:
    """Where each id's box area sits among the training split's (0: smallest, 100: largest; ties: the highest)."""
    ordered = sorted(areas.values())
    top = max(len(ordered) - 1, 1)
    return [round(100 * float(np.searchsorted(ordered, areas[i], side="right") - 1) / top, 1) for i in ids]


def draw_folder(work: Path, draw: str, first: str) -> Path:
    """The draw's work folder: the ``first`` draw's prepared sample and embeddings, linked, and a views store of its
    own (the augment stage encodes the views of one draw's shots)."""
    folder = work / draw
    folder.mkdir(parents=True, exist_ok=True)
    first = work / first
    if folder != first:
        for name in ("prepared.zarr", "prepared.csv", "embeddings.zarr"):
            if not (folder / name).exists():
                (folder / name).unlink(missing_ok=True)  # a link to a first draw's folder that is gone
                (folder / name).symlink_to(first / name)
    return folder


class Reprompter:
    """Re-prompting as ``reprompt.margin: auto`` does it, for one workspace and a ``reprompt`` section: the margin
    (and box threshold) chosen on the validation boxes from a head's (or an ensemble's) validation probabilities,
    then the test masks decoded again. The validation and test embeddings are read once."""

    def __init__(self, work: Path, reprompt: RepromptSettings) -> None:
        task, self.decoder, _, _ = load_workspace(work)
        val, test = task.rows("val"), task.rows("test")
        self.val_embeddings, self.val_boxes = task.load_embeddings(val), task.boxes(val)
        self.test_embeddings = task.load_embeddings(test)
        self.candidates, self.box_thresholds = list(reprompt.candidates), list(reprompt.box_thresholds)

    def __call__(
        self, val_probs: torch.Tensor, test_probs: torch.Tensor, core: bool = False
    ) -> tuple[torch.Tensor, dict]:
        """N x S x S test probabilities re-prompted, and the margin and box threshold chosen. ``core``: the box
        threshold chosen with the margin among ``reprompt.box_thresholds`` (``box_threshold: auto``); else the masks'
        own boxes."""
        choice = choose_margin(self.decoder, self.val_embeddings, self.val_boxes, val_probs.float(), self.candidates,
                               THRESHOLD, 8, CPU, self.box_thresholds if core else None)  # fmt: skip
        chosen = {"margin": choice.margin, "box_threshold": choice.box_threshold}
        if choice.margin is None:
            return test_probs.float(), chosen
        again = reprompt(self.decoder, self.test_embeddings, test_probs.float(), choice.margin, THRESHOLD, 8, CPU,
                         box_threshold=choice.box_threshold)  # fmt: skip
        return again, chosen


def over_runs(runs: list[dict]) -> dict:
    """The runs' mean Dice (``summarize``), and their mean miss counts."""
    return {
        "dice": summarize([r["dice"] / 100 for r in runs]),
        "below_50_dice": float(np.mean([r["below_50_dice"] for r in runs])),
        "empty": float(np.mean([r["empty"] for r in runs])),
    }


def run_draw(args: argparse.Namespace, params: dict, draw: str, recipe: str) -> dict:
    """Every subset of one draw trained, and the runs, their ensemble and their re-prompted masks scored."""
    drawn = copy.deepcopy(params)
    drawn["train"]["draw"] = draw
    folder = draw_folder(args.work.resolve(), draw, args.draws[0])
    work = workspace(folder, args.hc18, drawn, args.shots, args.subsets)
    task, _, _, _ = load_workspace(work)
    train_rows = task.rows("train")
    train = settings_from({"train": {**drawn["train"], "select": "last", "validate_every": 0}}, str(args.params)).train
    plan = plan_runs(
        train_rows["id"].tolist(), args.shots, args.subsets, [0], 0, False, "hc18",
        areas=draw_areas(train_rows, train), spread=draw_features(train_rows, train, task.embeddings),
    )  # fmt: skip
    config = TrainConfig.from_settings(train, recipe, "fewshot")
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcomes = [f.result() for f in [pool.submit(train_one, work, config, recipe, run) for run in plan]]
    masks = task.load_masks(task.rows("test"))
    runs = [scored(o["probs"]["last"], masks) | {"run": o["run"].key, "ids": list(o["run"].ids)} for o in outcomes]
    areas = box_areas(train_rows)
    for run, outcome in zip(runs, outcomes, strict=True):
        run["box_area_percentiles"] = percentile_ranks(outcome["run"].ids, areas)
    ensemble = torch.stack([o["probs"]["last"].float() for o in outcomes]).mean(0)
    val_ensemble = torch.stack([o["val_probs"]["last"].float() for o in outcomes]).mean(0)
    result = {"runs": runs, "over_runs": over_runs(runs), "ensemble": scored(ensemble, masks)}
    again = Reprompter(work, settings_from({"reprompt": params["reprompt"]}, str(args.params)).reprompt)
    each = []  # each run from the masks' own boxes; five box thresholds would cost each run minutes of decoding
    for run, outcome in zip(runs, outcomes, strict=True):
        probs, chosen = again(outcome["val_probs"]["last"], outcome["probs"]["last"])
        each.append(scored(probs, masks) | chosen | {"run": run["run"]})
    result["runs_reprompted_masks_boxes"] = each
    result["over_runs_reprompted_masks_boxes"] = over_runs(each)
    for name, core in (("masks_boxes", False), ("box_threshold_auto", True)):
        probs, chosen = again(val_ensemble, ensemble, core)
        result[f"ensemble_reprompted_{name}"] = scored(probs, masks) | chosen
    log.info("%s: runs %s, re-prompted %s; ensemble %s, re-prompted %s", draw, result["over_runs"]["dice"],
             result["over_runs_reprompted_masks_boxes"]["dice"], result["ensemble"],
             result["ensemble_reprompted_masks_boxes"])  # fmt: skip
    return result


def main() -> None:
    parser = workspace_parser(__doc__, "draw", 4, "subsets of each draw, seed 0 each")
    parser.add_argument("--recipe", default="augmented", help="the recipe trained (train.recipes of --params)")
    parser.add_argument("--draws", nargs="+", choices=DRAWS, default=list(DRAWS), help="the draws compared")
    parser.add_argument("--name", default="draw", help="the results file: bench/results/NAME.json")
    args, machine = start(parser)
    params = study_params(args)
    draws: dict[str, dict] = {}
    for draw in args.draws:  # the result is written after each draw: a stopped run keeps what it measured
        draws[draw] = run_draw(args, params, draw, args.recipe)
        write(args, machine, draws)


def write(args: argparse.Namespace, machine: dict, draws: dict[str, dict]) -> None:
    """``bench/results/<--name>.json`` with the draws measured so far and the tight box's scores."""
    task, decoder, _, _ = load_workspace(draw_folder(args.work.resolve(), args.draws[0], args.draws[0]))
    test = task.rows("test")
    tight = decode(decoder, task.load_embeddings(test), task.label_size, 8, CPU, boxes=task.boxes(test))
    common.write_result(
        args.name,
        {
            "machine": machine,
            "data": data_record(task),
            "settings": {
                "backbone": "lite_medsam",
                "recipe": args.recipe,
                "shots": args.shots,
                "subsets": args.subsets,
                "seeds": [0],
                "select": "last",
                "params": str(args.params.resolve().relative_to(common.REPO)),
                "set": args.set,
                "jobs": args.jobs,
            },
            "tight_box": scored(tight, task.load_masks(test)),
            "draws": draws,
            "notes": "test Dice (%); below_50_dice and empty: misses, counted per run (over_runs: the mean count) "
            "and for the ensembles; box_area_percentiles: where each shot's tight box sits among the training "
            "split's; runs_reprompted_* and ensemble_reprompted_*: re-prompted at the margin chosen on the "
            "validation boxes, from the masks' own boxes (masks_boxes) or with the box threshold chosen with it "
            "(box_threshold_auto, the ensemble alone)",
        },
    )


if __name__ == "__main__":
    main()
