"""Subject-level splits: no subject's images fall into two splits; the same seed gives the same split."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def assign_splits(
    subject_sizes: dict[str, int],
    proportions: dict[str, float],
    seed: int,
    fixed: dict[str, str] | None = None,
) -> dict[str, str]:
    """Subject -> split, so that the image counts of the free subjects approach ``proportions`` (weights such
    as the paper's counts 507 / 77 / 148, normalised here).

    Subjects in ``fixed`` keep their split (an official test folder, a split file). The others are shuffled with
    ``seed`` and dealt to test, then val, each until its share of images is reached; the rest is train.
    """
    assert set(proportions) <= set(SPLITS), f"unknown splits in {proportions}"
    weight = sum(proportions.values())
    assert weight > 0, f"split proportions must be positive, got {proportions}"
    fixed = dict(fixed or {})
    free = sorted(s for s in subject_sizes if s not in fixed)
    total = sum(subject_sizes[s] for s in free)
    order = [free[i] for i in np.random.default_rng(seed).permutation(len(free))]
    result = dict(fixed)
    position = 0
    for split in ("test", "val"):
        target = round(proportions.get(split, 0) / weight * total)
        count = 0
        while position < len(order) and count < target:
            result[order[position]] = split
            count += subject_sizes[order[position]]
            position += 1
    for subject in order[position:]:
        result[subject] = "train"
    return result
