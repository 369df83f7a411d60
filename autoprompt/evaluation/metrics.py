"""Segmentation metrics at label resolution, and what counts as a miss."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

MISS = 50.0  # Dice (%) under which an image counts as missed: a mask a user would redraw by hand


def dice(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image Dice of binary masks, B x H x W each -> B values in [0, 1].

    An empty prediction against an empty mask scores 1.
    """
    assert pred.shape == target.shape, f"prediction {tuple(pred.shape)} != target {tuple(target.shape)}"
    pred, target = pred.bool().flatten(1), target.bool().flatten(1)
    overlap = (pred & target).sum(dim=1).double()
    total = pred.sum(dim=1).double() + target.sum(dim=1).double()
    return torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total))


def mask_dice(mask: Tensor | np.ndarray, reference: Tensor | np.ndarray) -> float:
    """``dice`` of two masks taken whole (a volume's slices together; nonzero is foreground), in [0, 1]."""
    mask, reference = torch.as_tensor(np.asarray(mask) != 0), torch.as_tensor(np.asarray(reference) != 0)
    return float(dice(mask[None], reference[None])[0])


def summarize(values: list[float] | np.ndarray) -> dict[str, float]:
    """Mean and (population) standard deviation, in Dice percent, as Table 1 reports them."""
    array = 100.0 * np.asarray(values, dtype=np.float64)
    return {"mean": round(float(array.mean()), 4), "std": round(float(array.std()), 4), "n": int(array.size)}


def empty_misses(pred: Tensor, target: Tensor) -> Tensor:
    """B x H x W binary masks -> B booleans: the prediction is empty where the target is not."""
    return ~pred.bool().flatten(1).any(dim=1) & target.bool().flatten(1).any(dim=1)
