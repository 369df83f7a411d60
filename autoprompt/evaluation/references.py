"""Test rows and what they are scored against: the dataset's masks, or, for images without a mask (users' own data
with boxes only), the backbone's mask prompted with their tight box: agreement, not accuracy.

``score_rows`` scores one kind of rows for the tight-box prompt, each group's runs, its ensemble and single
predictors such as the re-prompted ensembles; ``metric_blocks``
lays the summaries out as ``metrics/<task>.json`` does (rows with masks under the metric keys, the others under
``agreement``); ``per_image`` gives the per-image table with each row's reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from autoprompt.evaluation import scoring
from autoprompt.evaluation.scoring import ENSEMBLE, Scores

TIGHT_BOX = "tight_box"
MASK, BOX_PROMPTED = "mask", "box_prompted"  # what a test row is scored against
REFERENCE_WORDS = {MASK: "test Dice against the masks", BOX_PROMPTED: "agreement with the box-prompted masks"}


@dataclass
class Reference:
    """Test rows scored against one kind of reference: ``mask`` (the dataset's masks) or ``box_prompted`` (where the
    dataset has no mask, the backbone's mask prompted with the tight box: agreement, not accuracy).

    ``index``: the rows' positions among the test rows (n); ``truth``: n x S x S bool; ``spacing``: n x 2 mm;
    ``subjects``: n subject ids, for 3D Dice of slices of volumes (None for 2D images)."""

    name: str
    index: torch.Tensor
    truth: torch.Tensor
    spacing: torch.Tensor
    subjects: list[str] | None

    def score(self, probs: torch.Tensor, threshold: float, tolerance: float) -> Scores:
        """N x S x S probabilities of every test row -> the scores of this reference's rows."""
        return scoring.score(probs[self.index] > threshold, self.truth, self.spacing, self.subjects, tolerance)


def references(
    masks: torch.Tensor,
    has_masks: torch.Tensor,
    box_prompted: torch.Tensor,
    spacing: torch.Tensor,
    subjects: list[str] | None,
) -> list[Reference]:
    """The test rows with a mask, scored against it, then those without, scored against ``box_prompted`` (N x S x S
    bool); a kind without rows is left out. ``masks``: N x S x S bool; ``has_masks``: N bool; ``spacing``: N x 2."""
    out = []
    for name, chosen, truth in ((MASK, has_masks, masks), (BOX_PROMPTED, ~has_masks, box_prompted)):
        index = torch.nonzero(chosen).flatten()
        if len(index):
            picked = None if subjects is None else [subjects[i] for i in index.tolist()]
            out.append(Reference(name, index, truth[index], spacing[index], picked))
    return out


@dataclass
class Scored:
    """One reference's rows scored: each predictor's per-image scores (a group: one per run) and its summary."""

    reference: Reference
    predictors: dict[str, Scores | list[Scores]]
    summaries: dict[str, dict]


def score_rows(
    reference: Reference,
    runs: dict[str, list[Scores]],
    means: dict[str, torch.Tensor],
    tight_probs: torch.Tensor | None,
    threshold: float,
    tolerance: float,
    single: dict[str, torch.Tensor] | None = None,
) -> Scored:
    """Score one reference's rows: the tight-box prompt (N x S x S probabilities; None leaves its row out), each
    group's runs (``runs``, already scored on these rows), for a group of several runs its ensemble (``means``:
    the mean of its runs' N x S x S probabilities, thresholded once), and each of ``single`` (row -> N x S x S
    probabilities of one predictor, e.g. a re-prompted ensemble), scored over images."""
    predictors: dict[str, Scores | list[Scores]] = {}
    summaries: dict[str, dict] = {}
    if tight_probs is not None:
        predictors[TIGHT_BOX] = reference.score(tight_probs, threshold, tolerance)
        summaries[TIGHT_BOX] = scoring.over_images(predictors[TIGHT_BOX])
    for group, scores in runs.items():
        predictors[group] = scores
        summaries[group] = scoring.over_runs(scores)
        if len(scores) > 1:
            ensemble = predictors[f"{group}_{ENSEMBLE}"] = reference.score(means[group], threshold, tolerance)
            summaries[f"{group}_{ENSEMBLE}"] = scoring.over_images(ensemble)
    for row, probs in (single or {}).items():
        predictors[row] = reference.score(probs, threshold, tolerance)
        summaries[row] = scoring.over_images(predictors[row])
    return Scored(reference, predictors, summaries)


def metric_blocks(scored: list[Scored]) -> dict:
    """The metrics JSON's scores: how many test rows each reference scored (``reference``), the rows with masks
    under the metric keys (``dice.<row>``, ...) and the rows without under ``agreement`` in the same layout."""
    counts = {s.reference.name: len(s.reference.index) for s in scored}
    out: dict = {"reference": {"masks": counts.get(MASK, 0), "box_prompted": counts.get(BOX_PROMPTED, 0)}}
    for s in scored:
        blocks = scoring.metrics_json(s.summaries)
        out.update(blocks if s.reference.name == MASK else {"agreement": blocks})
    return out


def per_image(rows: pd.DataFrame, scored: list[Scored]) -> pd.DataFrame:
    """One row per test image, in the test rows' order: id, subject, its ``reference`` (``mask`` or
    ``box_prompted``), then each predictor's scores (``scoring.per_image_table``)."""
    tables, positions = [], []
    for s in scored:
        index = s.reference.index.numpy()
        ids = rows[["id", "subject"]].iloc[index].assign(reference=s.reference.name)
        tables.append(scoring.per_image_table(ids, s.predictors))
        positions.append(index)
    table = pd.concat(tables, ignore_index=True)
    return table.iloc[np.argsort(np.concatenate(positions), kind="stable")].reset_index(drop=True)
