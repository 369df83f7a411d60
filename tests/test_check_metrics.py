"""CI's metric check: which changes in `dvc metrics diff --json` fail a build."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "check_metrics.py"
spec = importlib.util.spec_from_file_location("check_metrics", SCRIPT)
check_metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_metrics)


def test_drops_of_dice_and_nsd_means_fail_and_other_changes_pass():
    diff = {
        "demo/metrics/hc18.json": {
            "dice.followup.fewshot.mean": {"old": 90.0, "new": 88.9},  # a drop of 1.1: fails
            "dice.workshop.fewshot.mean": {"old": 90.0, "new": 89.1},  # 0.9: passes
            "dice.workshop.fewshot.std": {"old": 1.0, "new": 5.0},  # spreads are not checked
            "nsd.tight_box.mean": {"old": 80.0, "new": 70.0},  # fails
            "hd95_mm.tight_box.mean": {"old": 2.0, "new": 9.0},  # millimetres: reported, not checked
            "dice_3d.followup.all.mean": {"old": 70.0, "new": None},  # a metric that disappeared fails
            "dice.workshop.all.mean": {"old": None, "new": 50.0},  # a new metric passes
        }
    }
    failures = check_metrics.drops(diff, max_drop=1.0)
    assert [f.split(": ")[1].split(" ")[0] for f in failures] == [
        "dice.followup.fewshot.mean",
        "nsd.tight_box.mean",
        "dice_3d.followup.all.mean",
    ]
