"""Boxes fitted across a volume's slices (``reprompt.volume``): test Dice and misses on cardiac phantoms, per slice
position.

The committed code is cloned into a scratch folder and its cardiac demo (``demo/cardiac``) runs there on ACDC phantoms
only, larger than the demo's (``--training`` / ``--testing`` patients of ``--slices`` slices, ``simulate.acdc.anatomy``:
``tail`` by default, with apex slices whose LV covers a few dozen pixels and basal slices whose RV is a thin crescent),
every head recipe few-shot, no baselines. For each task and recipe it reads the evaluate stage's rows: the ensemble, the
ensemble re-prompted, and that row with the boxes fitted across each test volume (the slices prompted again, by reason),
each with its Dice and misses (under 50 Dice; empty masks), and the mean Dice of the basal, middle and apical third of
each test volume's slices, as a cardiac reader looks at them. Those rows score the slices that hold the structure;
``whole`` scores each test volume whole, the demo's ``simulate.acdc.beyond`` slices past each end included: the fitted
row and the row with the slices judged empty left empty (``presence``, what ``predict`` writes), each with its 3D Dice
and its false and missed slices.

``--draws`` runs the pipeline once per ``train.draw`` in the same clone (the phantoms prepared and encoded once) and
records, beside each draw's rows, which third of its volume each run's shots came from: whether the rules of
``autoprompt suggest`` (``suggest``: typical images; ``kcenter``) box the apical slices, where few-shot heads miss.

    python -m bench.studies.volume                      # writes bench/results/volume_tail.json
    python -m bench.studies.volume --anatomy classic    # the earlier phantoms: bench/results/volume_classic.json
    python -m bench.studies.volume --draws uniform suggest kcenter --name volume_tail_draws
    python -m bench.studies.volume --draws uniform suggest kcenter --seed 1 --name volume_tail_draws_seed1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
import yaml

from autoprompt.data.prepared import task_table
from bench.lib import common

log = common.log.getChild("volume")

DEMO = Path("demo/cardiac")  # the cardiac demo: ACDC phantoms, written by its simulate stage
TASKS = ("acdc-rv", "acdc-lv")
ROWS = {"ensemble": "fewshot_ensemble", "reprompted": "fewshot_reprompted", "volume": "fewshot_volume"}
WHOLE_ROWS = {"volume": "fewshot_volume", "presence": "fewshot_presence"}  # scored on whole volumes too
THIRDS = ("basal", "middle", "apical")
DRAWS = ("uniform", "box_area", "suggest", "kcenter")  # train.draw


def configure(params: Path, args: argparse.Namespace) -> dict:
    """The cardiac demo's params, cut to the ACDC tasks and phantoms of the asked size, few-shot heads only."""
    data = yaml.safe_load(params.read_text())
    data["datasets"] = ["acdc"]
    data["tasks"] = {k: v for k, v in data["tasks"].items() if k in TASKS}
    acdc = data["simulate"]["acdc"]
    acdc.update(training=args.training, testing=args.testing, slices=list(args.slices))
    acdc["anatomy"] = args.anatomy  # always: the demo's own default is not the earlier phantoms
    if args.seed is not None:
        acdc["seed"] = args.seed
    data["simulate"] = {"acdc": acdc}
    data["baseline"]["methods"] = ["head_masks"]  # the cheapest; the stage refuses a plan of no runs
    data["train"]["all_images"] = False
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    return {"simulate.acdc": acdc, "train": {k: data["train"][k] for k in ("shots", "subsets", "seeds", "recipe")}}


def cut_thirds(subjects: pd.Series, positions: pd.Series) -> list[str]:
    """The third of its volume (basal, middle, apical) each slice lies in: its rank by ``positions`` among the slices
    of its subject, cut into three (slice 0 is basal in the phantoms)."""
    by_subject = positions.groupby(subjects)
    rank, size = by_subject.rank(method="first") - 1, by_subject.transform("count")
    return [THIRDS[min(int(3 * r / n), 2)] for r, n in zip(rank, size, strict=True)]


def third_of(index: pd.DataFrame) -> dict[str, str]:
    """Id -> the third of its volume each slice of ``index`` (a task's rows of the prepared index: the slices that
    hold its structure) lies in, cut as ``thirds`` cuts the test volumes."""
    return dict(zip(index["id"], cut_thirds(index["subject"], index["slice"]), strict=True))


