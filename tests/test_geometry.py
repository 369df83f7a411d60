"""Boxes on pixel grids: a mask's largest component's box, and the IoU of boxes in inclusive pixel indices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoprompt.geometry import inclusive_box_iou, largest_component_box


def test_the_box_is_the_largest_components_in_inclusive_indices():
    mask = np.zeros((20, 30), np.uint8)
    mask[2:4, 3:5] = 1  # 4 pixels
    mask[10:15, 20:28] = 2  # 40 pixels, any nonzero label
    assert largest_component_box(mask) == (20, 10, 27, 14)
    assert largest_component_box(np.zeros((5, 5), bool)) is None


def test_box_iou_counts_the_pixels_the_boxes_cover():
    one_pixel, four_pixels = torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 1, 1]])
    assert float(inclusive_box_iou(one_pixel, one_pixel)[0, 0]) == 1.0, "a one-pixel box covers one pixel"
    assert float(inclusive_box_iou(one_pixel, four_pixels)[0, 0]) == pytest.approx(0.25)
    assert float(inclusive_box_iou(one_pixel, torch.tensor([[1, 0, 1, 0]]))[0, 0]) == 0.0, "neighbours, no overlap"
    pairs = inclusive_box_iou(torch.tensor([[0.0, 0, 1, 1], [5, 5, 6, 6]], dtype=torch.float64), four_pixels)
    assert pairs.shape == (2, 1) and pairs.dtype == torch.float64 and pairs[:, 0].tolist() == [1.0, 0.0]
