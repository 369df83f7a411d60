"""DICOM series in, DICOM SEG out: a synthetic oblique, anisotropic MR series read back to its NIfTI twin's
geometry and voxels; the refusals of series that cannot be one volume; SEG written, validated and read back."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from autoprompt.data import dicom
from autoprompt.data.images import as_stack, is_image, read_image
from autoprompt.errors import InputError
from autoprompt.evaluation.folders import evaluate_folder
from tests.dicom_series import oblique_volume, series_datasets, sparse_seg, write_series


@pytest.fixture
def series(tmp_path):
    """(series folder, NIfTI twin path, mask) of the synthetic oblique volume."""
    image, mask = oblique_volume()
    folder = tmp_path / "images" / "sax"
    write_series(folder, series_datasets(image))
    twin = tmp_path / "twin.nii.gz"
    sitk.WriteImage(image, str(twin))
    return folder, twin, mask


def test_series_reads_as_its_nifti_twin(series):
    """Slices ordered by position along the normal (the files' names and InstanceNumber are both out of order), the
    geometry from positions and orientation: the same grid and voxels as the volume written as NIfTI."""
    folder, twin, _ = series
    assert is_image(folder) and not is_image(folder.parent)
    read, nifti = read_image(folder), read_image(twin)
    assert read.GetSize() == nifti.GetSize() == (40, 36, 9)
    np.testing.assert_allclose(read.GetSpacing(), nifti.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(read.GetSpacing(), (0.9, 1.1, 6.0), atol=1e-5)
    np.testing.assert_allclose(read.GetOrigin(), nifti.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(read.GetDirection(), nifti.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(nifti))
    assert as_stack(read).slices == 9


def test_series_reversed_normal_and_rescale(tmp_path):
    """Positions that run against the row x column normal are still one ordered volume; RescaleSlope/Intercept apply."""
    image, _ = oblique_volume(size=(20, 18, 5))
    datasets = series_datasets(image)
    flipped = [sitk.GetArrayFromImage(image)[k] for k in range(5)]
    for ds in datasets:  # mirror the rows and columns: the normal turns over, the slices run backwards along it
        iop = [float(v) for v in ds.ImageOrientationPatient]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop[3:] + iop[:3]]
        ds.PixelData = np.ascontiguousarray(np.frombuffer(ds.PixelData, "<i2").reshape(18, 20).T).tobytes()
        ds.Rows, ds.Columns = 20, 18
        ds.PixelSpacing = list(ds.PixelSpacing)[::-1]
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    write_series(tmp_path / "s", datasets)
    read = read_image(tmp_path / "s")
    array = sitk.GetArrayFromImage(read)
    np.testing.assert_allclose(array, np.stack([2.0 * p.T - 1024 for p in flipped])[::-1])
    # the same physical point is the same voxel value
    point = image.TransformIndexToPhysicalPoint((4, 7, 1))
    assert read.GetPixel(read.TransformPhysicalPointToIndex(point)) == 2 * image.GetPixel((4, 7, 1)) - 1024


def _refused(folder, *words):
    with pytest.raises(InputError) as error:
        read_image(folder)
    message = str(error.value)
    assert "\n" not in message and str(folder) in message
    for word in words:
        assert word in message, message


def test_hostile_series_are_refused(tmp_path):
    image, _ = oblique_volume(size=(16, 14, 6))
    gap = write_series(tmp_path / "gap", series_datasets(image))
    positions = {p: float(pydicom.dcmread(p).SliceLocation) for p in gap}
    sorted(positions, key=positions.get)[2].unlink()
    _refused(tmp_path / "gap", "a slice is missing")

    two = series_datasets(image) + series_datasets(image)
    write_series(tmp_path / "two", two)
    _refused(tmp_path / "two", "2 series", "folder of its own")

    turned = series_datasets(image)
    turned[3].ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    write_series(tmp_path / "turned", turned)
    _refused(tmp_path / "turned", "orientation")

    sized = series_datasets(image)
    sized[1].Rows, sized[1].PixelData = 7, sized[1].PixelData[: 7 * 16 * 2]
    write_series(tmp_path / "sized", sized)
    _refused(tmp_path / "sized", "7 x 16")

    twice = series_datasets(image)
    twice[2].ImagePositionPatient = twice[1].ImagePositionPatient
    write_series(tmp_path / "twice", twice)
    _refused(tmp_path / "twice", "same position")

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "slice1.dcm").write_bytes(b"DICM" * 40)
    with pytest.raises(InputError, match=r"slice1\.dcm: not a readable DICOM file"):
        read_image(tmp_path / "broken")


def test_pydicom_test_files(tmp_path):
    """pydicom's own files: an MR slice is a volume of one slice with its values; an RT structure set, a structured
    report and a 12-bit JPEG that no installed decoder reads are refused, and a lone DICOM file is pointed at its
    folder."""
    (tmp_path / "mr").mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "mr" / "1.dcm")
    mr = read_image(tmp_path / "mr")
    assert mr.GetSize() == (64, 64, 1)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(mr)[0], pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    )
    _refused_file = tmp_path / "mr" / "1.dcm"
    with pytest.raises(InputError, match="folder that holds the series"):
        read_image(_refused_file)

    (tmp_path / "rt").mkdir()
    shutil.copy(get_testdata_file("rtstruct.dcm"), tmp_path / "rt" / "rs.dcm")
    _refused(tmp_path / "rt", "radiotherapy", "not an image")
    (tmp_path / "sr").mkdir()
    shutil.copy(get_testdata_file("reportsi.dcm"), tmp_path / "sr" / "report")  # no suffix: found by its DICM marker
    _refused(tmp_path / "sr", "structured report (SR)", "not an image")

    jpeg = pydicom.dcmread(get_testdata_file("JPGExtended.dcm"))
    jpeg.ImagePositionPatient, jpeg.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    (tmp_path / "jpeg").mkdir()
    jpeg.save_as(tmp_path / "jpeg" / "a.dcm")
    _refused(tmp_path / "jpeg", "compressed as JPEG Extended", "decoder")


def dciodvfy(path) -> str:
    """dciodvfy's report on ``path`` (skipped where dicom3tools is not installed); its error lines are returned."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy not found: apt-get install dicom3tools (as root; .ci/run does)")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    return "\n".join(line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error"))


@pytest.mark.parametrize("fractional", [False, True])
def test_seg_round_trip_and_validator(series, tmp_path, fractional):
    """A SEG of the series: valid for dciodvfy, referencing the series' study, frame of reference and every
    instance, and read back onto the series' own grid with the values written."""
    folder, _, mask = series
    values = mask.astype(np.float32) * 0.8 if fractional else mask
    path = tmp_path / "out" / "sax.dcm"
    dicom.write_seg(values, folder, path, "lv", ("autoprompt", "9.9"), fractional=fractional)
    assert dciodvfy(path) == ""
    assert dciodvfy(sorted(folder.iterdir())[0]) == ""  # the synthetic source is valid MR too
    seg = pydicom.dcmread(path)
    source = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert seg.SegmentationType == ("FRACTIONAL" if fractional else "BINARY")
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "lv"
    assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "autoprompt"
    assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "9.9"
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {d.SOPInstanceUID for d in source}
    back, image = read_image(path), read_image(folder)
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), values, atol=1 / 255)


