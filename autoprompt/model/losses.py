"""The training losses, vectorised in O(B x H x W).

Box supervision (Kervadec et al., MIDL 2020): the outer-box BCE, the tightness prior and the box-size prior, as the
workshop paper weights them; the follow-up adds a pseudo-label loss against the backbone's own box-prompted mask.
Every function takes foreground ``logits`` or probabilities ``probs`` (B x H x W) and tight ``boxes`` (B x 4, integer
``x_min, y_min, x_max, y_max``, inclusive pixel indices) in the same frame, and optional ``weights`` (B): how much
each image counts (a second round's pseudo-boxes count less than the boxes a user drew). A term averages
``weight x penalty`` over the batch, so an image of weight 0.5 counts half whatever the batch holds; without weights
every image counts 1, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from autoprompt.settings import Loss


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


def _per_image(values: Tensor, weights: Tensor | None) -> Tensor:
    """B values -> their mean, each weighted where ``weights`` are given (``weight x value``, averaged over B)."""
    return values.mean() if weights is None else (values * weights.to(values.dtype)).mean()


def outer_box_bce(logits: Tensor, boxes: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean of ``-log(1 - p)`` over every pixel outside the boxes of the whole batch, from logits (each image's
    pixels weighted by its ``weights``).

    ``-log(1 - sigmoid(x))`` is ``softplus(x)``: the same values as the probability form, and a pixel saturated at
    p = 1 still has a gradient (the probability form's gradient vanishes there).
    """
    _, height, width = logits.shape
    in_rows, in_cols = _inside_masks(boxes, height, width)
    outside = ~(in_rows[:, :, None] & in_cols[:, None, :])
    penalty = F.softplus(logits) * outside
    if weights is not None:
        penalty = penalty * weights.to(penalty.dtype)[:, None, None]
    return penalty.sum() / outside.sum().clamp(min=1)


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


def tightness_prior(probs: Tensor, boxes: Tensor, d: int = 5, t: float = 5.0, weights: Tensor | None = None) -> Tensor:
    """Every band of ``d`` rows (and of ``d`` columns) of a box holds at least its width in foreground.

    Summed over the bands of both directions per image, averaged over the batch.
    """
    _, height, width = probs.shape
    in_rows, in_cols = _inside_masks(boxes, height, width)
    row_sums = (probs * in_cols[:, None, :]).sum(dim=2)  # B x H, over the box's columns
    col_sums = (probs * in_rows[:, :, None]).sum(dim=1)  # B x W, over the box's rows
    per_image = _band_penalties(row_sums, boxes[:, 1], boxes[:, 3], d, t)
    per_image = per_image + _band_penalties(col_sums, boxes[:, 0], boxes[:, 2], d, t)
    return _per_image(per_image, weights)


def box_size_prior(
    probs: Tensor,
    boxes: Tensor,
    bounds: tuple[float, float] = (0.5, 0.9),
    t: float = 5.0,
    weights: Tensor | None = None,
) -> Tensor:
    """The foreground fills between ``bounds[0]`` and ``bounds[1]`` of its box, normalised by box area."""
    lower, upper = bounds
    area = ((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)).to(probs.dtype)
    size = probs.sum(dim=(1, 2))
    penalty = log_barrier(size - upper * area, t) + log_barrier(lower * area - size, t)
    return _per_image(penalty / area, weights)


def pseudo_label_loss(logits: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """``0.5 * BCE + 0.5 * soft Dice`` against a binary ``target`` (B x H x W): the backbone's box-prompted mask.

    BCE is the mean over every pixel of the batch; soft Dice is ``1 - 2 sum(p t) / (sum p + sum t)`` per image,
    averaged over the batch (both weighted per image by ``weights`` where given).
    """
    target = target.to(logits.dtype)
    if weights is None:
        bce = F.binary_cross_entropy_with_logits(logits, target)
    else:
        bce = _per_image(F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(1, 2)), weights)
    probs = torch.sigmoid(logits)
    overlap = (probs * target).sum(dim=(1, 2))
    total = probs.sum(dim=(1, 2)) + target.sum(dim=(1, 2))
    soft_dice = 1.0 - (2.0 * overlap + 1.0) / (total + 1.0)
    return 0.5 * bce + 0.5 * _per_image(soft_dice, weights)


@dataclass(frozen=True)
class LossWeights:
    """Weights and settings of the training losses (from a recipe's ``loss`` section).

    ``t`` is the log-barrier's sharpness at the start, multiplied by ``t_factor`` every ``t_every`` epochs (the
    follow-up: 5, x1.1 every 5 epochs; the workshop paper keeps it fixed: factor 1). A zero weight skips its term.
    """

    outer_bce: float = 1.0
    tightness: float = 1.0e-4
    tightness_d: int = 5
    size: float = 1.0e-2
    size_bounds: tuple[float, float] = (0.5, 0.9)
    pseudo_label: float = 0.0
    consistency: float = 0.0
    t: float = 5.0
    t_factor: float = 1.0
    t_every: int = 1

    @classmethod
    def from_settings(cls, loss: Loss) -> LossWeights:
        return cls(
            outer_bce=loss.outer_bce,
            tightness=loss.tightness.weight,
            tightness_d=loss.tightness.d,
            size=loss.size.weight,
            size_bounds=loss.size.bounds,
            pseudo_label=loss.pseudo_label,
            consistency=loss.consistency,
            t=loss.barrier.t,
            t_factor=loss.barrier.factor,
            t_every=loss.barrier.every,
        )

    def barrier_t(self, epoch: int) -> float:
        """The log-barrier's ``t`` during ``epoch`` (0-based)."""
        return self.t * self.t_factor ** (epoch // max(self.t_every, 1))


def box_loss(
    logits: Tensor,
    boxes: Tensor,
    weights: LossWeights,
    t: float | None = None,
    pseudo: Tensor | None = None,
    image_weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """The weighted total and its terms (terms of weight 0 are left out); ``t`` overrides ``weights.t``.

    ``pseudo`` (B x H x W, binary) is the pseudo-label target, needed when ``weights.pseudo_label`` is set;
    ``image_weights`` (B): how much each image counts in every term (None: 1 each).
    """
    t = weights.t if t is None else t
    w = image_weights
    probs = torch.sigmoid(logits)
    terms: dict[str, Tensor] = {}
    total = logits.new_zeros(())
    parts = {
        "outer_bce": (weights.outer_bce, lambda: outer_box_bce(logits, boxes, w)),
        "tightness": (weights.tightness, lambda: tightness_prior(probs, boxes, weights.tightness_d, t, w)),
        "size": (weights.size, lambda: box_size_prior(probs, boxes, weights.size_bounds, t, w)),
        "pseudo_label": (weights.pseudo_label, lambda: pseudo_label_loss(logits, pseudo, w)),
    }
    for name, (weight, term) in parts.items():
        if weight:
            assert name != "pseudo_label" or pseudo is not None, "the pseudo-label loss needs its target masks"
            terms[name] = term()
            total = total + weight * terms[name]
    terms["total"] = total
    return terms
