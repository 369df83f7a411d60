"""DICOM as hospitals store it: a folder of one series read as one volume, and DICOM SEG read as a mask.

A *series folder* is a folder that directly holds DICOM files (by their ``DICM`` preamble, or a ``.dcm``, ``.dicom``
or ``.ima`` suffix). Its files are grouped by SeriesInstanceUID and must hold exactly one series of single-frame
images; the slices are ordered by their position along the slice normal (the cross product of the row and column
directions of ImageOrientationPatient), never by file name or InstanceNumber. The volume's geometry is DICOM's own
(LPS, as SimpleITK's): origin at the first slice's ImagePositionPatient, in-plane spacing from PixelSpacing, the
slice spacing from the positions, the direction from the orientation and that normal. Voxels are the stored values
through RescaleSlope and RescaleIntercept.

Refused in one line naming the folder and the fix: two series in one folder, a non-image object (SR, RT, SEG, ...),
slices of different orientation, size or pixel spacing, a missing slice (a gap in the positions) or one slice twice,
a compressed transfer syntax without its decoder, a file that is not DICOM. pydicom and highdicom are imported only
once a DICOM file is read or written.

A DICOM SEG (``write_seg``, highdicom) references the series it segments and holds every frame, empty ones too. One
is read (``read_seg``) with one segment, on its own frames' grid where they cover the volume slice by slice, or on
the grid of the image it is compared with (a SEG that leaves out its empty frames cannot say where its volume ends).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoprompt.errors import InputError

log = logging.getLogger(__name__)

SUFFIXES = (".dcm", ".dicom", ".ima")
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
NOT_IMAGES = {  # SOP classes that hold no pixels to segment, by the name a user knows them by
    "1.2.840.10008.5.1.4.1.1.88": "a structured report (SR)",
    "1.2.840.10008.5.1.4.1.1.481": "a radiotherapy object (RT)",
    "1.2.840.10008.5.1.4.1.1.66": "a segmentation or registration (SEG, REG)",
    "1.2.840.10008.5.1.4.1.1.11": "a presentation state (PR)",
    "1.2.840.10008.5.1.4.1.1.104": "an encapsulated document (PDF, CDA)",
    "1.2.840.10008.5.1.4.1.1.9": "a waveform (ECG)",
}
GAP = 0.1  # a slice step more than 10 % off the median step is a missing slice (or an irregular series)
SAME = 1e-4  # orientation cosines that differ by more are another orientation


def is_dicom_file(path: Path) -> bool:
    """A file that looks like DICOM: a known suffix, or the ``DICM`` marker after the 128-byte preamble."""
    path = Path(path)
    if not path.is_file() or path.name.startswith("."):
        return False
    if path.suffix.lower() in SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (not below it), sorted by name."""
    return [p for p in sorted(Path(folder).iterdir()) if is_dicom_file(p)]


def is_series_folder(path: Path, others: tuple[str, ...] = ()) -> bool:
    """A folder that directly holds DICOM files and no file whose name ends in one of ``others`` (the other image
    formats: a folder of pictures with a stray DICOM file is a folder of pictures): one input, read as one volume."""
    path = Path(path)
    if not path.is_dir() or path.name.startswith("."):
        return False
    files = [p for p in path.iterdir() if p.is_file()]
    if any(p.name.lower().endswith(others) for p in files if others):
        return False
    return any(is_dicom_file(p) for p in files)


def folder_of_series(images: Path, uid: str) -> str | None:
    """The name of the folder in ``images`` that holds the series ``uid`` (a SeriesInstanceUID: digits and dots);
    None where ``uid`` is not one or no folder holds it. Boxes may name a series so."""
    if not uid or not set(uid) <= set("0123456789.") or not Path(images).is_dir():
        return None
    for folder in sorted(Path(images).iterdir()):
        first = next((p for p in dicom_files(folder) if p.is_file()), None) if folder.is_dir() else None
        if first is not None and str(_header(first).get("SeriesInstanceUID", "")) == uid:
            return folder.name
    return None


