"""Subject-level splits: disjoint, complete, seeded, proportional; fixed subjects keep their split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autoprompt.datasets.splits import assign_splits
from autoprompt.prepared import split_table

PAPER = {"train": 507, "val": 77, "test": 148}


def _subjects(n: int = 300, seed: int = 0) -> dict[str, int]:
    """n subjects with one or two images each."""
    sizes = np.random.default_rng(seed).integers(1, 3, size=n)
    return {f"{k:03d}": int(size) for k, size in enumerate(sizes)}


def test_every_subject_gets_exactly_one_split() -> None:
    sizes = _subjects()
    result = assign_splits(sizes, PAPER, seed=0)
    assert set(result) == set(sizes)
    assert set(result.values()) == {"train", "val", "test"}


def test_proportions_of_images_are_kept() -> None:
    """Image counts per split approach the normalised weights (overshoot by at most one subject)."""
    sizes = _subjects()
    total = sum(sizes.values())
    result = assign_splits(sizes, PAPER, seed=0)
    weight = sum(PAPER.values())
    for split in ("test", "val"):
        count = sum(n for subject, n in sizes.items() if result[subject] == split)
        target = round(PAPER[split] / weight * total)
        assert target <= count <= target + 1, f"{split}: {count} images for a target of {target}"
    train = sum(n for subject, n in sizes.items() if result[subject] == "train")
    assert train == pytest.approx(PAPER["train"] / weight * total, abs=3)


def test_same_seed_same_split_other_seed_differs() -> None:
    sizes = _subjects()
    assert assign_splits(sizes, PAPER, seed=3) == assign_splits(dict(reversed(sizes.items())), PAPER, seed=3)
    assert assign_splits(sizes, PAPER, seed=3) != assign_splits(sizes, PAPER, seed=4)


def test_fixed_subjects_keep_their_split() -> None:
    """Fixed subjects keep their split and do not count towards the free subjects' proportions."""
    sizes = _subjects()
    fixed = {f"{k:03d}": "test" for k in range(50)} | {"060": "train", "061": "val"}
    result = assign_splits(sizes, PAPER, seed=0, fixed=fixed)
    assert set(result) == set(sizes)
    for subject, split in fixed.items():
        assert result[subject] == split
    free = {s: n for s, n in sizes.items() if s not in fixed}
    test_free = sum(n for s, n in free.items() if result[s] == "test")
    target = round(PAPER["test"] / sum(PAPER.values()) * sum(free.values()))
    assert target <= test_free <= target + 1


def test_missing_splits_and_bad_proportions() -> None:
    sizes = _subjects(40)
    result = assign_splits(sizes, {"train": 3, "test": 1}, seed=0)
    assert set(result.values()) == {"train", "test"}
    with pytest.raises(AssertionError, match="unknown splits"):
        assign_splits(sizes, {"train": 1, "holdout": 1}, seed=0)
    with pytest.raises(AssertionError, match="positive"):
        assign_splits(sizes, {"train": 0, "test": 0}, seed=0)


def _table(sizes: dict[str, int], fixed: dict[str, str] | None = None) -> pd.DataFrame:
    fixed = fixed or {}
    rows = [
        {"id": f"{subject}_{k}HC", "subject": subject, "split": fixed.get(subject)}
        for subject, n in sizes.items()
        for k in range(n)
    ]
    return pd.DataFrame(rows)


def test_split_table_is_disjoint_by_subject() -> None:
    """Every row gets a split; all the images of one subject share it."""
    sizes = _subjects()
    table = _table(sizes)
    splits = split_table(table, PAPER, seed=0)
    assert splits.notna().all()
    assert (table.assign(split=splits).groupby("subject")["split"].nunique() == 1).all()
    assert splits.tolist() == split_table(table, PAPER, seed=0).tolist()
    assert splits.tolist() != split_table(table, PAPER, seed=1).tolist()
    counts = splits.value_counts()
    assert counts["test"] == pytest.approx(PAPER["test"] / sum(PAPER.values()) * len(table), abs=2)


def test_split_table_keeps_rows_the_dataset_fixes() -> None:
    sizes = _subjects(60)
    fixed = {f"{k:03d}": "test" for k in range(10)}
    table = _table(sizes, fixed)
    splits = split_table(table, PAPER, seed=0)
    fixed_rows = table["subject"].isin(fixed)
    assert (splits[fixed_rows] == "test").all()
    assert splits.notna().all()
    assert (table.assign(split=splits).groupby("subject")["split"].nunique() == 1).all()
