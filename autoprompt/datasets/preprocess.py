"""Preprocessing shared by every dataset: intensity clipping, centre crop/pad, tight boxes."""

from __future__ import annotations

import numpy as np
from monai.transforms import ResizeWithPadOrCrop, ScaleIntensityRangePercentiles


def clip_rescale(array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Clip to the ``lower``/``upper`` percentiles of the whole array (an image or a volume), rescale to
    [0, 255] and round to uint8. A constant array gives zeros."""
    scale = ScaleIntensityRangePercentiles(lower, upper, b_min=0.0, b_max=255.0, clip=True)
    scaled = np.asarray(scale(array[None].astype(np.float32)))[0]
    return np.rint(np.nan_to_num(scaled)).astype(np.uint8)


def crop_or_pad(array: np.ndarray, size: int) -> np.ndarray:
    """Centre crop and/or zero-pad an H x W array to size x size."""
    return np.asarray(ResizeWithPadOrCrop((size, size))(array[None]))[0].astype(array.dtype)


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x_min, y_min, x_max, y_max), inclusive pixel indices, of a binary mask; None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])