def test_evaluate_reads_seg_as_its_nifti_twin(series, tmp_path):
    """evaluate scores a SEG prediction (or a SEG reference) as the same mask written as NIfTI: the same Dice,
    NSD and HD95."""
    folder, _, mask = series
    image = read_image(folder)
    predicted = np.roll(mask, 2, axis=2)  # off by two columns: a score that is neither 0 nor 100
    for name, kind in (("nifti", ".nii.gz"), ("seg", ".dcm")):
        (tmp_path / name).mkdir()
        if kind == ".dcm":
            dicom.write_seg(predicted, folder, tmp_path / name / "sax.dcm", "lv", ("autoprompt", "0"))
        else:
            written = sitk.GetImageFromArray(predicted)
            written.CopyInformation(image)
            sitk.WriteImage(written, str(tmp_path / name / "sax.nii.gz"))
    (tmp_path / "masks").mkdir()
    reference = sitk.GetImageFromArray(mask)
    reference.CopyInformation(image)
    sitk.WriteImage(reference, str(tmp_path / "masks" / "sax.nii.gz"))
    (tmp_path / "seg-masks").mkdir()
    dicom.write_seg(mask, folder, tmp_path / "seg-masks" / "sax.dcm", "lv", ("reader", "1"))
    nifti = evaluate_folder(tmp_path / "nifti", tmp_path / "masks")
    seg = evaluate_folder(tmp_path / "seg", tmp_path / "masks")
    both = evaluate_folder(tmp_path / "seg", tmp_path / "seg-masks", tmp_path / "both.csv")
    assert 20 < nifti["dice"][0] < 95
    for table in (seg, both):
        for column in ("dice", "nsd", "hd95_mm", "reference_voxels", "predicted_voxels"):
            assert table[column][0] == pytest.approx(nifti[column][0], abs=1e-6), column


def test_a_seg_without_its_empty_frames_is_scored_on_the_grid_it_is_paired_with(series, tmp_path):
    """A reference SEG that leaves out its empty frames (as highdicom and other tools write them) does not say
    where its volume ends: alone it is refused, paired with a prediction it lies on the prediction's grid."""
    folder, _, mask = series
    sparse = mask.copy()
    sparse[:2] = 0  # the first two slices empty: their frames are left out
    (tmp_path / "refs").mkdir()
    sparse_seg(folder, sparse, tmp_path / "refs" / "sax.dcm")
    assert pydicom.dcmread(tmp_path / "refs" / "sax.dcm").NumberOfFrames == int(sparse.any(axis=(1, 2)).sum())
    with pytest.raises(InputError, match="do not cover the volume"):
        sitk.GetArrayFromImage(read_image(tmp_path / "refs" / "sax.dcm"))
    image = read_image(folder)
    for name in ("nifti", "seg"):
        (tmp_path / name).mkdir()
    written = sitk.GetImageFromArray(mask)
    written.CopyInformation(image)
    sitk.WriteImage(written, str(tmp_path / "nifti" / "sax.nii.gz"))
    dicom.write_seg(mask, folder, tmp_path / "seg" / "sax.dcm", "lv", ("autoprompt", "0"))
    (tmp_path / "nifti-refs").mkdir()
    reference = sitk.GetImageFromArray(sparse)
    reference.CopyInformation(image)
    sitk.WriteImage(reference, str(tmp_path / "nifti-refs" / "sax.nii.gz"))
    expected = evaluate_folder(tmp_path / "nifti", tmp_path / "nifti-refs")
    assert 0 < expected["dice"][0] < 100
    for predictions in ("nifti", "seg"):
        table = evaluate_folder(tmp_path / predictions, tmp_path / "refs", tmp_path / f"{predictions}.csv")
        assert table["dice"][0] == pytest.approx(expected["dice"][0], abs=1e-6)
        assert table["reference_voxels"][0] == int(sparse.sum())