def shots_by_third(models: Path, index: pd.DataFrame, recipe: str, runs: list[str]) -> dict[str, int]:
    """How many of the few-shot ``runs``' distinct training images of one recipe lie in each third of their volume
    (the ids each run's ``head.pt`` records; ``index``: the task's rows, as ``third_of`` reads them)."""
    ids = set()
    for run in runs:
        head = models / recipe / "fewshot" / run / "head.pt"
        ids.update(torch.load(head, map_location="cpu", weights_only=True)["config"]["ids"])
    where = third_of(index)
    return {t: sum(where[i] == t for i in ids) for t in THIRDS}


def thirds(per_image: pd.DataFrame, column: str) -> dict[str, float]:
    """Mean Dice (%) of the basal, middle and apical third of each test volume's slices (slice 0 is basal in the
    phantoms; a volume's slices are cut into thirds by their rank)."""
    positions = per_image["id"].str.extract(r"slice(\d+)$")[0].astype(int)
    table = per_image.assign(third=cut_thirds(per_image["subject"], positions))
    return {t: round(100 * float(table.loc[table["third"] == t, column].mean()), 2) for t in THIRDS}


def summarize_task(metrics: dict, per_image: pd.DataFrame, recipes: list[str]) -> dict:
    """One task's tight box and, per recipe, its rows' Dice, misses and Dice by third of the volume."""
    out = {
        "test_slices": metrics["test_images"],
        "tight_box": {
            "dice": round(metrics["dice"]["tight_box"]["mean"], 2),
            "misses": metrics["misses"]["tight_box"],
            "thirds": thirds(per_image, "dice:tight_box"),
        },
    }
    fitted = (metrics.get("reprompt", {}).get("volume") or {}).get("slices_prompted_again", {})
    for recipe in recipes:
        rows = {}
        for name, row in ROWS.items():
            summary = metrics["dice"][recipe].get(row)
            if summary is None:
                continue
            rows[name] = {
                "dice": round(summary["mean"], 2),
                "std": round(summary["std"], 2),
                "misses": {k: metrics["misses"][recipe][row][k] for k in ("below_50_dice", "empty")},
                "thirds": thirds(per_image, f"dice:{recipe}/{row}"),
            }
        rows["slices_prompted_again"] = fitted.get(f"{recipe}/fewshot")
        rows["margin"] = metrics["reprompt"]["groups"][f"{recipe}/fewshot"]["margin"]
        if "whole_volumes" in metrics:
            rows["whole"] = {name: whole(metrics, recipe, row) for name, row in WHOLE_ROWS.items()}
        out[recipe] = rows
    if "whole_volumes" in metrics:
        out["whole_volumes"] = metrics["whole_volumes"]
        out["tight_box"]["whole"] = whole(metrics, "tight_box", None)
    return out


def whole(metrics: dict, recipe: str, row: str | None) -> dict:
    """A row scored on whole test volumes (the slices past each end included: ``simulate.acdc.beyond``): its 3D Dice
    (%, mean over volumes), and its false slices (a mask where the reference is empty) and missed slices (none where
    it is not). ``row`` None: the tight box's entry, which has no rows."""

    def entry(family: str) -> dict:
        return metrics[family][recipe] if row is None else metrics[family][recipe][row]

    slices = entry("slices")
    return {"dice_3d": round(entry("whole_dice_3d")["mean"], 2), "false": slices["false"], "missed": slices["missed"]}


def run_pipeline(clone: Path, recipes: list[str]) -> tuple[dict, float]:
    """The cardiac demo's evaluate stages run in ``clone`` (resumed where done): each task's summary, and seconds."""
    log.info("running the ACDC phantom pipeline in %s (several minutes)", clone)
    targets = [f"{DEMO}/dvc.yaml:evaluate@{task}" for task in TASKS]  # not its report: the CAMUS tasks are cut
    lines, status = common.timed_lines([sys.executable, "-m", "dvc", "repro", *targets], clone)
    if status != 0:
        sys.exit("\n".join(line for _, line in lines[-20:]) + f"\ndvc repro failed (exit {status})")
    results = {}
    for task in TASKS:
        metrics = json.loads((clone / DEMO / "metrics" / f"{task}.json").read_text())
        per_image = pd.read_csv(clone / DEMO / "metrics" / task / "per_image.csv")
        results[task] = summarize_task(metrics, per_image, recipes)
        log.info("%s: %s", task, json.dumps(results[task]))
    return results, round(lines[-1][0], 1)


