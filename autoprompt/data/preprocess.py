"""Preprocessing shared by every dataset: intensity clipping, fitting to the square frame, tight boxes.

Fitting an H x W image into the S x S prepared frame (``fit``):

- ``crop``: centre crop and/or zero-pad, no resampling (the paper's and the authors' choice). A side longer than S
  loses its ends.
- ``resize``: scale so that the longest side is S, keeping the aspect ratio (images: area averaging when shrinking,
  bilinear when enlarging; labels: nearest neighbour), then centre-pad to S x S. Nothing is cut.

Both are a uniform scale and a shift, recorded in ``Geometry``. Coordinates are continuous, pixel ``i`` spanning
``[i, i + 1)``: a point ``u`` of the original image lies at ``scale * u + offset`` in the prepared frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from monai.transforms import ScaleIntensityRangePercentiles

FITS = ("crop", "resize")


@dataclass(frozen=True)
class Geometry:
    """Where the original image sits in the prepared frame: ``prepared = scale * original + offset`` per axis.

    ``scale`` is prepared pixels per original pixel (1.0 for ``crop``); ``offset_row`` / ``offset_col`` are the
    prepared-frame position of the original pixel (0, 0)'s corner, negative where the original was cropped.
    """

    scale: float
    offset_row: int
    offset_col: int

    def to_prepared(self, row: np.ndarray | float, col: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Original-image coordinates (continuous, any shape) -> prepared-frame coordinates."""
        return self.scale * np.asarray(row) + self.offset_row, self.scale * np.asarray(col) + self.offset_col

    def to_original(self, row: np.ndarray | float, col: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Prepared-frame coordinates (continuous, any shape) -> original-image coordinates."""
        return (np.asarray(row) - self.offset_row) / self.scale, (np.asarray(col) - self.offset_col) / self.scale


def clip_rescale(array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Clip to the ``lower``/``upper`` percentiles of the whole array (an image or a volume), rescale to
    [0, 255] and round to uint8. A constant array gives zeros."""
    scale = ScaleIntensityRangePercentiles(lower, upper, b_min=0.0, b_max=255.0, clip=True)
    scaled = np.asarray(scale(array[None].astype(np.float32)))[0]
    return np.rint(np.nan_to_num(scaled)).astype(np.uint8)


def centre_offset(length: int, size: int) -> int:
    """Where index 0 of a side of ``length`` pixels lands when centred in ``size``: half the padding, rounded down,
    or minus half the excess, rounded down (as MONAI's ``ResizeWithPadOrCrop``)."""
    difference = size - length
    return difference // 2 if difference >= 0 else -((-difference) // 2)


def place(array: np.ndarray, size: int, offset_row: int, offset_col: int) -> np.ndarray:
    """The H x W ``array`` shifted by the offsets into a size x size zero frame: ``out[i + offset_row, j +
    offset_col] = array[i, j]`` where both are inside; what falls outside is cut."""
    out = np.zeros((size, size), array.dtype)
    top, bottom = max(offset_row, 0), min(offset_row + array.shape[0], size)
    left, right = max(offset_col, 0), min(offset_col + array.shape[1], size)
    if top < bottom and left < right:
        source = array[top - offset_row : bottom - offset_row, left - offset_col : right - offset_col]
        out[top:bottom, left:right] = source
    return out


def crop_or_pad(array: np.ndarray, size: int) -> np.ndarray:
    """Centre crop and/or zero-pad an H x W array to size x size."""
    return place(array, size, centre_offset(array.shape[0], size), centre_offset(array.shape[1], size))


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """An H x W image scaled by ``scale`` on both axes (area averaging when shrinking, bilinear when enlarging); the
    output is round(H * scale) x round(W * scale), and pixel centres map exactly by ``scale``."""
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (0, 0), fx=scale, fy=scale, interpolation=interpolation)


def resize_label(label: np.ndarray, shape: tuple[int, int], scale: float) -> np.ndarray:
    """An H x W label map resampled by nearest neighbour onto ``shape``: output pixel ``i`` takes the original pixel
    under its centre, ``floor((i + 0.5) / scale)``; labels are never blended."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) / scale).astype(np.int64), label.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) / scale).astype(np.int64), label.shape[1] - 1)
    return label[np.ix_(rows, cols)]


def fit_to_frame(image: np.ndarray, label: np.ndarray, size: int, fit: str) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """H x W ``image`` and ``label`` -> size x size image and label, and the geometry that maps one to the other.

    ``fit`` is ``crop`` (centre crop/pad) or ``resize`` (longest side to ``size``, aspect kept, centre-padded).
    """
    assert fit in FITS, f"fit must be one of {FITS}, got {fit!r}"
    assert image.shape == label.shape and image.ndim == 2, f"image {image.shape} and label {label.shape}"
    scale = 1.0
    if fit == "resize":
        scale = size / max(image.shape)
        image = resize_image(image, scale)
        label = resize_label(label, image.shape, scale)
    geometry = Geometry(scale, centre_offset(image.shape[0], size), centre_offset(image.shape[1], size))
    return (
        place(image, size, geometry.offset_row, geometry.offset_col),
        place(label, size, geometry.offset_row, geometry.offset_col),
        geometry,
    )


def kept_fraction(area_prepared: int, area_raw: int, scale: float) -> float:
    """The share of a class's area that the prepared frame keeps: its prepared area over its original area in
    prepared pixels (``area_raw * scale**2``); 1.0 when the class is absent. Nearest-neighbour rounding can put a
    resized class slightly above 1."""
    return 1.0 if area_raw == 0 else area_prepared / (area_raw * scale**2)


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x_min, y_min, x_max, y_max), inclusive pixel indices, of a binary mask; None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])
