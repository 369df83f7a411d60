"""Preprocessing shared by every dataset: intensity clipping, fitting to the square frame, tight boxes.

Fitting an H x W image into the S x S prepared frame (``fit``):

- ``crop``: centre crop and/or zero-pad, no resampling (the paper's and the authors' choice). A side longer than S
  loses its ends.
- ``resize``: scale so that the longest side is S, keeping the aspect ratio (images: area averaging when shrinking,
  bilinear when enlarging; labels: nearest neighbour), then centre-pad to S x S. Nothing is cut.

Both are a uniform scale and a shift, recorded in ``Geometry``. Coordinates are continuous, pixel ``i`` spanning
``[i, i + 1)``: a point ``u`` of the original image lies at ``scale * u + offset`` in the prepared frame.
``from_frame`` maps S x S probabilities back onto the original H x W grid (the inverse, used by ``predict``).

``Preprocessing`` records the steps of a dataset (clip percentiles, in-plane spacing of volumes, frame size and fit):
``prepare`` stores it with the prepared data, training copies it into every model, and ``predict`` replays it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy import ndimage

from autoprompt.errors import InputError

FITS = ("crop", "resize")
CLIP = (0.5, 99.5)  # the percentiles every reader clips to (the authors' choice)


@dataclass(frozen=True)
class Preprocessing:
    """How a dataset's images reach the ``crop`` x ``crop`` prepared frame, in order: intensities clipped to the
    ``clip`` percentiles of the whole image or volume and rescaled to [0, 255]; volumes (``spacing`` set) resampled
    in-plane to ``spacing`` mm, linear; each slice fitted to the frame by ``fit`` (``crop`` or ``resize``)."""

    crop: int
    fit: str = "crop"
    spacing: float | None = None
    clip: tuple[float, float] = CLIP

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise InputError(f"fit is {self.fit!r}; use one of {', '.join(FITS)}")

    def as_dict(self) -> dict:
        """JSON- and weights-only-safe: plain numbers, strings and lists."""
        return {**asdict(self), "clip": list(self.clip)}

    @classmethod
    def from_dict(cls, record: dict) -> Preprocessing:
        spacing = record.get("spacing")
        return cls(
            int(record["crop"]),
            str(record.get("fit", "crop")),
            None if spacing is None else float(spacing),
            tuple(float(v) for v in record.get("clip", CLIP)),
        )


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


def clip_rescale(array: np.ndarray, lower: float = CLIP[0], upper: float = CLIP[1]) -> np.ndarray:
    """Clip to the ``lower``/``upper`` percentiles of the whole array (an image or a volume), rescale to
    [0, 255] and round to uint8. A constant array gives zeros."""
    if array.size == 0 or array.min() == array.max():
        return np.zeros(array.shape, np.uint8)
    from monai.transforms import ScaleIntensityRangePercentiles  # here: importing MONAI takes ~1.5 s, and the
    # stages that import this module only for the dataset readers' names (encode, train) never call it

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


def fit_image(image: np.ndarray, size: int, fit: str) -> tuple[np.ndarray, Geometry]:
    """An H x W image -> the size x size frame, and the geometry that maps one to the other.

    ``fit`` is ``crop`` (centre crop/pad) or ``resize`` (longest side to ``size``, aspect kept, centre-padded).
    """
    assert fit in FITS, f"fit must be one of {FITS}, got {fit!r}"
    assert image.ndim == 2, f"expected an H x W image, got {image.shape}"
    scale = 1.0
    if fit == "resize":
        scale = size / max(image.shape)
        image = resize_image(image, scale)
    geometry = Geometry(scale, centre_offset(image.shape[0], size), centre_offset(image.shape[1], size))
    return place(image, size, geometry.offset_row, geometry.offset_col), geometry


def fit_label(label: np.ndarray, size: int, geometry: Geometry) -> np.ndarray:
    """An H x W label map -> the size x size frame of ``geometry``, by nearest neighbour: classes are never blended."""
    if geometry.scale != 1.0:
        shape = (round(label.shape[0] * geometry.scale), round(label.shape[1] * geometry.scale))
        label = resize_label(label, shape, geometry.scale)
    return place(label, size, geometry.offset_row, geometry.offset_col)


def fit_to_frame(image: np.ndarray, label: np.ndarray, size: int, fit: str) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """H x W ``image`` and ``label`` -> size x size image and label, and the geometry that maps one to the other."""
    assert image.shape == label.shape and image.ndim == 2, f"image {image.shape} and label {label.shape}"
    framed, geometry = fit_image(image, size, fit)
    return framed, fit_label(label, size, geometry), geometry


def from_frame(values: np.ndarray, geometry: Geometry, shape: tuple[int, int]) -> np.ndarray:
    """S x S values of the prepared frame (probabilities, say) -> the original H x W grid: each original pixel centre
    is looked up where ``geometry`` puts it, bilinearly; pixels that the frame cut get 0. Exact for ``crop``."""
    assert values.ndim == 2, f"expected S x S values, got {values.shape}"
    if geometry.scale == 1.0:  # a crop or pad: each original pixel centre lands on a frame pixel's, value for value
        return _unplace(values.astype(np.float32, copy=False), geometry.offset_row, geometry.offset_col, shape)
    # ndimage indexes pixel centres: original centre i + 0.5 lands at scale * (i + 0.5) + offset, index - 0.5.
    shift = 0.5 * geometry.scale - 0.5
    return ndimage.affine_transform(
        values.astype(np.float32),
        np.array([geometry.scale, geometry.scale]),
        offset=(geometry.offset_row + shift, geometry.offset_col + shift),
        output_shape=shape,
        order=1,
        mode="constant",
        cval=0.0,
    )


def _unplace(values: np.ndarray, offset_row: int, offset_col: int, shape: tuple[int, int]) -> np.ndarray:
    """``place``'s inverse: ``out[i, j] = values[i + offset_row, j + offset_col]`` where that is inside ``values``,
    else 0; ``out`` has ``shape``."""
    out = np.zeros(shape, values.dtype)
    top, bottom = max(-offset_row, 0), min(values.shape[0] - offset_row, shape[0])
    left, right = max(-offset_col, 0), min(values.shape[1] - offset_col, shape[1])
    if top < bottom and left < right:
        out[top:bottom, left:right] = values[
            top + offset_row : bottom + offset_row, left + offset_col : right + offset_col
        ]
    return out


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
