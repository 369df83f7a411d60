"""Few-shot accuracy on real HC18 images: the tight-box prompt against each training recipe, last and best epoch.

The real HC18 sample (``--hc18``, default ``../shared/data/hc18-sample``) is prepared by the pipeline's own prepare
and encode stages with LiteMedSAM and the paper configuration's ``prepare.hc18`` settings (first image of each
subject, the authors' split lists, crop 640), in a work folder that is kept between runs (``--work``). Then, for each
recipe of ``params.yaml`` (``train.recipe``): 10 shots drawn from the sample's training split, 3 subsets x 1 seed,
each run validated every ``--validate-every`` epochs against the box-prompted masks of the validation split. The
test split is scored with the last epoch's head and with the best one by that validation Dice (one training run
gives both), each run alone and as an ensemble (the runs' mean probability, thresholded once).

Writes ``bench/results/accuracy.json``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from pathlib import Path

import common
import torch
import yaml

from autoprompt.data.tasks import load_task
from autoprompt.evaluation.metrics import dice, summarize
from autoprompt.model import backbones
from autoprompt.model.decoding import predict
from autoprompt.training.fewshot import plan_runs
from autoprompt.training.loop import TrainConfig, recipe_names, train_head
from autoprompt.training.pseudo_labels import box_prompted_masks
from autoprompt.training.validation import ValidationSet
from stages import encode, prepare

log = logging.getLogger("bench.accuracy")

BACKBONE = "lite_medsam"
THRESHOLD = 0.5


def workspace(work: Path, hc18: Path, params: dict, threads: int) -> Path:
    """Prepare and encode the sample under ``work`` (kept between runs; both stages skip what is done)."""
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "raw"
    if not raw.exists():
        raw.symlink_to(hc18.resolve())
    settings = copy.deepcopy(params)
    settings["datasets"] = ["hc18"]
    settings["tasks"] = {"hc18": params["tasks"]["hc18"]}
    settings["encode"].update({"backbone": BACKBONE, "checkpoint": None, "device": "cpu", "threads": threads})
    (work / "params.yaml").write_text(yaml.safe_dump(settings))
    p = ["--params", str(work / "params.yaml")]
    store, index, emb = work / "prepared.zarr", work / "prepared.csv", work / "embeddings.zarr"
    if not store.exists():
        prepare.main([*p, "--dataset", "hc18", "--raw", str(raw), "--store", str(store), "--index", str(index)])
    encode.main([*p, "--dataset", "hc18", "--store", str(store), "--out", str(emb)])
    return work


def run_recipe(task, decoder, train: dict, recipe: str, args: argparse.Namespace) -> dict:
    """Train the recipe's few-shot runs once each; score the last and the best head of each on the test split."""
    device = torch.device("cpu")
    test, val = task.rows("test"), task.rows("val")
    test_embeddings, test_masks = task.load_embeddings(test), task.load_masks(test)
    val_embeddings = task.load_embeddings(val)
    validation = ValidationSet(
        val_embeddings,
        box_prompted_masks(decoder, val_embeddings, task.boxes(val), task.label_size, 8, device),
        task.load_masks(val),
        batch_size=8,
    )
    config = TrainConfig.from_params(
        {**train, "select": "best", "validate_every": args.validate_every}, recipe, "fewshot"
    )
    plan = plan_runs(task.rows("train")["id"].tolist(), args.shots, args.subsets, [0], 0, False, "hc18")
    runs, probs = [], {"last": [], "best": []}
    for r in plan:
        rows = task.rows(ids=r.ids)
        embeddings, boxes = task.load_embeddings(rows), task.boxes(rows)
        pseudo = (
            box_prompted_masks(decoder, embeddings, boxes, task.label_size, 8, device)
            if config.loss.pseudo_label
            else None
        )
        start = time.perf_counter()
        result = train_head(embeddings, boxes, task.label_size, decoder, config, r.seed, device, pseudo, validation)
        seconds = time.perf_counter() - start
        scores = {}
        for name, head in (("last", result.last), ("best", result.head)):
            probs[name].append(predict(decoder, test_embeddings, task.label_size, 8, device, head=head))
            scores[name] = round(100 * float(dice(probs[name][-1] > THRESHOLD, test_masks).mean()), 2)
        runs.append(
            {
                "run": r.key,
                "ids": list(r.ids),
                "test_dice": scores,
                "best_epoch": result.epoch,
                "train_seconds": round(seconds, 1),
            }
        )
        log.info(
            "%s %s: last %.2f, best %.2f (epoch %d), %.0f s",
            recipe,
            r.key,
            scores["last"],
            scores["best"],
            result.epoch,
            seconds,
        )
    out = {"config": {k: str(v) for k, v in config.__dict__.items()}, "runs": runs}
    for name in ("last", "best"):
        out[name] = summarize([r["test_dice"][name] / 100 for r in runs])
        out[f"{name}_ensemble"] = round(
            100 * float(dice(torch.stack(probs[name]).mean(0) > THRESHOLD, test_masks).mean()), 2
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="real HC18 in the official layout")
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml")
    parser.add_argument("--work", type=Path, default=common.BENCH / ".work" / "accuracy", help="kept between runs")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--subsets", type=int, default=3)
    parser.add_argument("--validate-every", type=int, default=5, help="epochs between validations")
    parser.add_argument("--recipes", nargs="*", help="recipes to run (default: train.recipe of --params)")
    args, machine = common.parse_and_start(parser)
    if not (args.hc18 / "training_set").is_dir():
        raise SystemExit(f"{args.hc18}: real HC18 sample not found (no training_set/); pass --hc18 PATH")
    params = yaml.safe_load(args.params.read_text())
    work = workspace(args.work, args.hc18, params, torch.get_num_threads())
    settings = yaml.safe_load((work / "params.yaml").read_text())
    task = load_task(settings, "hc18", work / "prepared.zarr", work / "prepared.csv", work / "embeddings.zarr")
    decoder = backbones.build_prompt_decoder(BACKBONE, backbones.resolve_checkpoint(BACKBONE, None))
    test = task.rows("test")
    tight = predict(
        decoder, task.load_embeddings(test), task.label_size, 8, torch.device("cpu"), boxes=task.boxes(test)
    )
    tight_dice = dice(tight > THRESHOLD, task.load_masks(test)).numpy()
    log.info("tight box: %.2f on %d test images", 100 * tight_dice.mean(), len(test))
    recipes = args.recipes or recipe_names(params["train"])
    results = {recipe: run_recipe(task, decoder, params["train"], recipe, args) for recipe in recipes}
    rows = [
        (recipe, row, result[row]["mean"] if isinstance(result[row], dict) else result[row])
        for recipe, result in results.items()
        for row in ("last", "best", "last_ensemble", "best_ensemble")
    ]
    best = max(rows, key=lambda item: item[2])
    common.write_result(
        "accuracy",
        {
            "machine": machine,
            "data": {
                "source": "real HC18 sample (../shared/data/hc18-sample), first image of each subject",
                "split": "the authors' lists (autoprompt/reference/splits)",
                "images": {s: int((task.table["split"] == s).sum()) for s in ("train", "val", "test")},
            },
            "settings": {
                "backbone": BACKBONE,
                "shots": args.shots,
                "subsets": args.subsets,
                "seeds": [0],
                "validate_every": args.validate_every,
                "params": str(args.params.resolve().relative_to(common.REPO)),
                "threshold": THRESHOLD,
            },
            "tight_box": summarize(tight_dice) | {"over": "test images"},
            "recipes": results,
            "best_row": {
                "recipe": best[0],
                "row": best[1],
                "dice": best[2],
                "gap_to_tight_box": round(100 * float(tight_dice.mean()) - best[2], 2),
            },
            "notes": "test Dice (%); a recipe's last/best rows: mean ± std over runs; *_ensemble: one predictor",
        },
    )


if __name__ == "__main__":
    main()
