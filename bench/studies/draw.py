"""Shots drawn uniformly or one per stratum of box area (``train.draw``): test Dice and misses on real HC18 images.

Ten images drawn uniformly rarely include the smallest heads, and the misses of a few-shot head are mostly there.
``train.draw: box_area`` cuts the training split, sorted by tight-box area, into ``shots`` strata and draws one
image from each. This study trains the same recipe on ``--subsets`` subsets of each draw (seed 0), on the real
HC18 sample prepared and encoded as ``bench.studies.accuracy`` does (``bench.lib.workspace``: its work folder, its
worker processes), with the last epoch's head, and scores the test split: each run, the ensemble of the runs, and
the ensemble re-prompted at the margin ``reprompt.margin: auto`` chooses on the validation boxes. Misses: test
images under 50 Dice, and masks empty where the reference is not (``autoprompt.evaluation.metrics``). It also
records which box-area percentiles each subset covers.

    python -m bench.studies.draw [--subsets 4] [--recipe augmented]

Writes ``bench/results/draw.json``.
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
from autoprompt.settings import settings_from
from autoprompt.training.fewshot import box_areas, draw_areas, plan_runs
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

DRAWS = ("uniform", "box_area")


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


def draw_folder(work: Path, draw: str) -> Path:
    """The draw's work folder: the first draw's prepared sample and embeddings, linked, and a views store of its own
    (the augment stage encodes the views of one draw's shots)."""
    folder = work / draw
    folder.mkdir(parents=True, exist_ok=True)
    first = work / DRAWS[0]
    if folder != first:
        for name in ("prepared.zarr", "prepared.csv", "embeddings.zarr"):
            if not (folder / name).exists():
                (folder / name).symlink_to(first / name)
    return folder


def run_draw(args: argparse.Namespace, params: dict, draw: str, recipe: str) -> dict:
    """Every subset of one draw trained, and the runs, their ensemble and its re-prompted masks scored."""
    drawn = copy.deepcopy(params)
    drawn["train"]["draw"] = draw
    work = workspace(draw_folder(args.work.resolve(), draw), args.hc18, drawn, args.shots, args.subsets)
    task, decoder, _, _ = load_workspace(work)
    train_rows = task.rows("train")
    train = settings_from({"train": {**drawn["train"], "select": "last", "validate_every": 0}}, str(args.params)).train
    plan = plan_runs(
        train_rows["id"].tolist(), args.shots, args.subsets, [0], 0, False, "hc18", areas=draw_areas(train_rows, train)
    )
    config = TrainConfig.from_settings(train, recipe, "fewshot")
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcomes = [f.result() for f in [pool.submit(train_one, work, config, recipe, run) for run in plan]]
    test, val = task.rows("test"), task.rows("val")
    masks, embeddings = task.load_masks(test), task.load_embeddings(test)
    runs = [scored(o["probs"]["last"], masks) | {"run": o["run"].key, "ids": list(o["run"].ids)} for o in outcomes]
    for run, outcome in zip(runs, outcomes, strict=True):
        run["box_area_percentiles"] = percentile_ranks(outcome["run"].ids, box_areas(train_rows))
    ensemble = torch.stack([o["probs"]["last"].float() for o in outcomes]).mean(0)
    val_ensemble = torch.stack([o["val_probs"]["last"].float() for o in outcomes]).mean(0)
    candidates = list(settings_from({"reprompt": params["reprompt"]}, str(args.params)).reprompt.candidates)
    margin = choose_margin(
        decoder, task.load_embeddings(val), task.boxes(val), val_ensemble, candidates, THRESHOLD, 8, CPU
    ).margin
    again = ensemble if margin is None else reprompt(decoder, embeddings, ensemble, margin, THRESHOLD, 8, CPU)
    result = {
        "runs": runs,
        "over_runs": {
            "dice": summarize([r["dice"] / 100 for r in runs]),
            "below_50_dice": float(np.mean([r["below_50_dice"] for r in runs])),
            "empty": float(np.mean([r["empty"] for r in runs])),
        },
        "ensemble": scored(ensemble, masks),
        "ensemble_reprompted": scored(again, masks) | {"margin": margin},
    }
    log.info("%s: runs %s, ensemble %s, re-prompted %s", draw, result["over_runs"], result["ensemble"],
             result["ensemble_reprompted"])  # fmt: skip
    return result


def main() -> None:
    parser = workspace_parser(__doc__, "draw", 4, "subsets of each draw, seed 0 each")
    parser.add_argument("--recipe", default="augmented", help="the recipe trained (train.recipes of --params)")
    args, machine = start(parser)
    params = study_params(args)
    draws: dict[str, dict] = {}
    for draw in DRAWS:  # the result is written after each draw: a stopped run keeps what it measured
        draws[draw] = run_draw(args, params, draw, args.recipe)
        write(args, machine, draws)


def write(args: argparse.Namespace, machine: dict, draws: dict[str, dict]) -> None:
    """``bench/results/draw.json`` with the draws measured so far and the tight box's scores."""
    task, decoder, _, _ = load_workspace(draw_folder(args.work.resolve(), DRAWS[0]))
    test = task.rows("test")
    tight = decode(decoder, task.load_embeddings(test), task.label_size, 8, CPU, boxes=task.boxes(test))
    common.write_result(
        "draw",
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
            "split's",
        },
    )


if __name__ == "__main__":
    main()
