"""Fitting images into the square prepared frame: MONAI's centre crop/pad, resize, and the recorded geometry."""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import ResizeWithPadOrCrop

from autoprompt.data.preprocess import Geometry, crop_or_pad, fit_to_frame, kept_fraction


@pytest.mark.parametrize("height", [3, 8, 9, 10, 13])
@pytest.mark.parametrize("width", [1, 7, 8, 11, 16])
def test_crop_or_pad_is_monais_centre_crop_pad(height: int, width: int) -> None:
    """The numpy crop/pad gives MONAI's ResizeWithPadOrCrop pixel for pixel, odd and even excess or padding."""
    array = np.random.default_rng(height * 100 + width).integers(1, 255, (height, width)).astype(np.uint8)
    expected = np.asarray(ResizeWithPadOrCrop((8, 8))(array[None]))[0].astype(np.uint8)
    np.testing.assert_array_equal(crop_or_pad(array, 8), expected)


@pytest.mark.parametrize(
    ("shape", "size", "offsets"),
    [((540, 800), 640, (50, -80)), ((843, 601), 512, (-165, -44)), ((7, 5), 12, (2, 3))],
)
def test_crop_geometry_locates_every_pixel(shape: tuple[int, int], size: int, offsets: tuple[int, int]) -> None:
    """With crop, original pixel (r, c) is prepared pixel (r + offset_row, c + offset_col), scale 1."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, shape).astype(np.uint8)
    label = rng.integers(0, 4, shape).astype(np.uint8)
    out_image, out_label, geometry = fit_to_frame(image, label, size, "crop")
    assert geometry == Geometry(1.0, *offsets)
    assert out_image.shape == out_label.shape == (size, size)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    at_row, at_col = (np.asarray(a).astype(int) for a in geometry.to_prepared(rows, cols))
    inside = (at_row >= 0) & (at_row < size) & (at_col >= 0) & (at_col < size)
    assert inside.any()
    np.testing.assert_array_equal(out_image[at_row[inside], at_col[inside]], image[inside])
    np.testing.assert_array_equal(out_label[at_row[inside], at_col[inside]], label[inside])
    assert out_image.sum() == image[inside].sum(), "what is not mapped from the original is zero padding"


def test_resize_keeps_the_aspect_and_maps_points_by_the_geometry() -> None:
    """840 x 600 -> 512: scale 512/840 on both axes, 366 columns centred (offset 73), nothing cut; a small square
    drawn at a known place lands where the geometry says, and labels keep their values (nearest neighbour)."""
    shape, size = (840, 600), 512
    image = np.full(shape, 40, np.uint8)
    label = np.zeros(shape, np.uint8)
    label[700:760, 450:530], image[700:760, 450:530] = 3, 220  # near the bottom right
    label[10:50, 20:60] = 1
    out_image, out_label, geometry = fit_to_frame(image, label, size, "resize")
    assert geometry.scale == pytest.approx(512 / 840)
    assert (geometry.offset_row, geometry.offset_col) == (0, 73)
    assert set(np.unique(out_label)) == {0, 1, 3}
    assert not out_image[:, :73].any() and not out_image[:, 73 + 366 :].any() and out_image[:, 73].all()
    for value, (r0, r1, c0, c1) in ((3, (700, 760, 450, 530)), (1, (10, 50, 20, 60))):
        rows, cols = np.nonzero(out_label == value)
        (top, bottom), (left, right) = geometry.to_prepared(np.array([r0, r1]), np.array([c0, c1]))
        assert rows.min() == pytest.approx(top, abs=1) and rows.max() + 1 == pytest.approx(bottom, abs=1)
        assert cols.min() == pytest.approx(left, abs=1) and cols.max() + 1 == pytest.approx(right, abs=1)
        area_raw = int((label == value).sum())
        assert kept_fraction(len(rows), area_raw, geometry.scale) == pytest.approx(1.0, abs=0.03)
    assert (out_image[out_label == 3] > 200).mean() > 0.9  # the image follows the label (edges are averaged)
    back = geometry.to_original(*geometry.to_prepared(np.array([0.0, 839.5, 840.0]), np.array([0.0, 3.25, 600.0])))
    np.testing.assert_allclose(back, [[0.0, 839.5, 840.0], [0.0, 3.25, 600.0]])


def test_resize_enlarges_small_images() -> None:
    """A 100 x 64 image in a 256 frame: scale 2.56, 164 columns, offsets (0, 46), bilinear values in range."""
    image = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (100, 1))
    label = (image > 128).astype(np.uint8)
    out_image, out_label, geometry = fit_to_frame(image, label, 256, "resize")
    assert geometry == Geometry(2.56, 0, 46)
    assert out_image[:, 46:210].min() == 0 and out_image[:, 46:210].max() == 255
    assert np.all(np.diff(out_image[128, 46:210].astype(int)) >= 0), "a ramp stays a ramp"
    assert kept_fraction(int(out_label.sum()), int(label.sum()), geometry.scale) == pytest.approx(1.0, abs=0.02)


def test_kept_fraction() -> None:
    assert kept_fraction(0, 0, 1.0) == 1.0  # an absent class loses nothing
    assert kept_fraction(90, 100, 1.0) == 0.9
    assert kept_fraction(25, 100, 0.5) == 1.0
    with pytest.raises(AssertionError, match="fit"):
        fit_to_frame(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), 4, "stretch")
