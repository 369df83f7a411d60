"""The volume study's draws (``bench/studies/volume.py --draws``): which third of its volume each shot came from,
read from the runs' ``head.pt`` records, among the slices that hold the task's structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from bench.studies import volume


def test_shots_are_counted_by_third_of_their_volume(tmp_path: Path) -> None:
    """Two volumes of 6 and 9 slices that hold the structure, and one past the apex that does not: ranks among the
    task's slices cut into basal, middle and apical thirds; two runs share a shot, which counts once; another
    recipe's runs and runs not asked for are not read."""
    table = pd.DataFrame(
        [{"id": f"p{p}_slice{s:02d}", "subject": f"p{p}", "slice": s} for p, n in ((1, 7), (2, 9)) for s in range(n)]
    )
    table["split"] = "train"
    table["rv_area"] = np.where(table["id"] == "p1_slice06", 0, 100)
    table = table.assign(rv_x0=0, rv_y0=0, rv_x1=9, rv_y1=9)
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"tasks": {t: {"class": "rv"} for t in volume.TASKS}, "prepare": {"min_foreground": 10}})
    )
    table.to_csv(tmp_path / "acdc.csv", index=False)
    index = volume.task_rows(params, tmp_path / "acdc.csv")["acdc-rv"]
    assert "p1_slice06" not in set(index["id"]), "the slice past the apex holds no RV"
    where = volume.third_of(index)
    assert [where[f"p1_slice{s:02d}"] for s in range(6)] == ["basal"] * 2 + ["middle"] * 2 + ["apical"] * 2
    assert [where[f"p2_slice{s:02d}"] for s in (0, 2, 3, 5, 6, 8)] == ["basal"] * 2 + ["middle"] * 2 + ["apical"] * 2
    runs = {"subset0-seed0": ["p1_slice00", "p1_slice05", "p2_slice08"], "subset1-seed0": ["p1_slice05", "p2_slice04"]}
    stale = {"subset9-seed0": ["p1_slice02"]}  # a run of another plan, left in a kept clone
    for recipe, named in (("augmented", runs | stale), ("workshop", {"subset0-seed0": ["p1_slice00"]})):
        for run, ids in named.items():
            (tmp_path / recipe / "fewshot" / run).mkdir(parents=True)
            torch.save({"config": {"ids": ids}}, tmp_path / recipe / "fewshot" / run / "head.pt")
    found = volume.shots_by_third(tmp_path, index, "augmented", list(runs))
    assert found == {"basal": 1, "middle": 1, "apical": 2}


def test_whole_volume_rows_are_read_beside_the_slice_rows() -> None:
    """Where evaluate scored whole volumes, a recipe's fitted and presence rows and the tight box carry their 3D Dice
    and false and missed slices; the slice rows are those of the slices holding the structure, as before."""
    row = {"mean": 0.5, "std": 0.1}
    misses = {"below_50_dice": 1, "empty": 0}
    recipe = {name: row for name in volume.ROWS.values()}
    metrics = {
        "test_images": 4,
        "dice": {"tight_box": {"mean": 0.9}, "augmented": recipe},
        "misses": {"tight_box": 0, "augmented": {name: misses for name in volume.ROWS.values()}},
        "reprompt": {"groups": {"augmented/fewshot": {"margin": 0.1}}},
        "whole_volumes": {"volumes": 1, "slices": 6, "slices_with_structure": 4},
        "whole_dice_3d": {
            "tight_box": {"mean": 80.0},
            "augmented": {"fewshot_volume": {"mean": 61.234}, "fewshot_presence": {"mean": 75.0}},
        },
        "slices": {
            "tight_box": {"false": 0, "missed": 0},
            "augmented": {"fewshot_volume": {"false": 2, "missed": 0}, "fewshot_presence": {"false": 0, "missed": 1}},
        },
    }
    per_image = pd.DataFrame({"id": [f"p1_slice{s}" for s in range(4)], "subject": "p1"})
    for column in ("dice:tight_box", *(f"dice:augmented/{name}" for name in volume.ROWS.values())):
        per_image[column] = 0.5
    out = volume.summarize_task(metrics, per_image, ["augmented"])
    assert out["augmented"]["volume"]["dice"] == 0.5
    assert out["augmented"]["whole"] == {
        "volume": {"dice_3d": 61.23, "false": 2, "missed": 0},
        "presence": {"dice_3d": 75.0, "false": 0, "missed": 1},
    }
    assert out["tight_box"]["whole"] == {"dice_3d": 80.0, "false": 0, "missed": 0}
    assert out["whole_volumes"]["slices"] == 6
    del metrics["whole_volumes"]
    assert "whole" not in volume.summarize_task(metrics, per_image, ["augmented"])["augmented"]
