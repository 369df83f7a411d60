"""Dice at label resolution, and the run summaries of Table 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoprompt.evaluation import report, scoring
from autoprompt.evaluation.metrics import dice, empty_misses, mask_dice, summarize


def test_dice_values_and_the_empty_case():
    truth = torch.zeros(4, 8, 8, dtype=torch.bool)
    truth[1:, 2:6, 2:6] = True  # 16 pixels in images 1-3; image 0 is empty
    pred = torch.zeros_like(truth)
    pred[1, 2:6, 2:6] = True  # perfect
    pred[2, 2:6, 2:4] = True  # 8 of 16 pixels: 2 * 8 / (8 + 16)
    # image 3: empty prediction of a non-empty mask; image 0: empty against empty
    assert dice(pred, truth).tolist() == pytest.approx([1.0, 1.0, 2 * 8 / 24, 0.0])
    assert dice(truth[:1] | True, truth[:1]).item() == 0.0, "a full prediction of an empty mask scores 0"


def test_mask_dice_takes_a_volume_whole_from_arrays_or_tensors():
    """A volume's slices together (not their mean), any nonzero label as foreground; two empty masks agree."""
    truth = np.zeros((2, 8, 8), np.uint8)
    truth[0, 2:6, 2:6] = 3  # 16 pixels on slice 0, slice 1 empty
    pred = np.zeros_like(truth)
    pred[0, 2:6, 2:4] = 1  # 8 of them
    pred[1, 0, 0:8] = 1  # 8 pixels where slice 1 is empty
    assert mask_dice(pred, truth) == pytest.approx(2 * 8 / (16 + 16))
    assert mask_dice(torch.from_numpy(pred) > 0, torch.from_numpy(truth) > 0) == mask_dice(pred, truth)
    assert mask_dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0


def test_summaries_are_in_percent_with_the_population_std():
    assert summarize([0.8, 0.9]) == {"mean": 85.0, "std": 5.0, "n": 2}
    with pytest.raises(AssertionError, match="prediction"):
        dice(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))


def test_misses_are_images_under_50_dice_and_empty_masks_of_non_empty_references():
    truth = torch.zeros(4, 8, 8, dtype=torch.bool)
    truth[1:, 2:6, 2:6] = True  # image 0's reference is empty
    pred = torch.zeros_like(truth)
    pred[1, 2:6, 2:6] = True  # perfect
    pred[2, 2:6, 2:3] = True  # 4 of 16 pixels: Dice 0.4, a miss but not an empty one
    # image 3: empty where the reference is not; image 0: empty against empty, no miss
    assert empty_misses(pred, truth).tolist() == [False, False, False, True]
    spacing = torch.ones(4, 2, dtype=torch.float64)
    scores = scoring.score(pred, truth, spacing, None, 1.0)
    assert scores.misses() == (2, 1)
    assert scoring.over_images(scores)["misses"] == {"below_50_dice": 2, "empty": 1, "n": 4, "over": "test images"}
    perfect = scoring.score(truth, truth, spacing, None, 1.0)
    over_runs = scoring.over_runs([scores, perfect])["misses"]
    assert over_runs == {"below_50_dice": 1.0, "empty": 0.5, "n": 2, "over": "runs"}, "the mean count per run"
    assert scoring.metrics_json({"workshop/fewshot": {"misses": over_runs}}) == {
        "misses": {"workshop": {"fewshot": over_runs}}
    }, "dvc metrics name it misses.workshop.fewshot.below_50_dice"


def test_the_surface_table_counts_each_rows_misses():
    metrics = {
        "hc18": {
            "nsd": {"tight_box": {"mean": 90.0, "std": 1.0, "n": 7}},
            "hd95_mm": {"tight_box": {"mean": 3.0, "std": 1.0, "n": 7}},
            "misses": {
                "tight_box": {"below_50_dice": 0, "empty": 0, "n": 7},
                "workshop": {"fewshot": {"below_50_dice": 1.5, "empty": 0.5, "n": 2}},
            },
        }
    }
    table = report.surface_table(metrics, {"hc18": "HC"}, ["workshop"], "lite_medsam", 8).set_index("samples")
    assert table.loc["-", "HC misses"] == "0"
    fewshot = table[table["method"].str.startswith("Prompt module — ours")]
    assert fewshot["HC misses"].tolist() == ["1.5 (0.5 empty)"]
    assert scoring.miss_cell(None) == "–"