def task_rows(params: Path, index: Path) -> dict[str, pd.DataFrame]:
    """Each task's rows of the prepared index (its slices holding at least ``prepare.min_foreground`` pixels of the
    task's class), with their ``slice``."""
    data = yaml.safe_load(params.read_text())
    table = pd.read_csv(index)
    found = {}
    for task in TASKS:
        rows = task_table(table, data["tasks"][task]["class"], data["prepare"]["min_foreground"])
        found[task] = table.loc[rows["row"], ["id", "subject", "slice"]].reset_index(drop=True)
    return found


def set_draw(params: Path, draw: str) -> None:
    """``train.draw`` of the demo's params in the clone."""
    data = yaml.safe_load(params.read_text())
    data["train"]["draw"] = draw
    params.write_text(yaml.safe_dump(data, sort_keys=False))


def write(args: argparse.Namespace, commit: str, setup: dict, found: dict, machine: dict) -> None:
    """``bench/results/<name>.json`` with what was measured so far (``found``: the rows, or each draw's)."""
    common.write_result(
        args.name or f"volume_{args.anatomy}",
        {
            "what": "ACDC phantoms through the demo pipeline (few-shot heads, the head_masks baseline): test Dice "
            "(%) and misses of each recipe's ensemble, re-prompted, and with boxes fitted across each volume; "
            "thirds: mean Dice of the basal / middle / apical third of each test volume's slices; whole: each test "
            "volume scored whole, slices past each end included (3D Dice, false and missed slices)"
            + (
                "; per train.draw, with how many distinct shots lie in each third of their volume" if args.draws else ""
            ),
            "commit": commit.strip(),
            "setup": setup,
            **found,
            "machine": machine,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--training", type=int, default=12, help="training patients (default 12)")
    parser.add_argument("--testing", type=int, default=8, help="test patients (default 8)")
    parser.add_argument("--slices", type=int, nargs=2, default=(6, 9), help="slices per volume, min max (6 9)")
    parser.add_argument("--anatomy", default="tail", choices=("tail", "classic"), help="simulate.acdc.anatomy")
    parser.add_argument("--seed", type=int, help="simulate.acdc.seed: other phantoms (default: the demo's own)")
    parser.add_argument("--draws", nargs="+", choices=DRAWS, help="run once per train.draw (default: the demo's own)")
    parser.add_argument("--name", help="the result's name (default volume_ANATOMY)")
    parser.add_argument("--keep", type=Path, help="clone into this folder and keep it (default: a scratch folder)")
    args, machine = common.parse_and_start(parser)
    with tempfile.TemporaryDirectory() as scratch:
        clone = args.keep or Path(scratch) / "clone"
        if not (clone / ".git").is_dir():  # a kept clone is reused: dvc repro resumes it
            subprocess.run(["git", "clone", "-q", str(common.REPO), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout
        params = clone / DEMO / "params.yaml"
        setup = configure(params, args)
        recipes = setup["train"]["recipe"]
        if not args.draws:
            results, seconds = run_pipeline(clone, recipes)
            found = {"seconds": seconds, "tasks": results}
        else:
            setup["draws"] = args.draws
            found = {"draws": {}}
            runs = [f"subset{i}-seed{s}" for i in range(setup["train"]["subsets"]) for s in setup["train"]["seeds"]]
            for draw in args.draws:
                set_draw(params, draw)
                results, seconds = run_pipeline(clone, recipes)
                rows = task_rows(params, clone / DEMO / "data" / "prepared" / "acdc.csv")
                shots = {
                    t: {r: shots_by_third(clone / DEMO / "models" / t, rows[t], r, runs) for r in recipes}
                    for t in TASKS
                }
                log.info("%s: the shots by third of their volume: %s", draw, json.dumps(shots))
                found["draws"][draw] = {"seconds": seconds, "tasks": results, "shots_by_third": shots}
                write(args, commit, setup, found, machine)  # after each draw: a stopped run keeps what it measured
    write(args, commit, setup, found, machine)


if __name__ == "__main__":
    main()
