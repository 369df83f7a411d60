"""Boundary metrics in mm (HD95, NSD) on synthetic shapes, 3D Dice per subject, and NaN-aware summaries."""

from __future__ import annotations

import math

import pytest
import torch

from autoprompt.evaluation.metrics import dice
from autoprompt.evaluation.surface import dice_per_subject, hd95, nsd, summarize_finite

SIZE = 64


def disc(radius: float, centre: tuple[int, int] = (32, 32)) -> torch.Tensor:
    """H x W boolean disc of the given radius in pixels."""
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def segment(row: int, col: int, vertical: bool = False, length: int = 30) -> torch.Tensor:
    """H x W boolean one-pixel-thick segment starting at (row, col), horizontal unless ``vertical``."""
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    if vertical:
        mask[row : row + length, col] = True
    else:
        mask[row, col : col + length] = True
    return mask


def spacings(*pairs: tuple[float, float]) -> torch.Tensor:
    return torch.tensor(pairs, dtype=torch.float64)


def test_identical_masks_give_hd95_zero_and_nsd_one():
    masks = torch.stack([disc(12), disc(7, (20, 40)), segment(10, 10)])
    spacing = spacings((0.7, 0.7), (2.0, 0.5), (1.0, 1.0))
    assert hd95(masks, masks, spacing).tolist() == [0.0, 0.0, 0.0]
    assert nsd(masks, masks, spacing, tolerance_mm=0.0).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(("radius", "k"), [(14, 2), (20, 3), (14, 4)])
def test_hd95_of_concentric_discs_is_the_radius_gap_in_mm(radius: int, k: int):
    pred, target = disc(radius)[None].repeat(2, 1, 1), disc(radius + k)[None].repeat(2, 1, 1)
    spacing = spacings((0.7, 0.7), (1.3, 1.3))  # each image its own isotropic spacing
    values = hd95(pred, target, spacing)
    assert values.dtype == torch.float64
    for value, mm in zip(values.tolist(), (0.7, 1.3), strict=True):
        assert abs(value - k * mm) <= 0.5 * mm, f"HD95 {value} mm is not {k} px x {mm} mm within half a pixel"
    assert values[1] / values[0] == pytest.approx(1.3 / 0.7), "the distance must scale with each image's spacing"
    assert hd95(target, pred, spacing).tolist() == pytest.approx(values.tolist()), "HD95 must be symmetric"


def test_anisotropic_spacing_scales_a_shift_along_its_own_axis():
    shift = 3
    row_shift = (segment(20, 10), segment(20 + shift, 10))  # same columns, rows apart
    col_shift = (segment(10, 20, vertical=True), segment(10, 20 + shift, vertical=True))  # same rows, columns apart
    pred, target = torch.stack([row_shift[0], col_shift[0]]), torch.stack([row_shift[1], col_shift[1]])
    rows_coarse = spacings((2.0, 0.5), (2.0, 0.5))
    assert hd95(pred, target, rows_coarse).tolist() == pytest.approx([shift * 2.0, shift * 0.5])
    cols_coarse = rows_coarse.flip(1)  # (0.5, 2.0): the same shifts now measure the other way round
    assert hd95(pred, target, cols_coarse).tolist() == pytest.approx([shift * 0.5, shift * 2.0])


def test_hd95_ignores_a_stray_pixel_that_the_maximum_would_report():
    target = disc(14)
    pred = target.clone()
    pred[4, 4] = True  # ~26 px from the disc boundary, one of ~80 boundary pixels
    value = hd95(pred[None], target[None], spacings((1.0, 1.0))).item()
    assert value < 1.0, f"the 95th percentile must not reach the outlier, got {value}"
    score = nsd(pred[None], target[None], spacings((1.0, 1.0)), tolerance_mm=1.0).item()
    assert 0.95 < score < 1.0, f"only the stray pixel is beyond tolerance, got NSD {score}"


def test_nsd_goes_from_low_to_one_as_the_tolerance_passes_the_boundary_distance():
    # every boundary pixel is exactly 3 rows x 2.0 mm = 6 mm from the other boundary
    pred, target, spacing = segment(20, 10)[None], segment(23, 10)[None], spacings((2.0, 0.5))
    assert nsd(pred, target, spacing, tolerance_mm=5.9).item() == 0.0
    assert nsd(pred, target, spacing, tolerance_mm=6.0).item() == 1.0, "a distance equal to the tolerance counts"
    assert nsd(pred, target, spacing, tolerance_mm=1.6).item() == 0.0, "1.6 mm would cover 3 columns of 0.5 mm"
    # concentric discs 2 px apart at 0.7 mm: well below at 1.5 px, all within at 2.5 px
    pred, target, spacing = disc(14)[None], disc(16)[None], spacings((0.7, 0.7))
    low, high = (nsd(pred, target, spacing, tolerance_mm=px * 0.7).item() for px in (1.5, 2.5))
    assert low < 0.6
    assert high == 1.0
    assert 0.0 <= low <= 1.0


