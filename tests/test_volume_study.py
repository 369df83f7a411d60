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