@contextlib.contextmanager
def _quiet():
    """pydicom's warnings and log lines off: a file it cannot read is refused in one line here, and a decoder that
    fails is logged with its traceback before the next is tried."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with _quiet():
            header = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError) as error:
        raise InputError(f"{path}: not a readable DICOM file ({error.__class__.__name__}); remove it") from None
    if "SOPClassUID" not in header and "Rows" not in header:  # force=True reads any bytes as an empty dataset
        raise InputError(f"{path}: not a readable DICOM file (no SOP class, no image); export it again or remove it")
    return header


def is_seg_file(path: Path) -> bool:
    """A DICOM SEG file (a mask, as ``predict`` writes it and ``evaluate`` reads it)."""
    if not is_dicom_file(path):
        return False
    try:
        return str(_header(path).get("SOPClassUID", "")) == SEG_CLASS
    except InputError:
        return False


def series_in(folder: Path) -> dict[str, list[Path]]:
    """The DICOM files directly in ``folder`` by SeriesInstanceUID."""
    found: dict[str, list[Path]] = defaultdict(list)
    for path in dicom_files(folder):
        found[str(_header(path).get("SeriesInstanceUID", ""))].append(path)
    return dict(found)


@dataclass(frozen=True)
class Series:
    """One series, ordered along its slice normal: its files and headers (pixels not read), and its geometry."""

    folder: Path
    files: tuple[Path, ...]
    headers: tuple
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def uid(self) -> str:
        return str(self.headers[0].SeriesInstanceUID)

    def reference(self) -> sitk.Image:
        """An empty image on the series' grid (for its size, spacing, origin and direction)."""
        first = self.headers[0]
        image = sitk.Image([int(first.Columns), int(first.Rows), len(self.files)], sitk.sitkUInt8)
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        image.SetDirection(self.direction)
        return image


def _sop_kind(header) -> str | None:
    """What a non-image object is, in words (None: an image)."""
    sop = str(header.get("SOPClassUID", ""))
    for prefix, kind in NOT_IMAGES.items():
        if sop.startswith(prefix):
            return kind
    if "PixelData" not in header and "Rows" not in header:
        return f"an object without pixels (modality {header.get('Modality', '?')})"
    return None


