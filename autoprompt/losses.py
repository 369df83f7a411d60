"""Box-supervision losses (Kervadec et al., MIDL 2020), vectorised in O(B x H x W).

All functions take foreground probabilities ``probs`` (B x H x W, values in [0, 1]) and tight boxes ``boxes``
(B x 4, integer ``x_min, y_min, x_max, y_max``, inclusive pixel indices) in the same frame as ``probs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

EPS = 1e-10


def log_barrier(z: Tensor, t: float) -> Tensor:
    """Extended log-barrier penalty of a constraint ``z <= 0``.

    ``-log(-z) / t`` where ``z <= -1/t^2``, else the tangent line ``t*z - log(1/t^2)/t + 1/t``.
    """
    threshold = -1.0 / t**2
    barrier = -torch.log(-torch.clamp(z, max=threshold)) / t
    linear = t * z - math.log(1.0 / t**2) / t + 1.0 / t
    return torch.where(z < threshold, barrier, linear)


def _inside_masks(boxes: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Row and column membership of each box: B x H and B x W booleans."""
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    in_rows = (rows[None] >= boxes[:, 1:2]) & (rows[None] <= boxes[:, 3:4])
    in_cols = (cols[None] >= boxes[:, 0:1]) & (cols[None] <= boxes[:, 2:3])
    return in_rows, in_cols


def outer_box_bce(probs: Tensor, boxes: Tensor) -> Tensor:
    """Mean of ``-log(1 - p)`` over every pixel outside the boxes of the whole batch."""
    _, height, width = probs.shape
    in_rows, in_cols = _inside_masks(boxes, height, width)
    outside = ~(in_rows[:, :, None] & in_cols[:, None, :])
    total = -(torch.log(1.0 - probs + EPS) * outside).sum()
    return total / outside.sum().clamp(min=1)


def _band_penalties(line_sums: Tensor, lo: Tensor, hi: Tensor, d: int, t: float) -> Tensor:
    """Sum over bands of ``log_barrier(band_width - sum p in band)`` along one axis.

    ``line_sums`` is B x L: the sum of p over the box's extent on the other axis, for each line.
    Lines ``lo..hi`` (inclusive, B each) are cut into consecutive bands of ``d`` lines; the last band takes
    the remainder. Returns B penalties.
    """
    batch, length = line_sums.shape
    lines = torch.arange(length, device=line_sums.device)[None].expand(batch, length)
    inside = (lines >= lo[:, None]) & (lines <= hi[:, None])
    n_bands = (length + d - 1) // d
    band = torch.where(inside, (lines - lo[:, None]) // d, torch.zeros_like(lines))
    weight = inside.to(line_sums.dtype)
    band_sum = line_sums.new_zeros(batch, n_bands).scatter_add_(1, band, line_sums * weight)
    band_width = line_sums.new_zeros(batch, n_bands).scatter_add_(1, band, weight)
    penalty = log_barrier(band_width - band_sum, t)
    return (penalty * (band_width > 0)).sum(dim=1)


def tightness_prior(probs: Tensor, boxes: Tensor, d: int = 5, t: float = 5.0) -> Tensor:
    """Every band of ``d`` rows (and of ``d`` columns) of a box holds at least its width in foreground.

    Summed over the bands of both directions per image, averaged over the batch.
    """
    _, height, width = probs.shape
    in_rows, in_cols = _inside_masks(boxes, height, width)
    row_sums = (probs * in_cols[:, None, :]).sum(dim=2)  # B x H, over the box's columns
    col_sums = (probs * in_rows[:, :, None]).sum(dim=1)  # B x W, over the box's rows
    per_image = _band_penalties(row_sums, boxes[:, 1], boxes[:, 3], d, t)
    per_image = per_image + _band_penalties(col_sums, boxes[:, 0], boxes[:, 2], d, t)
    return per_image.mean()


def box_size_prior(probs: Tensor, boxes: Tensor, bounds: tuple[float, float] = (0.5, 0.9), t: float = 5.0) -> Tensor:
    """The foreground fills between ``bounds[0]`` and ``bounds[1]`` of its box, normalised by box area."""
    lower, upper = bounds
    area = ((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)).to(probs.dtype)
    size = probs.sum(dim=(1, 2))
    penalty = log_barrier(size - upper * area, t) + log_barrier(lower * area - size, t)
    return (penalty / area).mean()


@dataclass(frozen=True)
class BoxLossWeights:
    """Weights and settings of the three box losses (params.yaml ``train.loss``)."""

    outer_bce: float = 1.0
    tightness: float = 1.0e-4
    tightness_d: int = 5
    size: float = 1.0e-2
    size_bounds: tuple[float, float] = (0.5, 0.9)
    t: float = 5.0

    @classmethod
    def from_params(cls, loss: dict) -> BoxLossWeights:
        return cls(
            outer_bce=float(loss["outer_bce"]),
            tightness=float(loss["tightness"]["weight"]),
            tightness_d=int(loss["tightness"]["d"]),
            size=float(loss["size"]["weight"]),
            size_bounds=(float(loss["size"]["bounds"][0]), float(loss["size"]["bounds"][1])),
            t=float(loss["t"]),
        )


def box_loss(probs: Tensor, boxes: Tensor, weights: BoxLossWeights) -> dict[str, Tensor]:
    """The weighted total and its three terms."""
    terms = {
        "outer_bce": outer_box_bce(probs, boxes),
        "tightness": tightness_prior(probs, boxes, weights.tightness_d, weights.t),
        "size": box_size_prior(probs, boxes, weights.size_bounds, weights.t),
    }
    terms["total"] = (
        weights.outer_bce * terms["outer_bce"] + weights.tightness * terms["tightness"] + weights.size * terms["size"]
    )
    return terms
