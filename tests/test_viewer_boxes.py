"""Boxes drawn in viewers: 3D Slicer ROI markups (RAS or LPS mm, through an oblique volume's geometry) and napari
Shapes CSV, read as the same pixel boxes as boxes.csv gives, and their refusals."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from autoprompt.data.boxes import read_boxes
from autoprompt.errors import InputError
from tests.dicom_series import napari_csv, oblique_volume, series_datasets, slicer_roi, write_series

BOXES = {2: (10, 8, 27, 25), 5: (12, 9, 30, 28), 6: (11, 10, 29, 27)}  # slice -> x_min, y_min, x_max, y_max


@pytest.fixture
def folder(tmp_path):
    image, _ = oblique_volume()
    write_series(tmp_path / "images" / "sax", series_datasets(image))
    return tmp_path, image


def corners(found):
    return {b.slice: (b.x_min, b.y_min, b.x_max, b.y_max) for b in found}


@pytest.mark.parametrize("system", ["RAS", "LPS"])
def test_slicer_rois_give_the_boxes_they_were_drawn_around(folder, system):
    """One ROI per file (as Slicer saves them), in a folder: each maps through the oblique, anisotropic geometry of
    the series to the slice and pixels it was drawn on."""
    root, image = folder
    rois = root / "rois"
    rois.mkdir()
    for n, (k, box) in enumerate(BOXES.items()):
        (rois / f"R_{n}.mrk.json").write_text(json.dumps(slicer_roi(image, box, k, system)))
    boxes = read_boxes(rois, root / "images")
    assert list(boxes) == ["sax"]
    assert corners(boxes["sax"]) == BOXES
    one = read_boxes(rois / "R_1.mrk.json", root / "images")
    assert corners(one["sax"]) == {5: BOXES[5]}


def test_an_axis_aligned_roi_on_an_oblique_volume_covers_what_it_touches(folder):
    """An ROI along the patient axes, not the volume's: the box is every pixel of its slice that the ROI touches."""
    root, image = folder
    roi = slicer_roi(image, BOXES[5], 5, "LPS")
    roi["markups"][0]["orientation"] = np.eye(3).ravel().tolist()
    roi["markups"][0]["size"] = [12.0, 9.0, 0.0]
    (root / "a.mrk.json").write_text(json.dumps(roi))
    (box,) = read_boxes(root / "a.mrk.json", root / "images")["sax"]
    centre = np.array(roi["markups"][0]["center"])
    touched = []
    for dx in np.linspace(-6, 6, 25):
        for dy in np.linspace(-4.5, 4.5, 19):
            index = image.TransformPhysicalPointToContinuousIndex(np.add(centre, (dx, dy, 0)).tolist())
            touched.append(np.floor(np.array(index[:2]) + 0.5))
    touched = np.array(touched)
    assert box.slice == 5
    assert (box.x_min, box.y_min) == tuple(touched.min(axis=0).astype(int))
    assert (box.x_max, box.y_max) == tuple(touched.max(axis=0).astype(int))


def test_bad_rois_are_refused(folder):
    root, image = folder

    def refused(roi, *words):
        path = root / "bad.mrk.json"
        path.write_text(json.dumps(roi))
        with pytest.raises(InputError) as error:
            read_boxes(path, root / "images")
        assert "\n" not in str(error.value)
        for word in words:
            assert word in str(error.value), str(error.value)

    thick = slicer_roi(image, BOXES[2], 2)
    thick["markups"][0]["size"][2] = 20.0
    refused(thick, "spans slices", "one ROI per slice")
    away = slicer_roi(image, BOXES[2], 2)
    away["markups"][0]["center"] = [900.0, 900.0, 900.0]
    refused(away, "lies in none of the volumes")
    side = slicer_roi(image, BOXES[2], 2)
    side["markups"][0]["size"] = [0.0, 10.0, 30.0]
    refused(side, "thin across the columns")
    points = {"markups": [{"type": "Fiducial", "controlPoints": []}]}
    refused(points, "no ROI")


def test_two_volumes_in_one_frame_take_the_roi_their_file_names(folder):
    """Two series over one place: an ROI lies in both, so the file named after one of them decides."""
    root, image = folder
    write_series(root / "images" / "sax2", series_datasets(image))
    (root / "R.mrk.json").write_text(json.dumps(slicer_roi(image, BOXES[2], 2)))
    with pytest.raises(InputError, match="name the file after its volume"):
        read_boxes(root / "R.mrk.json", root / "images")
    (root / "sax2_1.mrk.json").write_text(json.dumps(slicer_roi(image, BOXES[2], 2)))
    assert list(read_boxes(root / "sax2_1.mrk.json", root / "images")) == ["sax2"]


def test_napari_shapes_csv(folder, tmp_path):
    """A napari Shapes layer saved as CSV: axis 0 the slice, rectangles around the pixels; named after its image,
    or the folder's only image. Other shapes are refused."""
    root, image = folder
    (root / "sax.csv").write_text(napari_csv(BOXES))
    assert corners(read_boxes(root / "sax.csv", root / "images")["sax"]) == BOXES
    (root / "layer.csv").write_text(napari_csv(BOXES))
    assert corners(read_boxes(root / "layer.csv", root / "images")["sax"]) == BOXES
    sitk.WriteImage(image, str(root / "images" / "other.nii.gz"))
    with pytest.raises(InputError, match="name the file after its image"):
        read_boxes(root / "layer.csv", root / "images")
    polygon = napari_csv(BOXES).replace("rectangle", "polygon")
    (root / "sax.csv").write_text(polygon)
    with pytest.raises(InputError, match="not a rectangle"):
        read_boxes(root / "sax.csv", root / "images")


def test_boxes_csv_names_a_series_by_its_folder_or_its_uid(folder):
    """A row of boxes.csv names a series by its folder's name, or by its SeriesInstanceUID."""
    root, _ = folder
    uid = str(pydicom.dcmread(next((root / "images" / "sax").iterdir())).SeriesInstanceUID)
    (root / "boxes.csv").write_text(f"image,x_min,y_min,x_max,y_max,slice\nsax,1,2,10,12,3\n{uid},2,3,11,13,4\n")
    assert corners(read_boxes(root / "boxes.csv", root / "images")["sax"]) == {3: (1, 2, 10, 12), 4: (2, 3, 11, 13)}
    (root / "boxes.csv").write_text("image,x_min,y_min,x_max,y_max,slice\n1.2.3.4,1,2,10,12,3\n")
    with pytest.raises(InputError, match=r"1\.2\.3\.4 not found"):
        read_boxes(root / "boxes.csv", root / "images")


def test_a_napari_rectangle_before_the_first_slice_is_refused(folder):
    root, _ = folder
    (root / "sax.csv").write_text(napari_csv({-1: BOXES[2]}))
    with pytest.raises(InputError, match="on slice -1"):
        read_boxes(root / "sax.csv", root / "images")
