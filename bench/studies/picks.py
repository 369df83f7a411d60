"""Which images each rule picks, before any training: the head sizes a rule's tens cover, how much its tens depend
on the rule's start, and whether the sizes a ten covers go with its Dice.

The rules' tens scored under uniform draws in the pipeline (``bench/results/draw_suggest.json``) and, for typical,
over them through ``autoprompt train`` (``draws_rules_authors.json``), on the same authors' training split. What
differs is the preparation, so the features the rules read: the pipeline's split prepared and encoded by its stages
(pool ``pipeline``: ``train.draw``'s features) and the own-data walkthrough's folder as ``autoprompt suggest``
encodes it (pools ``authors``, the authors' training images, and ``folder``, every image: ``bench.studies.draws``).

Each pool gets ``--starts`` tens by each rule, drawn as the studies that trained them drew them: in ``pipeline`` by
``training.fewshot.draw_subset`` (subset 0, 1, ...), in the folders as ``suggest`` and ``bench.studies.draws``'s
further tens do (start 0 is ``suggest``'s list; near-duplicates skipped). The rules:

- ``uniform``, ``kcenter`` and ``typical``, as ``train.draw`` and ``suggest --method`` have them;
- ``typical_best``, a candidate that is in no command: of ``--restarts`` k-means++ seeds, the ten whose images lie
  nearest the pool (the lowest ``cost``), so that a ten depends less on one k-means start.

Each ten: its box areas' percentiles among the pool's (the share of the pool's boxes smaller), the smallest, the size
deciles it holds, and its ``cost`` (the mean distance of a pool image to its nearest pick, in the pooled features).
Each rule, over its tens: their means, the share that box a head among the pool's smallest tenth, the mean Jaccard
overlap of two of its tens (1: every start picks the same ten) and how many distinct images they hold. ``same_as``
says whether the tens are those a committed study trained (its file, one flag per rule).

Whether the sizes matter: Spearman's correlation of a ten's smallest percentile and of its deciles with its test
Dice, over the committed results of the tens that were trained: the pipeline's runs (``draw_suggest.json``, each
subset alone and re-prompted) and the own-data tens (``draws_rules_authors.json``, the ensemble re-prompted).

    python -m bench.studies.picks [--starts 5] [--restarts 10] [--name picks]

Writes ``bench/results/NAME.json``. The work folder (``--work``, default ``bench/.work/NAME``: a new ``--name`` starts
afresh) keeps the prepared sample, its embeddings and the folders' ``suggest`` embeddings between calls: about 6 min
on 2 cores the first time (three encodings), seconds after. Needs the HC18 sample (``--hc18``) and the committed
results it reads, ``bench/results/draw_suggest.json``, ``draws_rules_authors.json`` and ``draws_rules.json``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import spearmanr

from autoprompt.data.embeddings import pooled
from autoprompt.data.tasks import TaskFiles, load_task
from autoprompt.own_data import default_work, suggest_store
from autoprompt.settings import load_settings
from autoprompt.training import suggest
from autoprompt.training.fewshot import Spread, box_areas, draw_subset
from bench.lib import common, walkthrough
from bench.lib.workspace import BACKBONE, study_params
from stages import encode, prepare

log = logging.getLogger("bench.picks")

RULES = ("uniform", "kcenter", "typical", "typical_best")
SMALLEST = 10  # percentile: a ten "boxes a small head" where one of its boxes lies under it
COMMITTED = {  # pool -> the committed study that trained its tens (its draws: committed_ten)
    "pipeline": "draw_suggest",
    "authors": "draws_rules_authors",
    "folder": "draws_rules",
}


@dataclass(frozen=True)
class Pool:
    """The images a rule picks from: their names (in the order of ``features``' rows), N x D pooled features, their
    tight-box areas (name -> pixels), and the rules' draws as the committed study drew them (``tens``)."""

    names: list[str]
    features: np.ndarray
    areas: dict[str, float]
    tens: Callable[[str, int], list[str]]


def cost(features: np.ndarray, rows: list[int]) -> float:
    """The mean distance of the N x D ``features``' rows to their nearest of ``rows``."""
    chosen = features[rows]
    return float(np.mean(np.min(np.linalg.norm(features[:, None, :] - chosen[None], axis=2), axis=1)))


def best_typical(features: np.ndarray, n: int, seeds: range, min_distance: float = 0.0) -> list[int]:
    """Of ``suggest.typical``'s picks with each k-means++ seed of ``seeds``, those of the lowest ``cost`` (the first
    seed among ties)."""
    tens = [suggest.typical(features, n, seed=seed, min_distance=min_distance) for seed in seeds]
    return min(tens, key=lambda rows: cost(features, rows))


def percentiles(names: list[str], areas: dict[str, float]) -> list[float]:
    """The share (%) of the pool's box areas under each of ``names``' areas, sorted."""
    pool = np.array(list(areas.values()))
    return sorted(round(100 * float(np.mean(pool < areas[name])), 1) for name in names)


def deciles(percentile_list: list[float]) -> int:
    """How many of the ten size deciles hold one of a ten's percentiles."""
    return len({min(int(p // 10), 9) for p in percentile_list})


def ten_record(pool: Pool, names: list[str]) -> dict:
    """One ten: its images, their area percentiles, the smallest, its deciles and its cost."""
    where = {name: row for row, name in enumerate(pool.names)}
    spans = percentiles(names, pool.areas)
    return {
        "images": sorted(names),
        "area_percentiles": spans,
        "smallest": spans[0],
        "deciles": deciles(spans),
        "cost": round(cost(pool.features, [where[name] for name in names]), 4),
    }


def rule_summary(tens: list[dict]) -> dict:
    """A rule's tens (``ten_record``): mean smallest percentile, deciles and cost, the share of tens with a head
    under ``SMALLEST``, the mean Jaccard overlap of two tens, and the distinct images they hold."""
    sets = [set(t["images"]) for t in tens]
    pairs = [len(a & b) / len(a | b) for a, b in itertools.combinations(sets, 2)]
    return {
        "smallest": round(float(np.mean([t["smallest"] for t in tens])), 1),
        "deciles": round(float(np.mean([t["deciles"] for t in tens])), 2),
        "cost": round(float(np.mean([t["cost"] for t in tens])), 4),
        "small_head_share": round(float(np.mean([t["smallest"] < SMALLEST for t in tens])), 2),
        "jaccard": round(float(np.mean(pairs)), 3) if pairs else None,
        "distinct": len(set().union(*sets)),
    }


def pipeline_pool(work: Path, hc18: Path, params: dict, shots: int, restarts: int) -> Pool:
    """The authors' training split as the pipeline prepares and encodes it, its tens drawn by ``draw_subset``."""
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "raw"
    if not raw.exists():
        raw.symlink_to(hc18.resolve())
    settings = copy.deepcopy(params)
    settings["datasets"], settings["tasks"] = ["hc18"], {"hc18": params["tasks"]["hc18"]}
    settings["encode"].update({"backbone": BACKBONE, "checkpoint": None, "device": "cpu", "threads": 2})
    (work / "params.yaml").write_text(yaml.safe_dump(settings))
    files = TaskFiles(work / "prepared.zarr", work / "prepared.csv", work / "embeddings.zarr")
    options = ["--params", str(work / "params.yaml"), "--dataset", "hc18"]
    if not files.prepared.exists():
        prepare.main([*options, "--raw", str(raw), "--store", str(files.prepared), "--index", str(files.index)])
    encode.main([*options, "--store", str(files.prepared), "--out", str(files.embeddings)])
    loaded = load_settings(work / "params.yaml")
    task = load_task("hc18", loaded.task("hc18"), files, loaded.prepare.min_foreground, BACKBONE)
    rows = task.rows("train").sort_values("id").reset_index(drop=True)  # draw_subset's order
    ids = rows["id"].tolist()
    features = pooled(task.embeddings["embeddings"], rows["row"].to_numpy())
    return Pool(ids, features, box_areas(rows), functools.partial(pipeline_ten, ids, features, shots, restarts))


def pipeline_ten(ids: list[str], features: np.ndarray, shots: int, restarts: int, rule: str, start: int) -> list[str]:
    """``rule``'s ten from ``start`` of the sorted ``ids`` (their N x D ``features`` in that order), as ``train.draw``
    draws subset ``start`` (``draw_subset``, subset seed 0); ``typical_best``: the lowest-cost of ``restarts``
    k-means++ seeds."""
    assert ids == sorted(ids), "the pipeline's pool is read in draw_subset's order, sorted by id"
    if rule == "typical_best":
        return [ids[row] for row in best_typical(features, shots, range(start * restarts, (start + 1) * restarts))]
    spread = None if rule == "uniform" else Spread(dict(zip(ids, features, strict=True)), rule)
    return list(draw_subset(ids, shots, start, 0, spread=spread))


def folder_pool(folder: Path, boxes: dict, shots: int, restarts: int) -> Pool:
    """A folder's images as ``autoprompt suggest`` encodes them, its tens drawn as ``suggest`` and
    ``bench.studies.draws`` draw them."""
    if not suggest_store(default_work(folder)).exists():
        walkthrough.listed(folder, shots, folder.with_name(folder.name + ".suggest"), common.numerics_env(False))
    names, features = walkthrough.kept_features(folder)
    boxed = sorted(name for name in names if name in boxes)

    def ten(rule: str, start: int) -> list[str]:
        if rule == "uniform":
            return sorted(boxed[i] for i in np.random.default_rng(start).choice(len(boxed), shots, replace=False))
        if rule == "typical_best":
            seeds = range(start * restarts, (start + 1) * restarts)
            return [names[row] for row in best_typical(features, shots, seeds, suggest.DUPLICATE)]
        return [names[row] for row in walkthrough.seeded_ten(features, shots, rule, start)]

    return Pool(names, features, {name: float(walkthrough.box_area(boxes[name])) for name in boxed}, ten)


def committed_ten(result: dict, pool: str, rule: str, start: int) -> list[str] | None:
    """The images of the committed study's ten of ``rule`` from ``start`` (None where it trained none)."""
    if pool == "pipeline":
        runs = result["draws"].get({"typical": "suggest"}.get(rule, rule), {}).get("runs", [])
        return runs[start]["ids"] if start < len(runs) else None
    if rule == "uniform":
        return result["draws"].get(f"uniform{start}")
    name = f"suggested_{rule}" + (f"{walkthrough.SEED}{start}" if start else "")
    return result["draws"].get(name)


def same_as(result: dict, pool: str, tens: dict[str, list[list[str]]]) -> dict:
    """The committed study's file, and for each rule it trained, whether its tens (those it trained: it may have
    fewer) are ``tens``' (rule -> start -> images)."""
    same = {"file": f"bench/results/{COMMITTED[pool]}.json"}
    for rule, each in tens.items():
        trained = [(committed_ten(result, pool, rule, start), ten) for start, ten in enumerate(each)]
        if any(theirs is not None for theirs, _ in trained):
            same[rule] = all(theirs is None or sorted(theirs) == sorted(ten) for theirs, ten in trained)
    return same


def coverage_and_dice(results: dict[str, dict], pools: dict[str, Pool]) -> dict:
    """Spearman's correlation (rho, p, n; rho None where a side is constant) of a trained ten's smallest area
    percentile and of its deciles with its Dice: the pipeline's runs (alone, and re-prompted: paired by run) and the
    own-data tens on the split, each ten's percentiles among its pool's (``percentiles``)."""

    def correlated(tens: list[list[str]], dice: list[float], areas: dict[str, float]) -> dict:
        spans = [percentiles(ten, areas) for ten in tens]
        out = {}
        for key, values in (("smallest", [s[0] for s in spans]), ("deciles", [deciles(s) for s in spans])):
            if len(set(values)) < 2 or len(set(dice)) < 2:  # a constant side: no rank correlation
                out[key] = {"rho": None, "p": None, "n": len(dice)}
                continue
            rho, p = spearmanr(values, dice)
            out[key] = {"rho": round(float(rho), 3), "p": round(float(p), 3), "n": len(dice)}
        return out

    runs, again = [], []  # each pipeline run, and its Dice re-prompted (found by the run's name within its draw)
    for draw in results["draw_suggest"]["draws"].values():
        reprompted = {run["run"]: run["dice"] for run in draw["runs_reprompted_masks_boxes"]}
        runs += draw["runs"]
        again += [reprompted[run["run"]] for run in draw["runs"]]
    own = results["draws_rules_authors"]
    first_rounds = list(own["draws_area_percentiles"])
    areas, own_areas = pools["pipeline"].areas, pools["authors"].areas
    return {
        "pipeline_runs": correlated([r["ids"] for r in runs], [r["dice"] for r in runs], areas),
        "pipeline_runs_reprompted": correlated([r["ids"] for r in runs], again, areas),
        "own_data_tens": correlated(
            [own["draws"][d] for d in first_rounds], [own["dice"][d]["mean"] for d in first_rounds], own_areas
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="the HC18 sample (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml", help="the pipeline's params")
    parser.add_argument("--set", nargs="*", default=[], help="params overrides, KEY=VALUE (as the other studies)")
    parser.add_argument("--work", type=Path, help="kept between calls (default: bench/.work/NAME)")
    parser.add_argument("--name", default="picks", help="the results file: bench/results/NAME.json")
    parser.add_argument("--shots", type=int, default=10, help="images in each ten (default: 10)")
    parser.add_argument("--starts", type=int, default=5, help="tens of each rule, from starts 0, 1, ... (default: 5)")
    parser.add_argument("--restarts", type=int, default=10, help="k-means++ seeds per typical_best ten (default: 10)")
    args, machine = common.parse_and_start(parser)
    for option in ("shots", "starts", "restarts"):
        if getattr(args, option) < 1:
            raise SystemExit(f"--{option} {getattr(args, option)}: give 1 or more")
    if args.name in COMMITTED.values():
        raise SystemExit(
            f"--name {args.name}: bench/results/{args.name}.json is a result this study reads; give another"
        )
    if not (args.hc18 / "training_set").is_dir():
        raise SystemExit(f"{args.hc18}: real HC18 sample not found (no training_set/); pass --hc18 PATH")
    work = (args.work or common.BENCH / ".work" / args.name).resolve()
    data = walkthrough.gathered(args.hc18, work)
    boxes = walkthrough.tight_boxes(data / "masks")
    authors, _ = walkthrough.authors_split(data, work)
    pools = {
        "pipeline": pipeline_pool(work / "pipeline", args.hc18, study_params(args), args.shots, args.restarts),
        "authors": folder_pool(authors, boxes, args.shots, args.restarts),
        "folder": folder_pool(data, boxes, args.shots, args.restarts),
    }
    results = {name: json.loads((common.RESULTS / f"{name}.json").read_text()) for name in COMMITTED.values()}
    measured = {}
    for name, pool in pools.items():
        tens = {rule: [pool.tens(rule, start) for start in range(args.starts)] for rule in RULES}
        records = {rule: [ten_record(pool, t) for t in each] for rule, each in tens.items()}
        measured[name] = {
            "images": len(pool.names),
            "same_as": same_as(results[COMMITTED[name]], name, tens),
            "rules": {rule: rule_summary(each) for rule, each in records.items()},
            "tens": records,
        }
        log.info("%s: %s", name, {rule: measured[name]["rules"][rule] for rule in RULES})
    common.write_result(
        args.name,
        {
            "what": "the tens each rule picks from three pools of real HC18 (no training): box-area coverage, cost "
            "and overlap between starts; and Spearman's correlation of a trained ten's coverage with its Dice",
            "settings": {
                "shots": args.shots,
                "starts": args.starts,
                "restarts": args.restarts,
                "smallest_under": SMALLEST,
                "set": args.set,
            },
            "notes": "per ten: area_percentiles, the share (%) of the pool's tight boxes smaller than each of its "
            "boxes; smallest, the lowest of them; deciles, how many of the ten size deciles it holds (0 to 10); cost, "
            "the mean distance of a pool image to its nearest pick; per rule: their means, small_head_share (tens "
            "with a box under smallest_under), jaccard (mean overlap of two tens; null for one ten), distinct images",
            "pools": measured,
            "coverage_and_dice": coverage_and_dice(results, pools),
            "machine": machine,
        },
    )


if __name__ == "__main__":
    main()
