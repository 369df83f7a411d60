"""DICOM series in, DICOM SEG out: a synthetic oblique, anisotropic MR series read back to its NIfTI twin's
geometry and voxels; the refusals of series that cannot be one volume; SEG written, validated and read back."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from autoprompt.data.images import as_stack, is_image, read_image
from autoprompt.errors import InputError
from tests.dicom_series import oblique_volume, series_datasets, write_series


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


def test_pydicom_test_files(tmp_path):
    """pydicom's own files: an MR slice is a volume of one slice with its values; an RT structure set and a 12-bit
    JPEG that no installed decoder reads are refused, and a lone DICOM file is pointed at its folder."""
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

    jpeg = pydicom.dcmread(get_testdata_file("JPGExtended.dcm"))
    jpeg.ImagePositionPatient, jpeg.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    (tmp_path / "jpeg").mkdir()
    jpeg.save_as(tmp_path / "jpeg" / "a.dcm")
    _refused(tmp_path / "jpeg", "compressed as JPEG Extended", "decoder")
