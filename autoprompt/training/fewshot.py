"""The training runs of a task: few-shot subsets x initialisation seeds, and the all-images runs.

A run is named by its regime and number: ``fewshot/subset1-seed2`` trains on subset 1 of ``shots`` images with
seed 2; ``all/seed0`` trains on every training image. Subsets are drawn from the training split with their own
seed, so the same params give the same images on every machine: uniformly (``train.draw: uniform``), one image
from each of ``shots`` strata of tight-box area (``box_area``), so that the few shots cover the structure's sizes,
small apex cavities and large basal ones alike, from boxes alone; or over the split's pooled embeddings as
``autoprompt suggest`` chooses the images a user boxes (``suggest``: ``training.suggest.typical``, the central image
of each of ``shots`` k-means clusters), with each volume slice's position in its volume as a feature. Subset 0 takes
k-means++'s seed 0, as ``autoprompt suggest`` does; subset k > 0 a seed drawn with ``subset_seed`` and k, so that
several subsets differ. ``kcenter`` spreads them by greedy k-center instead (``suggest --method kcenter``): subset 0
from the medoid, subset k > 0 from a seeded image. A subset always has ``shots`` images: near-duplicates are not
skipped here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import zarr

from autoprompt.data.embeddings import pooled
from autoprompt.data.prepared import task_table
from autoprompt.errors import InputError
from autoprompt.settings import TrainSettings
from autoprompt.training import suggest

FEWSHOT = "fewshot"
ALL = "all"


@dataclass(frozen=True)
class Spread:
    """What a draw over the embeddings spreads the shots over: id -> feature vector (``draw_features``), and the rule
    that spreads them (``typical`` or ``kcenter``: ``training.suggest``)."""

    features: Mapping[str, np.ndarray]
    rule: str = "typical"


SPREAD_RULES = {"suggest": "typical", "kcenter": "kcenter"}  # train.draw -> the rule of training.suggest it runs


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


def draw_subset(
    ids: list[str],
    shots: int,
    subset: int,
    subset_seed: int,
    areas: Mapping[str, float] | None = None,
    spread: Spread | None = None,
) -> tuple[str, ...]:
    """``shots`` ids drawn without replacement from the sorted ``ids``; the same arguments give the same ids.

    With ``areas`` (id -> tight-box area), the pool sorted by area is cut into ``shots`` strata of (nearly) equal
    size and one id is drawn from each. With ``spread`` (``draw_features``), its rule on its features: each k-means
    cluster's central id (``suggest.typical``) with seed 0 for subset 0 and a seeded seed for the others, or greedy
    k-center (``suggest.choose``) from the medoid for subset 0 and from a seeded id for the others."""
    pool = sorted(ids)
    rng = np.random.default_rng([subset_seed, subset])
    if spread is not None:
        features = np.stack([spread.features[i] for i in pool])
        if spread.rule == "kcenter":
            picked = suggest.choose(features, shots, start=None if subset == 0 else int(rng.integers(len(pool))))
        else:
            picked = suggest.typical(features, shots, seed=0 if subset == 0 else int(rng.integers(2**31)))
    elif areas is None:
        picked = rng.choice(len(pool), size=shots, replace=False)
    else:
        by_area = sorted(range(len(pool)), key=lambda i: (areas[pool[i]], pool[i]))
        picked = [int(rng.choice(stratum)) for stratum in np.array_split(np.array(by_area), shots)]
    return tuple(pool[i] for i in sorted(picked))


def box_areas(rows: pd.DataFrame) -> dict[str, float]:
    """Id -> area of its tight box (pixels) for a task's rows (``task_table``'s ``x0, y0, x1, y1``, inclusive)."""
    areas = (rows["x1"] - rows["x0"] + 1) * (rows["y1"] - rows["y0"] + 1)
    return dict(zip(rows["id"], areas.astype(float), strict=True))


def draw_areas(rows: pd.DataFrame, train: TrainSettings) -> dict[str, float] | None:
    """The box areas that ``train.draw`` stratifies by, or None for a uniform draw."""
    return box_areas(rows) if train.draw == "box_area" else None


def draw_features(rows: pd.DataFrame, train: TrainSettings, store: zarr.Group | None) -> Spread | None:
    """The features that ``train.draw: suggest`` or ``kcenter`` spreads the shots over, or None for the other draws: the
    rows' pooled embeddings from the embedding ``store`` (their ``row``); where the rows are slices (a ``slice``
    column), with each slice's position among its subject's rows (0 at the lowest slice, 1 at the highest,
    ``suggest.CENTRE`` for a subject of one slice) as a feature (``suggest.with_positions``)."""
    if train.draw not in SPREAD_RULES:
        return None
    assert store is not None, f"train.draw: {train.draw} reads the embedding store"
    features = pooled(store["embeddings"], rows["row"].to_numpy())
    if "slice" in rows:
        by_subject = rows.groupby("subject")["slice"]
        low, high = by_subject.transform("min"), by_subject.transform("max")
        positions = ((rows["slice"] - low) / (high - low).where(high > low)).fillna(suggest.CENTRE)
        features = suggest.with_positions(features, positions.to_numpy(dtype=np.float32))
    return Spread(dict(zip(rows["id"], features, strict=True)), SPREAD_RULES[train.draw])


def plan_runs(
    train_ids: list[str],
    shots: int | str,
    subsets: int,
    seeds: list[int] | tuple[int, ...],
    subset_seed: int,
    all_images: bool,
    task: str = "task",
    key: str = "train.shots",
    areas: Mapping[str, float] | None = None,
    spread: Spread | None = None,
) -> list[Run]:
    """Every run of a task: ``subsets x seeds`` few-shot runs of ``shots`` images (unless ``shots`` is ``all``), then
    ``seeds`` runs on every training image when ``all_images`` is set (or ``shots`` is ``all``). ``key`` names the
    shots setting in messages; ``areas`` (id -> box area) stratifies the draw, ``spread`` spreads it
    (``draw_subset``)."""
    count = None if shots == ALL else int(shots)
    if not train_ids:
        raise InputError(f"{task}: no training images; check the split in the prepared index")
    runs: list[Run] = []
    if count is not None:
        if count > len(train_ids):
            raise InputError(
                f"{key} is {count}, more than the {len(train_ids)} training images of task {task}; lower it or set it "
                "to all"
            )
        for subset in range(subsets):
            chosen = draw_subset(train_ids, count, subset, subset_seed, areas, spread)
            runs += [Run(FEWSHOT, f"subset{subset}-seed{seed}", seed, chosen) for seed in seeds]
    if all_images or count is None:
        everything = tuple(sorted(train_ids))
        runs += [Run(ALL, f"seed{seed}", seed, everything) for seed in seeds]
    return runs


def fewshot_ids(
    table: pd.DataFrame,
    tasks: dict[str, str],
    min_foreground: int,
    train: TrainSettings,
    store: zarr.Group | None = None,
) -> list[str]:
    """The ids, in index order, of every image that a few-shot run of one of ``tasks`` (task name -> class, the
    dataset's tasks) trains on, in the prepared index ``table``: the images whose encoded views the recipes draw.
    ``store``: the dataset's embedding store, which ``train.draw: suggest`` and ``kcenter`` read (``draw_features``)."""
    wanted: set[str] = set()
    for task, class_name in tasks.items():
        rows = task_table(table, class_name, min_foreground)
        if "slice" in table:  # as load_task carries it: the slice's position, for draw_features
            rows = rows.assign(slice=table.loc[rows["row"], "slice"].to_numpy())
        rows = rows[rows["split"] == "train"].reset_index(drop=True)
        train_ids = rows["id"].tolist()
        if not train_ids:
            continue
        key = train.key("shots")
        areas, spread = draw_areas(rows, train), draw_features(rows, train, store)
        shots, subsets, seed = train.shots, train.subsets, train.subset_seed
        plan = plan_runs(train_ids, shots, subsets, [0], seed, False, task, key, areas, spread)
        wanted.update(i for r in plan if r.regime == FEWSHOT for i in r.ids)
    return [i for i in table["id"] if i in wanted]
