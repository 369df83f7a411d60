"""The three commands on a DICOM series folder with its boxes drawn as 3D Slicer ROIs: ``train`` reads the series
and the ROIs, ``predict`` writes a DICOM SEG of the series that dciodvfy accepts, the same volume as NIfTI gets the
same mask, and ``evaluate`` scores the SEG as it scores that NIfTI mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from autoprompt import cli
from autoprompt.data.images import read_image
from tests.dicom_series import oblique_volume, series_datasets, slicer_roi, write_series
from tests.helpers import RUNTIME_CACHE
from tests.test_cli import params
from tests.test_dicom import dciodvfy

SLICES = 6
ROIS = range(1, 5)  # the boxed slices: the two end slices are left to predict


def tight(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A series folder (6 oblique, anisotropic slices), four Slicer ROIs, its NIfTI twin; trained and predicted."""
    root = tmp_path_factory.mktemp("dicom-cli")
    image, mask = oblique_volume(size=(44, 40, SLICES), seed=2)
    write_series(root / "data" / "images" / "sax", series_datasets(image))
    rois = root / "data" / "rois"
    rois.mkdir()
    for n, k in enumerate(ROIS):
        (rois / f"R_{n}.mrk.json").write_text(json.dumps(slicer_roi(image, tight(mask[k]), k)))
    (root / "twin").mkdir()
    sitk.WriteImage(image, str(root / "twin" / "sax.nii.gz"))
    (root / "masks").mkdir()
    reference = sitk.GetImageFromArray(mask)
    reference.CopyInformation(image)
    sitk.WriteImage(reference, str(root / "masks" / "sax.nii.gz"))
    autoprompt = lambda *argv: cli.main([str(a) for a in argv])  # noqa: E731
    autoprompt("train", root / "data", "-o", root / "model.pt", "--boxes", rois, "--class", "lv", "--params",
               params(root), "--runs", 1, "--device", "cpu", "--threads", 2)  # fmt: skip
    common = ("--device", "cpu", "--threads", 2, "--runtime-cache", RUNTIME_CACHE)
    autoprompt("predict", "-m", root / "model.pt", "-i", root / "data" / "images", "-o", root / "seg", *common)
    autoprompt("predict", "-m", root / "model.pt", "-i", root / "twin", "-o", root / "nifti", *common)
    autoprompt("predict", "-m", root / "model.pt", "-i", root / "data" / "images", "-o", root / "as-nifti",
               "--output-format", "nifti", *common)  # fmt: skip
    autoprompt("predict", "-m", root / "model.pt", "-i", root / "data" / "images", "-o", root / "fractional",
               "--probabilities", *common)  # fmt: skip
    return root


def test_a_series_with_slicer_rois_trains_and_predicts_a_valid_seg(run):
    seg_path = run / "seg" / "sax.dcm"
    assert seg_path.is_file()
    assert dciodvfy(seg_path) == ""
    seg = pydicom.dcmread(seg_path)
    assert seg.SegmentSequence[0].SegmentLabel == "lv"
    source = {pydicom.dcmread(p).SOPInstanceUID for p in (run / "data" / "images" / "sax").iterdir()}
    assert {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == source
    predicted = sitk.GetArrayFromImage(read_image(seg_path))
    assert predicted.shape == (SLICES, 40, 44) and predicted.any()


def test_the_nifti_twin_gets_the_same_mask(run):
    seg = sitk.GetArrayFromImage(read_image(run / "seg" / "sax.dcm"))
    twin = sitk.GetArrayFromImage(read_image(run / "nifti" / "sax.nii.gz"))
    as_nifti = read_image(run / "as-nifti" / "sax.nii.gz")
    np.testing.assert_array_equal(seg, twin != 0)
    np.testing.assert_array_equal(seg, sitk.GetArrayFromImage(as_nifti) != 0)
    np.testing.assert_allclose(
        as_nifti.GetDirection(), read_image(run / "twin" / "sax.nii.gz").GetDirection(), atol=1e-5
    )


def test_evaluate_scores_the_seg_as_the_nifti_mask(run):
    cli.main(["evaluate", "--pred", str(run / "seg"), "--masks", str(run / "masks")])
    cli.main(["evaluate", "--pred", str(run / "nifti"), "--masks", str(run / "masks")])
    seg = json.loads((run / "seg" / "evaluation.json").read_text())
    nifti = json.loads((run / "nifti" / "evaluation.json").read_text())
    assert seg["images"] == 1 and seg["dice"] == nifti["dice"] and seg["hd95_mm"] == nifti["hd95_mm"]
    assert seg["dice"]["mean"] > 50


def test_probabilities_come_as_a_fractional_seg_that_thresholds_to_the_mask(run):
    path = run / "fractional" / "sax.dcm"
    assert dciodvfy(path) == ""
    assert pydicom.dcmread(path).SegmentationType == "FRACTIONAL"
    probabilities = sitk.GetArrayFromImage(read_image(path))
    assert probabilities.dtype == np.float32 and 0 < probabilities.max() <= 1
    mask = sitk.GetArrayFromImage(read_image(run / "seg" / "sax.dcm"))
    assert np.mean((probabilities > 0.5) == (mask != 0)) > 0.999  # 1/255 steps move only voxels at the threshold
