"""Scores of one task's test predictions: per image (Dice, HD95, NSD), per subject in 3D, and their summaries.

A *group* is the runs of one recipe and regime (``workshop/fewshot``, say). Its row reports the mean ± std over
runs of each run's mean over test images, as Table 1 does; its ensemble (the mean of the runs' probabilities,
thresholded once) and the tight-box prompt are single predictors, whose ± is over test images.

Each row also counts its misses, the images a user would have to find and draw by hand: those under ``MISS`` Dice,
and among them those whose mask is empty where the reference is not (a group: the mean count over its runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from autoprompt.evaluation.metrics import MISS, dice, empty_misses, summarize
from autoprompt.evaluation.surface import dice_per_subject, hd95, nsd, summarize_finite

ENSEMBLE = "ensemble"
REPROMPTED = "reprompted"  # a group's ensemble (or its one run) re-prompted with its masks' loosened boxes
VOLUME = "volume"  # a re-prompted row with the boxes fitted across each volume's slices (slices of volumes only)
PRESENCE = "presence"  # that row (or the re-prompted one) with the slices judged absent emptied
OVER_RUNS, OVER_IMAGES = "runs", "test images"


@dataclass
class Scores:
    """Per-image values of one predictor: ``dice`` and ``nsd`` in [0, 1], ``hd95`` in mm (NaN where undefined),
    ``empty`` (the mask is empty where the reference is not), and ``dice_3d`` per subject (only for slices of
    volumes)."""

    dice: Tensor
    hd95: Tensor
    nsd: Tensor
    empty: Tensor
    dice_3d: dict[str, float] = field(default_factory=dict)

    def misses(self) -> tuple[int, int]:
        """(images under ``MISS`` Dice, images with an empty mask where the reference is not)."""
        return int((self.dice < MISS / 100).sum()), int(self.empty.sum())


def score(pred: Tensor, truth: Tensor, spacing: Tensor, subjects: list[str] | None, tolerance_mm: float) -> Scores:
    """B x H x W boolean predictions against the masks, with B x 2 pixel spacings (mm); ``subjects`` (one per
    image) asks for 3D Dice per subject."""
    return Scores(
        dice=dice(pred, truth),
        hd95=hd95(pred, truth, spacing),
        nsd=nsd(pred, truth, spacing, tolerance_mm),
        empty=empty_misses(pred, truth),
        dice_3d=dice_per_subject(pred, truth, subjects) if subjects is not None else {},
    )


def _image_means(scores: Scores) -> dict[str, float]:
    """One predictor's mean over test images (and over subjects for 3D Dice); HD95 over its defined images."""
    means = {
        "dice": float(scores.dice.mean()),
        "nsd": float(scores.nsd.mean()),
        "hd95_mm": float(np.nanmean(scores.hd95.numpy())) if torch.isfinite(scores.hd95).any() else float("nan"),
    }
    if scores.dice_3d:
        means["dice_3d"] = float(np.mean(list(scores.dice_3d.values())))
    return means


def over_runs(runs: list[Scores]) -> dict[str, dict]:
    """Metric -> mean ± std over runs of each run's mean over test images."""
    means = [_image_means(s) for s in runs]
    out = {}
    for metric in means[0]:
        values = [m[metric] for m in means]
        out[metric] = summarize_finite(values) if metric == "hd95_mm" else summarize(values)
        out[metric]["over"] = OVER_RUNS
    under, empty = np.array([s.misses() for s in runs], dtype=np.float64).mean(axis=0)
    out["misses"] = {"below_50_dice": round(float(under), 4), "empty": round(float(empty), 4), "n": len(runs)}
    out["misses"]["over"] = OVER_RUNS
    return out


def over_images(scores: Scores) -> dict[str, dict]:
    """Metric -> mean ± std over test images (over subjects for 3D Dice) of one predictor."""
    out = {
        "dice": summarize(scores.dice.numpy()),
        "nsd": summarize(scores.nsd.numpy()),
        "hd95_mm": summarize_finite(scores.hd95.numpy()),
    }
    if scores.dice_3d:
        out["dice_3d"] = summarize(list(scores.dice_3d.values()))
    under, empty = scores.misses()
    out["misses"] = {"below_50_dice": under, "empty": empty, "n": len(scores.dice)}
    for value in out.values():
        value["over"] = OVER_IMAGES
    return out


def miss_cell(summary: dict | None) -> str:
    """A row's misses as tables show them: images under 50 Dice, with how many of them are empty masks
    (``2 (1 empty)``), or ``–``; a row of runs gives the mean count per run."""
    if summary is None or summary.get("n", 1) == 0:
        return "–"
    under, empty = summary["below_50_dice"], summary["empty"]
    return f"{under:g} ({empty:g} empty)" if empty else f"{under:g}"


def metrics_json(rows: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """``row -> metric -> summary`` turned into ``metric -> row -> summary``, the layout of ``metrics/<task>.json``
    (``dice.workshop.fewshot.mean`` in ``dvc metrics``), rows nested by recipe and regime; NaN (no defined value)
    becomes null."""
    out: dict[str, dict] = {}
    for row, by_metric in rows.items():
        for metric, summary in by_metric.items():
            node = out.setdefault(metric, {})
            *parents, leaf = row.split("/")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in summary.items()}
    return out


def per_image_table(ids: pd.DataFrame, predictors: dict[str, Scores | list[Scores]]) -> pd.DataFrame:
    """One row per test image: its id and subject, then each predictor's Dice, NSD and HD95 (means over runs for a
    group), columns named ``<metric>:<predictor>``."""
    table = ids.reset_index(drop=True).copy()
    for name, scores in predictors.items():
        runs = scores if isinstance(scores, list) else [scores]
        for metric in ("dice", "nsd", "hd95"):
            stacked = torch.stack([getattr(s, metric) for s in runs]).double()
            table[f"{metric}:{name}"] = stacked.nanmean(0).numpy() if metric == "hd95" else stacked.mean(0).numpy()
    return table
