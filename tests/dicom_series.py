"""Synthetic DICOM for the tests: a volume written as a series of single-slice MR files with the tags a scanner
writes (patient, study, series, frame of reference, geometry, pixel module), the way a PACS export looks."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def oblique_volume(size=(40, 36, 9), spacing=(0.9, 1.1, 6.0), angle=20.0, seed=0) -> tuple[sitk.Image, np.ndarray]:
    """A short-axis-like MR volume on an oblique, anisotropic grid: int16 image (a bright ellipse in a textured
    background) and its uint8 mask of the ellipse (z, y, x)."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
    mask = np.zeros(size[::-1], np.uint8)
    for k in range(size[2]):
        r = 6 + 3 * np.sin(np.pi * (k + 1) / (size[2] + 1))
        mask[k] = ((x - size[0] / 2 - 0.3 * k) ** 2 / r**2 + (y - size[1] / 2) ** 2 / (0.8 * r) ** 2) <= 1
    array = (300 + 80 * rng.standard_normal(mask.shape) + 900.0 * mask).clip(0, 4095).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    a, b = np.radians(angle), np.radians(angle / 2)
    turn = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    image.SetDirection((turn @ tilt).ravel().tolist())
    image.SetOrigin((-31.5, 12.25, 40.0))
    return image, mask


def series_datasets(image: sitk.Image, modality: str = "MR", series_uid: str | None = None) -> list[Dataset]:
    """One pydicom dataset per slice of a 3D int16 ``image``, in slice order (InstanceNumber counts down, so that
    files sorted by it are in the wrong order)."""
    array = sitk.GetArrayFromImage(image)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    study, series, frame = generate_uid(), series_uid or generate_uid(), generate_uid()
    now = datetime.datetime(2026, 3, 14, 9, 26, 53)
    out = []
    for k, plane in enumerate(array):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Heart", "AP0001", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "A1", ""
        ds.Modality, ds.Manufacturer, ds.SeriesNumber = modality, "Synthetic", 7
        ds.SeriesDescription, ds.BodyPartExamined = "cine SAX ED", "HEART"
        ds.PositionReferenceIndicator = ""
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SS", "", "2D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 1.2, 2.8, 1, 1.5
        ds.ImageType, ds.PatientPosition = ["ORIGINAL", "PRIMARY", "OTHER"], "HFS"
        ds.InstanceNumber = len(array) - k
        position = np.array(image.GetOrigin()) + direction @ np.array([0, 0, k * spacing[2]])
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness, ds.SpacingBetweenSlices = f"{spacing[2]:.6f}", f"{spacing[2]:.6f}"
        ds.SliceLocation = f"{position @ np.cross(direction[:, 0], direction[:, 1]):.6f}"
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = plane.astype("<i2").tobytes()
        out.append(ds)
    return out


def write_series(folder: Path, datasets: list[Dataset], names=None) -> list[Path]:
    """``datasets`` as files in ``folder`` named ``names`` (default: random-looking names in reverse order, so that
    neither the file names nor InstanceNumber give the slice order)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"IM{(7919 * (k + 3)) % 10007:05d}" for k in range(len(datasets))]
    paths = []
    for ds, name in zip(datasets, names, strict=True):
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_back(path: Path) -> Dataset:
    return pydicom.dcmread(str(path))


def slicer_roi(image: sitk.Image, box: tuple[int, int, int, int], k: int, system: str = "RAS") -> dict:
    """A 3D Slicer markups file's JSON of one ROI drawn on slice ``k`` of ``image`` around pixels ``box`` (x_min,
    y_min, x_max, y_max): its axes along the volume's, thin across the slices, in ``system`` mm."""
    x0, y0, x1, y1 = box
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(((x0 + x1) / 2, (y0 + y1) / 2, float(k))))
    size = [(x1 - x0 + 1) * spacing[0], (y1 - y0 + 1) * spacing[1], 0.0]
    if system == "RAS":
        flip = np.diag([-1.0, -1.0, 1.0])
        centre, direction = flip @ centre, flip @ direction
    roi = {
        "type": "ROI",
        "coordinateSystem": system,
        "coordinateUnits": "mm",
        "roiType": "Box",
        "center": centre.tolist(),
        "orientation": direction.ravel().tolist(),
        "size": size,
        "controlPoints": [{"id": "1", "label": "R", "position": centre.tolist(), "positionStatus": "defined"}],
    }
    schema = "https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/Resources/Schema/"
    return {"@schema": schema + "markups-schema-v1.0.3.json#", "markups": [roi]}


def napari_csv(boxes: dict[int, tuple[int, int, int, int]]) -> str:
    """A napari Shapes layer's CSV of one rectangle per slice, around the pixels of each box (pixel edges at
    half indices, as napari draws them)."""
    lines = ["index,shape-type,vertex-index,axis-0,axis-1,axis-2"]
    for n, (k, (x0, y0, x1, y1)) in enumerate(sorted(boxes.items())):
        corners = [(y0 - 0.5, x0 - 0.5), (y0 - 0.5, x1 + 0.5), (y1 + 0.5, x1 + 0.5), (y1 + 0.5, x0 - 0.5)]
        lines += [f"{n},rectangle,{v},{k}.0,{y},{x}" for v, (y, x) in enumerate(corners)]
    return "\n".join(lines) + "\n"


def sparse_seg(folder: Path, mask: np.ndarray, path: Path) -> None:
    """``mask`` as a SEG of the series in ``folder`` that leaves out its empty frames (highdicom's default, and what
    other tools write), sources in slice order."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda d: float(d.SliceLocation))
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lv",
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type="BINARY", segment_descriptions=[description],
        series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="reader", manufacturer_model_name="hand", software_versions="1", device_serial_number="1",
    )  # fmt: skip
    seg.save_as(path)
