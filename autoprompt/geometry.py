"""Affine moves of square grids and of the boxes on them: one 2 x 3 matrix per image in normalised coordinates
(``F.affine_grid``, ``align_corners=False``).

The views of ``autoprompt.data.views`` move images before they are encoded; the transforms of
``autoprompt.training.augment`` move cached embeddings, pseudo-labels and probabilities. Both move boxes with
``warp_boxes``, exactly for flips, quarter turns, zooms and shifts. Boxes are (x_min, y_min, x_max, y_max) in
inclusive pixel indices throughout: ``largest_component_box`` finds a mask's, ``inclusive_box_iou`` compares them.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

EDGES = torch.tensor([0.0, 0.0, 1.0, 1.0])  # inclusive pixel indices -> pixel edges


def warp(x: Tensor, matrices: Tensor, mode: str = "bilinear") -> Tensor:
    """``x`` (B x C x H x W) under the B x 2 x 3 ``matrices``; zero outside the image. Flips and quarter turns of a
    square grid move pixel centres onto pixel centres, so they are exact."""
    assert x.ndim == 4 and matrices.shape == (len(x), 2, 3), f"x {tuple(x.shape)}, matrices {tuple(matrices.shape)}"
    grid = F.affine_grid(matrices.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def warp_boxes(boxes: Tensor, matrices: Tensor, size: int) -> Tensor:
    """B x 4 boxes (x_min, y_min, x_max, y_max, inclusive pixels of a size x size frame) -> the boxes of what
    ``warp`` makes of them: the bounding box of the moved corners (exact for flips and quarter turns)."""
    x0, y0, x1, y1 = boxes.double().unbind(1)
    corners = torch.stack([torch.stack([x, y], -1) for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))], 1)
    normalised = (2 * corners + 1) / size - 1  # B x 4 x 2, align_corners=False
    linear, shift = matrices[:, :, :2].double(), matrices[:, :, 2].double()
    # warp samples the input at M @ output; a corner moves to M^-1 (corner - shift)
    moved = torch.linalg.solve(linear[:, None], (normalised - shift[:, None])[..., None])[..., 0]
    pixels = ((moved + 1) * size - 1) / 2
    low, high = pixels.amin(dim=1), pixels.amax(dim=1)
    out = torch.cat([low, high], dim=1).round().clamp(0, size - 1)
    return out.to(boxes.dtype)


def largest_component_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x_min, y_min, x_max, y_max), inclusive pixel indices, of the largest 8-connected component of a 2D mask
    (nonzero is foreground); None when it is empty."""
    count, _, stats, _ = cv2.connectedComponentsWithStats((np.asarray(mask) != 0).astype(np.uint8), connectivity=8)
    if count < 2:  # label 0 is the background
        return None
    x, y, w, h = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), :4]
    return int(x), int(y), int(x + w - 1), int(y + h - 1)


def inclusive_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """N x 4 and M x 4 boxes in inclusive pixel indices -> N x M IoU of the pixels they cover (torchvision's
    ``box_iou`` on their pixel edges, in the boxes' floating type: float32 for integer boxes)."""
    return box_iou(a + EDGES, b + EDGES)