def test_empty_mask_conventions():
    empty, full = torch.zeros(SIZE, SIZE, dtype=torch.bool), disc(10)
    pred = torch.stack([empty, empty, full, full])
    target = torch.stack([empty, full, empty, full])
    spacing = spacings(*[(1.0, 1.0)] * 4)
    distances = hd95(pred, target, spacing)
    assert distances[0].item() == 0.0, "both empty: nothing to miss"
    assert math.isnan(distances[1].item()) and math.isnan(distances[2].item()), "one empty: undefined"
    assert distances[3].item() == 0.0
    assert nsd(pred, target, spacing, tolerance_mm=1.0).tolist() == [1.0, 0.0, 0.0, 1.0]


def test_shapes_are_checked():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    with pytest.raises(AssertionError, match="spacing"):
        hd95(masks, masks, torch.ones(2))
    with pytest.raises(AssertionError, match="prediction"):
        nsd(masks, masks[:, :4], torch.ones(2, 2), tolerance_mm=1.0)
    with pytest.raises(AssertionError, match="subject"):
        dice_per_subject(masks, masks, ["a"])


def box(r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[r0:r1, c0:c1] = True
    return mask


def test_dice_per_subject_stacks_slices_into_one_volume():
    empty = torch.zeros(8, 8, dtype=torch.bool)
    slices = {  # subject -> [(pred, target)] * 3, with hand counts in the comments
        "a": [
            (empty, empty),  # overlap 0, sizes 0 + 0
            (box(0, 4, 0, 2), box(0, 4, 0, 4)),  # overlap 8, sizes 8 + 16
            (empty, box(0, 2, 0, 2)),  # overlap 0, sizes 0 + 4
        ],
        "b": [
            (box(0, 4, 0, 4), box(2, 6, 0, 4)),  # overlap 8, sizes 16 + 16
            (box(0, 2, 0, 5), empty),  # overlap 0, sizes 10 + 0
            (empty, empty),
        ],
    }
    order = ["b", "a", "a", "b", "a", "b"]  # the slices of a subject need not be adjacent
    taken = {"a": iter(slices["a"]), "b": iter(slices["b"])}
    pairs = [next(taken[subject]) for subject in order]
    pred, target = torch.stack([p for p, _ in pairs]), torch.stack([t for _, t in pairs])

    scores = dice_per_subject(pred, target, order)
    assert list(scores) == ["b", "a"], "subjects in order of first appearance"
    assert scores["a"] == pytest.approx(2 * 8 / (8 + 16 + 4))
    assert scores["b"] == pytest.approx(2 * 8 / (16 + 16 + 10))

    per_slice = dice(pred, target)
    for subject in ("a", "b"):
        rows = torch.tensor([s == subject for s in order])
        mean_of_slices = per_slice[rows].mean().item()
        assert abs(scores[subject] - mean_of_slices) > 0.01, f"{subject}: volume Dice must not be a slice mean"


def test_dice_per_subject_of_an_empty_volume_is_one():
    empty = torch.zeros(3, 8, 8, dtype=torch.bool)
    target = empty.clone()
    target[2, 0, 0] = True
    assert dice_per_subject(empty, empty, ["s"] * 3) == {"s": 1.0}
    assert dice_per_subject(empty, target, ["s"] * 3) == {"s": 0.0}


def test_summarize_finite_ignores_and_counts_nan():
    expected = {"mean": 2.0, "std": 1.0, "n": 2, "undefined": 2}
    assert summarize_finite([1.0, math.nan, 3.0, math.nan]) == expected
    assert summarize_finite(torch.tensor([math.nan, 1.0, 3.0, math.nan], dtype=torch.float64)) == expected
    assert summarize_finite([1.23456, 1.23456]) == {"mean": 1.2346, "std": 0.0, "n": 2, "undefined": 0}
    all_undefined = summarize_finite([math.nan])
    assert math.isnan(all_undefined["mean"]) and all_undefined["n"] == 0 and all_undefined["undefined"] == 1
