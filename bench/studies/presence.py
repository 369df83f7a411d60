"""Presence: which slices of a whole volume hold the structure, on ACDC phantoms with slices past each end.

The committed code is cloned into a scratch folder (``--keep``: this one, reused) and its cardiac demo
(``demo/cardiac``) runs there on the RV task of ACDC phantoms with ``simulate.acdc.beyond`` unlabelled slices above the
base and below the apex (the atria and great vessels, the apical cap, the liver), few-shot heads only, up to the
evaluate stage (which chooses each group's re-prompt margin). Then each recipe's few-shot ensemble segments every test
volume whole, as ``predict`` does (re-prompted with the margin evaluate chose, volumes fitted), and each candidate rule
of presence (``autoprompt.inference.presence``) decides which slices keep their mask. For each recipe and rule: false
slices (a mask where the reference is empty), missed slices (no mask where it is not), 3D Dice, HD95 and NSD per volume.
The pipeline's own metrics of the same runs (its evaluate stage's JSON) are kept beside the result, as
``presence_pipeline_acdc-rv.json``.

    python -m bench.studies.presence --keep /tmp/presence-clone   # writes bench/results/presence.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import yaml

from autoprompt.evaluation.surface import hd95, nsd
from autoprompt.inference.model import load_model
from autoprompt.inference.predictor import Predictor
from autoprompt.inference.presence import Evidence, Presence, absent_slices
from bench.lib import common

log = common.log.getChild("presence")

DEMO = Path("demo/cardiac")  # the cardiac demo: ACDC phantoms, written by its simulate stage
TASK = "acdc-rv"
RV = 1
TOLERANCE_MM = 2.0  # the demo's evaluate.nsd_tolerance_mm


def candidates() -> dict[str, Presence | None]:
    """Every rule measured: none, each cue alone over a range of thresholds, and the cues combined."""
    rules: dict[str, Presence | None] = {"none": None}
    for t in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9):
        rules[f"iou<{t}"] = Presence(("iou",), min_iou=t)
    for t in (0.5, 0.7, 0.8, 0.82, 0.84, 0.85, 0.86, 0.87, 0.88, 0.9, 0.95):
        rules[f"agreement<{t}"] = Presence(("agreement",), min_agreement=t)
    for a, box, growth in itertools.product((0.8, 0.85, 0.87), (0.3, 0.5), (1.2, 1.5)):
        rules[f"agreement<{a}+sequence(box<{box},growth>{growth:g})"] = Presence(
            ("agreement", "sequence"), min_agreement=a, min_box_iou=box, max_growth=growth
        )
    for box, growth in itertools.product((0.1, 0.3, 0.5), (1.2, 1.5, 2.0, 1e9)):
        rules[f"sequence(box<{box},growth>{growth:g})"] = Presence(("sequence",), min_box_iou=box, max_growth=growth)
    for t, box, growth in itertools.product((0.7, 0.8, 0.85), (0.3, 0.5), (1.5, 1e9)):
        rules[f"iou<{t}+sequence(box<{box},growth>{growth:g})"] = Presence(
            ("iou", "sequence"), min_iou=t, min_box_iou=box, max_growth=growth
        )
    for t, a in itertools.product((0.7, 0.8, 0.85), (0.7, 0.8, 0.9)):
        rules[f"iou<{t}+agreement<{a}"] = Presence(("iou", "agreement"), min_iou=t, min_agreement=a)
    return rules


def configure(params: Path, args: argparse.Namespace) -> dict:
    """The cardiac demo's params, cut to the ACDC RV task on phantoms with slices past each end, few-shot heads only."""
    data = yaml.safe_load(params.read_text())
    data["datasets"] = ["acdc"]
    data["tasks"] = {k: v for k, v in data["tasks"].items() if k == TASK}
    acdc = data["simulate"]["acdc"]
    acdc.update(training=args.training, testing=args.testing, slices=list(args.slices), beyond=args.beyond)
    data["simulate"] = {"acdc": acdc}
    data["baseline"]["methods"] = ["head_masks"]  # the cheapest; the stage refuses a plan of no runs
    data["train"].update(all_images=False, shots=args.shots, recipe=list(args.recipes))
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    return {"simulate.acdc": acdc, "train": {k: data["train"][k] for k in ("shots", "subsets", "seeds", "recipe")}}


