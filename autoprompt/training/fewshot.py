"""The training runs of a task: few-shot subsets x initialisation seeds, and the all-images runs.

A run is named by its regime and number: ``fewshot/subset1-seed2`` trains on subset 1 of ``shots`` images with
seed 2; ``all/seed0`` trains on every training image. Subsets are drawn from the training split with their own
seed, so the same params give the same images on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoprompt.errors import InputError

FEWSHOT = "fewshot"
ALL = "all"


@dataclass(frozen=True)
class Run:
    """One training run: its regime, name, initialisation seed and training image ids."""

    regime: str
    name: str
    seed: int
    ids: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.regime}/{self.name}"


def parse_shots(shots: int | str) -> int | None:
    """``train.shots`` as an image count, or None for ``all``."""
    if isinstance(shots, str) and shots.strip().lower() == ALL:
        return None
    try:
        count = int(shots)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or str(shots).strip() != str(count):
        raise InputError(f"params.yaml: train.shots must be a positive integer or 'all', got {shots!r}")
    return count


def draw_subset(ids: list[str], shots: int, subset: int, subset_seed: int) -> tuple[str, ...]:
    """``shots`` ids drawn without replacement from the sorted ``ids``; the same arguments give the same ids."""
    pool = sorted(ids)
    rng = np.random.default_rng([subset_seed, subset])
    picked = rng.choice(len(pool), size=shots, replace=False)
    return tuple(pool[i] for i in sorted(picked))


def plan_runs(
    train_ids: list[str],
    shots: int | str,
    subsets: int,
    seeds: list[int],
    subset_seed: int,
    all_images: bool,
    task: str = "task",
) -> list[Run]:
    """Every run of a task: ``subsets x seeds`` few-shot runs (unless ``shots`` is all), then ``seeds`` runs on
    every training image when ``all_images`` is set (or ``shots`` is all)."""
    count = parse_shots(shots)
    if not train_ids:
        raise InputError(f"{task}: no training images; check the split in the prepared index")
    runs: list[Run] = []
    if count is not None:
        if count > len(train_ids):
            raise InputError(
                f"params.yaml: train.shots {count} exceeds the {len(train_ids)} training images of "
                f"task {task}; lower train.shots or set it to all"
            )
        for subset in range(subsets):
            chosen = draw_subset(train_ids, count, subset, subset_seed)
            runs += [Run(FEWSHOT, f"subset{subset}-seed{seed}", seed, chosen) for seed in seeds]
    if all_images or count is None:
        everything = tuple(sorted(train_ids))
        runs += [Run(ALL, f"seed{seed}", seed, everything) for seed in seeds]
    return runs
