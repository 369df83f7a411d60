"""Dice at label resolution, and the run summaries of Table 1."""

from __future__ import annotations

import pytest
import torch

from autoprompt.evaluation.metrics import dice, summarize


def test_dice_values_and_the_empty_case():
    truth = torch.zeros(4, 8, 8, dtype=torch.bool)
    truth[1:, 2:6, 2:6] = True  # 16 pixels in images 1-3; image 0 is empty
    pred = torch.zeros_like(truth)
    pred[1, 2:6, 2:6] = True  # perfect
    pred[2, 2:6, 2:4] = True  # 8 of 16 pixels: 2 * 8 / (8 + 16)
    # image 3: empty prediction of a non-empty mask; image 0: empty against empty
    assert dice(pred, truth).tolist() == pytest.approx([1.0, 1.0, 2 * 8 / 24, 0.0])
    assert dice(truth[:1] | True, truth[:1]).item() == 0.0, "a full prediction of an empty mask scores 0"


def test_summaries_are_in_percent_with_the_population_std():
    assert summarize([0.8, 0.9]) == {"mean": 85.0, "std": 5.0, "n": 2}
    with pytest.raises(AssertionError, match="prediction"):
        dice(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
