"""``predict --report`` for volumes: each volume's slices as a strip, the absent ones marked, its worst slice
placing it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoprompt.inference.report import STRIP, entry, write_report


def _volume(slices: int) -> tuple[sitk.Image, np.ndarray]:
    reference = np.zeros((slices, 40, 40), bool)
    reference[1:-1, 10:30, 10:30] = True
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(50, 5, reference.shape) + 100 * reference)
    return image, reference


def test_a_volume_is_placed_by_its_worst_slice_and_shows_its_absent_ones(tmp_path: Path) -> None:
    image, reference = _volume(6)
    false_end = reference.copy()
    false_end[0, 12:20, 12:20] = True  # a mask above the structure: that slice scores 0
    clean = reference.copy()
    clean[2, 10:30, 10:22] = False  # a slice cut short, but every slice above 0.5 Dice
    worse = entry("false_end.nii.gz", image, false_end.astype(np.uint8), reference)
    better = entry("clean.nii.gz", image, clean.astype(np.uint8), reference, absent=[0, 5])
    assert worse.score > better.score, "the volume with the false slice has the higher Dice over the volume"
    assert [t.index for t in worse.slices] == list(range(6)) and worse.slices[0].score == 0.0
    assert worse.rank == 0.0 and better.rank > 0.5
    write_report([better, worse], tmp_path / "report.html", "volumes")
    page = (tmp_path / "report.html").read_text()
    assert page.index("false_end.nii.gz") < page.index("clean.nii.gz"), "the worst slice decides the order"
    assert len(re.findall(r'<figure class="slice absent"', page)) == 2 and "0: 100 absent" in page


def test_a_long_volume_shows_its_worst_slices_first() -> None:
    image, reference = _volume(STRIP + 6)
    mask = reference.copy()
    mask[7, 10:30, 10:27] = False  # the worst of the slices holding the structure: Dice 0.26
    iou = np.linspace(0.95, 0.6, len(mask))
    shown = entry("long.nii.gz", image, mask.astype(np.uint8), reference).slices
    assert len(shown) == STRIP and shown[0].index == 7 and shown[0].score < 0.5
    without = entry("long.nii.gz", image, mask.astype(np.uint8), predicted_iou=iou).slices
    assert without[0].score == min(iou[k] for k in range(len(mask)) if mask[k].any()), "the decoder's IoU instead"