def scan_series(folder: Path) -> Series:
    """The one series of ``folder``, its slices ordered along the normal and checked (see the module's docstring);
    only the headers are read."""
    folder = Path(folder)
    groups = series_in(folder)
    if not groups:
        raise InputError(f"{folder}: no DICOM files in this folder; give the folder of one series")
    if len(groups) > 1:
        counts = ", ".join(f"{uid or '(no UID)'}: {len(files)} files" for uid, files in groups.items())
        raise InputError(f"{folder}: {len(groups)} series ({counts}); put each series in a folder of its own")
    files = next(iter(groups.values()))
    headers = [_header(p) for p in files]
    for path, header in zip(files, headers, strict=True):
        kind = _sop_kind(header)
        if kind is not None:
            raise InputError(f"{path}: {kind}, not an image to segment; keep only the image series in {folder}")
        if int(header.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(
                f"{path}: a multi-frame object ({header.NumberOfFrames} frames); give a series of single-slice files"
            )
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if tag not in header:
                raise InputError(f"{path}: no {tag}, so no geometry; export the series with its patient geometry")
    orientation = np.array(headers[0].ImageOrientationPatient, float)
    size = (int(headers[0].Rows), int(headers[0].Columns))
    pixel = np.array(headers[0].PixelSpacing, float)
    for path, header in zip(files, headers, strict=True):
        if np.abs(np.array(header.ImageOrientationPatient, float) - orientation).max() > SAME:
            raise InputError(
                f"{path}: orientation {list(header.ImageOrientationPatient)} differs from {files[0].name}'s "
                f"{orientation.tolist()} in series {folder}; keep the slices of one stack (one localizer or one "
                "orientation per folder)"
            )
        if (int(header.Rows), int(header.Columns)) != size:
            raise InputError(
                f"{path}: {header.Rows} x {header.Columns} pixels, {files[0].name} has {size[0]} x {size[1]}, in "
                f"series {folder}; keep the slices of one size in the folder"
            )
        if np.abs(np.array(header.PixelSpacing, float) - pixel).max() > SAME * max(pixel.max(), 1.0):
            raise InputError(f"{path}: pixel spacing differs from {files[0].name}'s; keep the slices of one stack")
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    positions = np.array([np.array(h.ImagePositionPatient, float) for h in headers])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    steps = np.diff(along)
    if len(files) > 1:
        if np.any(steps < 1e-3):
            k = int(np.argmin(steps))
            raise InputError(
                f"{folder}: {files[k].name} and {files[k + 1].name} lie at the same position; the folder holds one "
                "slice twice (or two acquisitions of one series): keep one of each"
            )
        step = float(np.median(steps))
        far = np.abs(steps - step) > GAP * step
        if far.any():
            k = int(np.argmax(far))
            raise InputError(
                f"{folder}: a gap of {steps[k]:.3g} mm between {files[k].name} and {files[k + 1].name} where the "
                f"slices are {step:.3g} mm apart: a slice is missing; export the whole series again"
            )
    else:
        step = float(headers[0].get("SpacingBetweenSlices", 0) or headers[0].get("SliceThickness", 1) or 1)
    direction = np.stack([row, column, normal], axis=1)  # columns: the image axes x, y, z in LPS
    return Series(
        folder=folder,
        files=tuple(files),
        headers=tuple(headers),
        origin=tuple(float(v) for v in positions[0]),
        spacing=(float(pixel[1]), float(pixel[0]), step),
        direction=tuple(float(v) for v in direction.ravel()),
    )


def _pixels(path: Path, folder: Path) -> np.ndarray:
    """A slice's stored values through its rescale, float32 (or its own integers where there is no rescale)."""
    import pydicom

    dataset = pydicom.dcmread(str(path), force=True)
    syntax = dataset.file_meta.TransferSyntaxUID
    try:
        with _quiet():
            array = dataset.pixel_array
    except (NotImplementedError, RuntimeError, ValueError, AttributeError) as error:
        reason = (str(error).strip().splitlines() or [""])[-1].strip()[:100]
        if not getattr(syntax, "is_compressed", False):
            raise InputError(f"{folder}: {path.name}: pixel data unreadable ({reason}); export it again") from None
        name = getattr(syntax, "name", str(syntax))
        raise InputError(
            f"{folder}: {path.name} is compressed as {name}, which no installed decoder reads ({reason}); "
            "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or decompress the series (gdcmconv --raw)"
        ) from None
    if array.ndim != 2:
        raise InputError(f"{folder}: {path.name} is not one grey slice (shape {array.shape}); give a grey series")
    slope, intercept = float(dataset.get("RescaleSlope", 1) or 1), float(dataset.get("RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        return array.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return array


def read_series(folder: Path) -> sitk.Image:
    """The one series of ``folder`` as a 3D image with its geometry (see the module's docstring)."""
    series = scan_series(folder)
    slices = [_pixels(p, series.folder) for p in series.files]
    kind = np.result_type(*[s.dtype for s in slices])
    image = sitk.GetImageFromArray(np.stack(slices).astype(kind))
    image.CopyInformation(series.reference())
    log.debug("%s: series %s, %d slices, spacing %s", folder, series.uid, len(slices), series.spacing)
    return image


def read_seg(path: Path, grid: sitk.Image | None = None) -> sitk.Image:
    """A DICOM SEG file's one segment: uint8 0/1 (binary) or float32 probabilities in [0, 1] (fractional). On the
    grid of its frames, which must then cover the volume slice by slice; or, given ``grid`` (the image it is
    compared with), each frame on the slice of ``grid`` it lies on and 0 on the others, as a SEG that leaves out its
    empty frames needs."""
    import pydicom

    path = Path(path)
    dataset = pydicom.dcmread(str(path))
    if str(dataset.get("SOPClassUID", "")) != SEG_CLASS:
        raise InputError(f"{path}: not a DICOM SEG file; give the SEG (or a mask file) here")
    segments = dataset.get("SegmentSequence", [])
    if len(segments) != 1:
        raise InputError(f"{path}: {len(segments)} segments; give a SEG of one segment (split it in 3D Slicer)")
    frames = dataset.pixel_array
    frames = frames[None] if frames.ndim == 2 else frames
    if str(dataset.SegmentationType) == "FRACTIONAL":
        frames = frames.astype(np.float32) / np.float32(dataset.MaximumFractionalValue)
    else:
        frames = (frames != 0).astype(np.uint8)
    shared = dataset.SharedFunctionalGroupsSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    pixel = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array(
        [
            np.array(f.PlanePositionSequence[0].ImagePositionPatient, float)
            for f in dataset.PerFrameFunctionalGroupsSequence
        ]
    )
    if grid is not None:
        return _on_grid(path, frames, positions, grid)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    steps = np.diff(along[order])
    sources = sum(len(s.get("ReferencedInstanceSequence", [])) for s in dataset.get("ReferencedSeriesSequence", []))
    irregular = len(order) > 1 and (
        np.any(steps < 1e-3) or np.abs(steps - np.median(steps)).max() > GAP * np.median(steps)
    )
    if irregular or sources > len(order):  # fewer frames than the slices it references: empty ones left out
        raise InputError(
            f"{path}: its frames do not cover the volume slice by slice (empty frames left out); write it with every "
            "frame (autoprompt predict does), or give the mask as NIfTI"
        )
    thickness = float(shared.PixelMeasuresSequence[0].get("SliceThickness", 1) or 1)
    step = float(np.median(steps)) if len(order) > 1 else thickness
    image = sitk.GetImageFromArray(frames[order])
    image.SetOrigin(tuple(float(v) for v in positions[order[0]]))
    image.SetSpacing((float(pixel[1]), float(pixel[0]), step))
    image.SetDirection(tuple(float(v) for v in np.stack([orientation[:3], orientation[3:], normal], 1).ravel()))
    return image


def _on_grid(path: Path, frames: np.ndarray, positions: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """``frames`` placed on the slices of the 3D ``grid`` where their positions lie (0 elsewhere)."""
    size = grid.GetSize()
    volume = np.zeros((size[2], size[1], size[0]), frames.dtype)
    for frame, position in zip(frames, positions, strict=True):
        index = np.array(grid.TransformPhysicalPointToContinuousIndex([float(v) for v in position]))
        k = int(np.rint(index[2]))
        if frame.shape != volume.shape[1:] or np.abs(index[:2]).max() > 0.01 or abs(index[2] - k) > 0.01:
            raise InputError(
                f"{path}: a frame at {np.round(position, 2).tolist()} mm lies off the grid it is compared with; give "
                "the SEG of the same series"
            )
        if not 0 <= k < size[2]:
            raise InputError(f"{path}: a frame lies outside the volume it is compared with; give the same series' SEG")
        volume[k] = frame
    image = sitk.GetImageFromArray(volume)
    image.CopyInformation(grid)
    return image


def write_seg(
    values: np.ndarray,
    folder: Path,
    path: Path,
    label: str,
    algorithm: tuple[str, str],
    fractional: bool = False,
) -> None:
    """``values`` (z, y, x on the series' grid, slices in ``scan_series``'s order) written to ``path`` as a DICOM SEG
    of the series in ``folder``: one segment labelled ``label``, made by ``algorithm`` (name, version), binary
    (non-zero is inside) or, ``fractional``, probabilities in [0, 1]; every frame kept, empty ones too, so the SEG
    alone says where its volume ends. It references the series' study, frame of reference and each instance."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs each module it copies at INFO
    series = scan_series(folder)
    sources = [pydicom.dcmread(str(p)) for p in series.files]
    if values.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise ValueError(f"values {values.shape} are not on the grid of {folder}")
    name, version = algorithm
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label[:64],
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=name[:64], family=codes.cid7162.ArtificialIntelligence, version=version[:64]
        ),
    )
    if fractional:
        pixels, kind = np.clip(values, 0, 1).astype(np.float32), hd.seg.SegmentationTypeValues.FRACTIONAL
    else:
        pixels, kind = (values != 0).astype(np.uint8), hd.seg.SegmentationTypeValues.BINARY
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="autoprompt",
        manufacturer_model_name=name[:64],
        software_versions=version[:64],
        device_serial_number="none",
        series_description=f"{label} ({name})"[:64],
        omit_empty_frames=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    seg.save_as(str(tmp))
    tmp.replace(path)