def run_pipeline(clone: Path, args: argparse.Namespace) -> tuple[dict, str, float]:
    """Clone (or reuse) and run the pipeline up to evaluate; the setup, the commit and the seconds it took."""
    if not (clone / ".git").is_dir():  # a kept clone is reused: dvc repro resumes it
        subprocess.run(["git", "clone", "-q", str(common.REPO), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    setup = configure(clone / DEMO / "params.yaml", args)
    log.info("running the ACDC phantom pipeline in %s (several minutes)", clone)
    command = [sys.executable, "-m", "dvc", "repro", f"{DEMO}/dvc.yaml:evaluate@{TASK}"]
    lines, status = common.timed_lines(command, clone)
    if status != 0:
        sys.exit("\n".join(line for _, line in lines[-20:]) + f"\ndvc repro failed (exit {status})")
    return setup, commit, lines[-1][0] if lines else 0.0


def segment_volumes(clone: Path, recipe: str) -> list[dict]:
    """Each test volume segmented whole by the recipe's few-shot ensemble as ``predict`` does (re-prompted with the
    margin evaluate chose, volumes fitted, no presence rule): its masks, reference, spacing and evidence."""
    metrics = json.loads((clone / DEMO / "metrics" / f"{TASK}.json").read_text())
    group = metrics["reprompt"]["groups"][f"{recipe}/fewshot"]
    fit = (metrics["reprompt"].get("volume") or {}).get("min_iou")
    model = load_model(clone / DEMO / "models" / TASK / recipe / "fewshot")
    predictor = Predictor(
        model, torch.device("cpu"), reprompt_margin=group["margin"], volume_min_iou=fit,
        box_threshold=group.get("box_threshold"),
    )  # fmt: skip
    out = []
    for folder in sorted((clone / DEMO / "data" / "raw" / "acdc" / "testing").iterdir()):
        image = sitk.ReadImage(str(folder / f"{folder.name}_frame01.nii.gz"))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{folder.name}_frame01_gt.nii.gz"))) == RV
        segmentation = predictor.segment(image)
        masks = segmentation.probabilities > predictor.threshold
        assert masks.shape == truth.shape, f"{folder.name}: {masks.shape} != {truth.shape}"
        spacing = image.GetSpacing()[::-1]  # (slice, row, column)
        out.append({"volume": folder.name, "masks": masks, "truth": truth, "spacing": spacing,
                    "evidence": segmentation.evidence, "margin": group["margin"], "fit": fit})  # fmt: skip
    return out


def score(volumes: list[dict], rule: Presence | None) -> dict:
    """False slices, missed slices, 3D Dice, HD95 and NSD (means over volumes) with ``rule`` applied."""
    false = missed = 0
    dices, hds, nsds = [], [], []
    for v in volumes:
        masks = v["masks"].copy()
        if rule is not None:
            masks[absent_slices(v["evidence"], rule).numpy()] = False
        truth = v["truth"]
        found, present = masks.reshape(len(masks), -1).any(1), truth.reshape(len(truth), -1).any(1)
        false += int((found & ~present).sum())
        missed += int((~found & present).sum())
        total = masks.sum() + truth.sum()
        dices.append(2 * (masks & truth).sum() / total if total else 1.0)
        pred, ref = torch.from_numpy(masks)[None], torch.from_numpy(truth)[None]
        spacing = torch.tensor([v["spacing"]], dtype=torch.float64)
        hds.append(float(hd95(pred, ref, spacing)[0]))
        nsds.append(float(nsd(pred, ref, spacing, TOLERANCE_MM)[0]))
    return {
        "false_slices": false,
        "missed_slices": missed,
        "dice_3d": round(100 * float(np.mean(dices)), 2),
        "hd95_mm": round(float(np.nanmean(hds)), 2),
        "nsd": round(100 * float(np.mean(nsds)), 2),
    }


def evidence_table(volumes: list[dict]) -> dict:
    """Each cue's values on the slices with a mask, split by whether the reference holds the structure there, and
    by position (an end slice, the next one in, or further in)."""
    rows = {"false": [], "true": []}
    for v in volumes:
        e: Evidence = v["evidence"]
        present = v["truth"].reshape(len(e), -1).any(1)
        z = len(e)
        for i in torch.nonzero(e.found).flatten().tolist():
            depth = min(i, z - 1 - i)
            rows["true" if present[i] else "false"].append(
                {
                    "volume": v["volume"],
                    "slice": i,
                    "box": [int(b) for b in e.boxes[i].tolist()],
                    "iou": round(float(e.iou[i]), 3),
                    "agreement": round(float(e.agreement[i]), 3),
                    "area": int(e.area[i]),
                    "from_end": depth,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--training", type=int, default=10, help="training patients (default 10)")
    parser.add_argument("--testing", type=int, default=8, help="test patients (default 8)")
    parser.add_argument("--slices", type=int, nargs=2, default=(6, 9), help="ventricles' slices, min max (6 9)")
    parser.add_argument("--beyond", type=int, default=2, help="unlabelled slices past each end (default 2)")
    parser.add_argument("--shots", type=int, default=10, help="boxed training slices (default 10)")
    parser.add_argument("--recipes", nargs="+", default=("workshop", "augmented"), help="head recipes")
    parser.add_argument("--score", nargs="+", help="the recipes to score (default: every one trained)")
    parser.add_argument("--keep", type=Path, help="clone into this folder and keep it (default: a scratch folder)")
    args, machine = common.parse_and_start(parser)
    with tempfile.TemporaryDirectory() as scratch:
        clone = args.keep or Path(scratch) / "clone"
        setup, commit, seconds = run_pipeline(clone, args)
        log.info("pipeline done in %.0f s", seconds)
        rules, results = candidates(), {}
        for recipe in args.score or args.recipes:
            volumes = segment_volumes(clone, recipe)
            scored = {name: score(volumes, rule) for name, rule in rules.items()}
            slices = sum(len(v["masks"]) for v in volumes)
            present = sum(int(v["truth"].reshape(len(v["truth"]), -1).any(1).sum()) for v in volumes)
            results[recipe] = {
                "volumes": len(volumes),
                "slices": slices,
                "slices_with_structure": present,
                "margin": volumes[0]["margin"],
                "volume_fit": volumes[0]["fit"],
                "rules": scored,
                "evidence": evidence_table(volumes),
            }
            log.info("%s: %s", recipe, json.dumps({k: v for k, v in scored.items()}))
        pipeline_rows = common.RESULTS / f"presence_pipeline_{TASK}.json"  # the pipeline's own rows of these runs
        shutil.copyfile(clone / DEMO / "metrics" / f"{TASK}.json", pipeline_rows)
        log.info("wrote %s", pipeline_rows)
    common.write_result(
        "presence",
        {
            "what": "ACDC phantoms with unlabelled slices past each end (RV task): each recipe's few-shot ensemble "
            "segments every test volume whole as predict does; per presence rule, false slices (a mask where the "
            "reference is empty), missed slices, mean 3D Dice (%), HD95 (mm) and NSD (%) per volume; evidence: "
            "each cue's values on the slices with a mask, false and true",
            "commit": commit,  # the pipeline's (the clone's); the rules run with this worktree's code:
            "analysis_commit": subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=common.REPO, capture_output=True, text=True
            ).stdout.strip(),
            "setup": setup,
            "pipeline_seconds": round(seconds, 1),
            "rules": {name: (rule.as_dict() if rule else None) for name, rule in candidates().items()},
            "tasks": {TASK: results},
            "machine": machine,
        },
    )


if __name__ == "__main__":
    main()
