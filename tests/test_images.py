"""Inputs as stacks of slices, and the way back: the inverse of the fit and of the in-plane resampling."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from autoprompt.data.images import as_stack, frame_slices, read_image, to_input_grid
from autoprompt.data.preprocess import Preprocessing, clip_rescale, fit_image, fit_label, from_frame
from autoprompt.errors import InputError


def ellipse(shape: tuple[int, ...], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) + 0.5 for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 100 * 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("fit", ["crop", "resize"])
@pytest.mark.parametrize("shape", [(301, 177), (97, 410), (64, 64)])
def test_from_frame_inverts_the_fit(fit, shape):
    """A label fitted into the frame and mapped back lands where it was: exactly for crop where the frame keeps
    it, within a boundary pixel for resize."""
    label = ellipse(shape, (shape[0] * 0.45, shape[1] * 0.55), (shape[0] * 0.3, shape[1] * 0.25))
    _, geometry = fit_image(label.astype(np.uint8), 128, fit)
    framed = fit_label(label.astype(np.uint8), 128, geometry)
    back = from_frame(framed.astype(np.float32), geometry, shape) > 0.5
    assert back.shape == shape
    if fit == "crop":
        kept = from_frame(np.ones((128, 128), np.float32), geometry, shape) > 0.5
        np.testing.assert_array_equal(back, label & kept)
        assert kept.sum() == min(shape[0], 128) * min(shape[1], 128)
    else:
        assert dice(back, label) > 96, f"resize round trip Dice {dice(back, label):.2f}"


@pytest.mark.parametrize("shape", [(301, 177), (97, 410), (64, 64), (128, 129)])
def test_from_frame_of_a_crop_is_the_bilinear_lookup_value_for_value(shape):
    """A crop or pad maps each original pixel centre onto a frame pixel's: the direct copy gives the same floats
    as the bilinear lookup that any other scale takes."""
    from scipy import ndimage

    _, geometry = fit_image(np.zeros(shape, np.uint8), 128, "crop")
    values = np.random.default_rng(1).random((128, 128)).astype(np.float32)
    looked_up = ndimage.affine_transform(
        values, np.ones(2), offset=(geometry.offset_row, geometry.offset_col), output_shape=shape, order=1,
        mode="constant", cval=0.0,
    )  # fmt: skip
    np.testing.assert_array_equal(from_frame(values, geometry, shape), looked_up)


@pytest.mark.parametrize("size", [(1, 40, 30), (40, 1, 30), (40, 30, 1), (40, 30, 6)])
def test_stacks_put_the_singleton_axis_last_and_come_back(size):
    """A 2D image stored in 3D (singleton axis anywhere) is one slice; every layout returns to itself."""
    array = np.random.default_rng(0).random(size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 1.1, 2.5))
    stack = as_stack(image)
    assert stack.slices == (1 if 1 in size else size[2])
    pre = Preprocessing(crop=48, fit="crop")
    framed = frame_slices(stack, pre)
    back = to_input_grid(np.stack([s.astype(np.float32) for s in framed.slices]), framed, stack)
    assert back.shape == array.shape
    np.testing.assert_allclose(back, clip_rescale(array), atol=1e-4)


def test_an_oblique_anisotropic_volume_returns_to_its_grid():
    """The label of an oblique, anisotropic, odd-sized volume, pushed into the frame (resampled to 1 mm, resized)
    and pulled back by ``to_input_grid``, overlaps itself (Dice > 97) on the volume's own grid."""
    shape = (5, 77, 131)  # z, y, x
    label = ellipse(shape, (2.5, 40, 60), (4, 25, 30)).astype(np.float32)
    image = sitk.GetImageFromArray(label)
    image.SetSpacing((0.6, 1.45, 6.0))
    turn = np.radians(30)
    image.SetDirection([np.cos(turn), -np.sin(turn), 0, np.sin(turn), np.cos(turn), 0, 0, 0, 1])
    image.SetOrigin((12.0, -40.0, 7.5))
    stack = as_stack(image)
    framed = frame_slices(stack, Preprocessing(crop=64, fit="resize", spacing=1.0))
    assert framed.grid.GetSpacing()[:2] == (1.0, 1.0) and framed.slices.shape == (5, 64, 64)
    back = to_input_grid(framed.slices.astype(np.float32) / 255, framed, stack)
    assert back.shape == shape
    assert dice(back > 0.5, label > 0) > 97


def test_unreadable_and_unsupported_files_name_themselves(tmp_path):
    (tmp_path / "scan.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match=r"scan\.nii\.gz: unreadable"):
        read_image(tmp_path / "scan.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"notes\.txt: unsupported format"):
        read_image(tmp_path / "notes.txt")


def test_colour_pictures_are_read_as_grey(tmp_path):
    import cv2

    colour = np.zeros((20, 30, 3), np.uint8)
    colour[..., 2] = 200  # red, in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), colour)
    grey = sitk.GetArrayFromImage(read_image(tmp_path / "red.png"))
    expected = cv2.imread(str(tmp_path / "red.png"), cv2.IMREAD_GRAYSCALE)
    assert grey.shape == (20, 30)
    np.testing.assert_allclose(grey, expected, atol=1)
