"""Boundary metrics in millimetres (HD95, normalised surface Dice) and 3D Dice per subject.

The distances come from MONAI's metric functions, run on one foreground channel (``include_background=True``
on a B x 1 x H x W one-hot layout) with each image's own pixel spacing. Images where a mask is empty never reach
MONAI: their values follow the conventions documented on each function. MONAI is imported where it is called:
its import costs seconds, which every stage that only names these functions (report) would otherwise pay.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor


def _check_inputs(pred: Tensor, target: Tensor, spacing: Tensor) -> tuple[Tensor, Tensor]:
    """Validate B x H x W masks and B x 2 spacings (or B x D x H x W volumes and B x 3); return the masks as
    booleans."""
    assert pred.shape == target.shape, f"prediction {tuple(pred.shape)} != target {tuple(target.shape)}"
    assert pred.ndim in (3, 4), f"masks must be B x H x W or B x D x H x W, got {tuple(pred.shape)}"
    dims = pred.ndim - 1
    assert spacing.shape == (pred.shape[0], dims), f"spacing {tuple(spacing.shape)} is not B x {dims}, B = {len(pred)}"
    assert bool((spacing > 0).all()), "pixel spacings must be positive"
    return pred.bool(), target.bool()


def _both_present(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image presence of B x H x W masks: (pred non-empty, target non-empty, both non-empty), B each."""
    pred_any, target_any = pred.flatten(1).any(dim=1), target.flatten(1).any(dim=1)
    return pred_any, target_any, pred_any & target_any


def _one_hot(mask: Tensor) -> Tensor:
    """B x H x W (or B x D x H x W) boolean mask -> B x 1 x H x W float, the single foreground channel MONAI
    expects."""
    return mask[:, None].float()


def _spacing_list(spacing: Tensor) -> list[list[float]]:
    """B x 2 (row mm, column mm), or B x 3 (slice, row, column) -> one list per batch item, MONAI's layout."""
    return spacing.detach().double().cpu().tolist()


@contextmanager
def _quiet_monai() -> Iterator[None]:
    """Silence the deprecation warning MONAI 1.5-1.6 raises from inside its own metric functions."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        yield


def hd95(pred: Tensor, target: Tensor, spacing: Tensor) -> Tensor:
    """95th-percentile symmetric Hausdorff distance in mm, per image.

    Args:
        pred: B x H x W masks (any dtype; non-zero is foreground), or B x D x H x W volumes.
        target: reference masks of the same shape.
        spacing: B x 2 pixel spacing of each image in mm, (row, column), i.e. along H then W (B x 3 for volumes).

    Returns:
        B float64 values in mm, on ``pred``'s device.

    Conventions:
        both masks empty -> 0.0 (nothing to miss); exactly one empty -> NaN (undefined: the caller reports
        how many images are undefined, see :func:`summarize_finite`).
    """
    pred, target = _check_inputs(pred, target, spacing)
    pred_any, target_any, both = _both_present(pred, target)
    out = torch.zeros(pred.shape[0], dtype=torch.float64, device=pred.device)
    out[pred_any ^ target_any] = math.nan
    if bool(both.any()):
        from monai.metrics import compute_hausdorff_distance

        with _quiet_monai():
            distances = compute_hausdorff_distance(
                _one_hot(pred[both]),
                _one_hot(target[both]),
                include_background=True,
                percentile=95,
                spacing=_spacing_list(spacing[both.to(spacing.device)]),
            )
        out[both] = distances[:, 0].to(device=pred.device, dtype=torch.float64)
    return out


def nsd(pred: Tensor, target: Tensor, spacing: Tensor, tolerance_mm: float) -> Tensor:
    """Normalised surface Dice at a tolerance in mm, per image.

    The fraction of both boundaries (edge pixels) lying within ``tolerance_mm`` of the other boundary.

    Args:
        pred: B x H x W masks (any dtype; non-zero is foreground), or B x D x H x W volumes.
        target: reference masks of the same shape.
        spacing: B x 2 pixel spacing of each image in mm, (row, column), i.e. along H then W (B x 3 for volumes).
        tolerance_mm: accepted boundary deviation in mm (a distance equal to it counts as correct).

    Returns:
        B float64 values in [0, 1], on ``pred``'s device.

    Conventions:
        both masks empty -> 1.0; exactly one empty -> 0.0.
    """
    pred, target = _check_inputs(pred, target, spacing)
    assert math.isfinite(tolerance_mm) and tolerance_mm >= 0, f"tolerance must be finite and >= 0, got {tolerance_mm}"
    pred_any, target_any, both = _both_present(pred, target)
    out = torch.where(pred_any | target_any, 0.0, 1.0).to(dtype=torch.float64, device=pred.device)
    if bool(both.any()):
        from monai.metrics import compute_surface_dice

        with _quiet_monai():
            scores = compute_surface_dice(
                _one_hot(pred[both]),
                _one_hot(target[both]),
                class_thresholds=[float(tolerance_mm)],
                include_background=True,
                spacing=_spacing_list(spacing[both.to(spacing.device)]),
            )
        out[both] = scores[:, 0].to(device=pred.device, dtype=torch.float64)
    return out


def dice_per_subject(pred: Tensor, target: Tensor, subjects: Sequence[str]) -> dict[str, float]:
    """3D Dice per subject, its slices stacked into one volume.

    Args:
        pred: B x H x W masks (any dtype; non-zero is foreground).
        target: B x H x W reference masks.
        subjects: B subject ids; rows with the same id are the slices of one volume.

    Returns:
        subject id -> Dice in [0, 1], in order of first appearance: 2 * overlap / (|pred| + |target|), each summed
        over the subject's slices. An empty prediction against an empty target scores 1.0 (as ``metrics.dice``).
    """
    assert pred.shape == target.shape, f"prediction {tuple(pred.shape)} != target {tuple(target.shape)}"
    assert len(subjects) == pred.shape[0], f"{len(subjects)} subject ids for a batch of {pred.shape[0]}"
    pred, target = pred.bool().flatten(1), target.bool().flatten(1)
    overlap = (pred & target).sum(dim=1).double().cpu()
    total = (pred.sum(dim=1) + target.sum(dim=1)).double().cpu()
    scores: dict[str, float] = {}
    for subject in dict.fromkeys(subjects):
        rows = torch.tensor([s == subject for s in subjects])
        subject_total = float(total[rows].sum())
        scores[subject] = 2 * float(overlap[rows].sum()) / subject_total if subject_total > 0 else 1.0
    return scores


def summarize_finite(values: Sequence[float] | np.ndarray | Tensor) -> dict[str, float]:
    """Mean and population std of the finite values (distances in mm, not rescaled), rounded to 4 decimals.

    Returns ``{"mean", "std", "n", "undefined"}``: ``n`` counts the finite values, ``undefined`` the NaN ones
    (e.g. :func:`hd95` where exactly one mask is empty). With no finite value, mean and std are NaN.
    """
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64).ravel()
    assert not np.isinf(array).any(), "infinite values are neither a distance nor undefined (NaN)"
    finite = array[np.isfinite(array)]
    mean = round(float(finite.mean()), 4) if finite.size else math.nan
    std = round(float(finite.std()), 4) if finite.size else math.nan
    return {"mean": mean, "std": std, "n": int(finite.size), "undefined": int(np.isnan(array).sum())}
