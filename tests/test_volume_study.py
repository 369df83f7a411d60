"""The volume study's draws (``bench/studies/volume.py --draws``): which third of its volume each shot came from,
read from the runs' ``head.pt`` records and cut as the test volumes are."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from bench.studies import volume


def test_shots_are_counted_by_third_of_their_volume(tmp_path: Path) -> None:
    """Two volumes of 6 and 9 slices: ranks cut into basal, middle and apical thirds; two runs share a shot, which
    counts once; another recipe's runs are not read."""
    index = pd.DataFrame(
        [{"id": f"p{p}_slice{s:02d}", "subject": f"p{p}", "slice": s} for p, n in ((1, 6), (2, 9)) for s in range(n)]
    )
    where = volume.third_of(index)
    assert [where[f"p1_slice{s:02d}"] for s in range(6)] == ["basal"] * 2 + ["middle"] * 2 + ["apical"] * 2
    assert [where[f"p2_slice{s:02d}"] for s in (0, 2, 3, 5, 6, 8)] == ["basal"] * 2 + ["middle"] * 2 + ["apical"] * 2
    runs = {"subset0-seed0": ["p1_slice00", "p1_slice05", "p2_slice08"], "subset1-seed0": ["p1_slice05", "p2_slice04"]}
    for recipe, named in (("augmented", runs), ("workshop", {"subset0-seed0": ["p1_slice00"]})):
        for run, ids in named.items():
            (tmp_path / recipe / "fewshot" / run).mkdir(parents=True)
            torch.save({"config": {"ids": ids}}, tmp_path / recipe / "fewshot" / run / "head.pt")
    assert volume.shots_by_third(tmp_path, index, "augmented") == {"basal": 1, "middle": 1, "apical": 2}
