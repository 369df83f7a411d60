"""Image files of any supported format as stacks of slices, brought to the prepared frame and back.

Every input, 2D image or 3D volume, is handled as a *stack*: a 3D SimpleITK image whose third axis (numpy axis 0)
runs over the slices that are segmented one by one. A 2D image is a stack of one slice; a 3D image with a
singleton axis (a 2D image stored in 3D, as CAMUS does) has that axis moved last; any other volume is cut along its
third axis, the slice axis of ACDC's and most scanners' files.

Forward (``frame_slices``): intensities clipped and rescaled over the whole stack, then, for models of volumes,
in-plane resampling to the trained spacing on the stack's own grid (same direction and field of view), then each
slice fitted to the S x S frame. Backward (``to_input_grid``): each slice's S x S values through the inverse fit,
the stack resampled back onto the input's voxel grid, and the input's own layout and header restored.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

from autoprompt.data import dicom
from autoprompt.data.preprocess import Geometry, Preprocessing, clip_rescale, fit_image, from_frame
from autoprompt.errors import InputError

log = logging.getLogger(__name__)

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
PICTURES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # 2D formats without a physical header
NIFTI = (".nii", ".nii.gz")
DICOM = (".dcm", ".dicom", ".ima")
LUMA = (0.299, 0.587, 0.114)  # RGB -> grey, as OpenCV's IMREAD_GRAYSCALE
DICOM_FIX = "give the folder that holds the series' files: a folder of one DICOM series is read as one volume"


def suffix(path: Path) -> str:
    """The format suffix of a file name, ``.nii.gz`` included; lower case."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def unsupported(name: str | Path) -> str:
    """What to do with a file of a format not read here."""
    return DICOM_FIX if suffix(Path(name)) in DICOM else f"give one of {', '.join(SUFFIXES)}"


def is_image(path: Path) -> bool:
    """An image file of ``SUFFIXES``, or a folder of one DICOM series (``dicom.is_series_folder``)."""
    path = Path(path)
    if path.is_dir():
        return dicom.is_series_folder(path, SUFFIXES)
    return path.is_file() and suffix(path) in SUFFIXES and not path.name.startswith(".")


def read_image(path: Path) -> sitk.Image:
    """A 2D or 3D image file as one grey channel (colour converted as OpenCV does); a folder of one DICOM series as
    its volume, and a DICOM SEG file as its mask (``autoprompt.data.dicom``). Refused in one line naming the file: a
    format it cannot read (a lone DICOM image file: ``DICOM_FIX``), a corrupt or truncated file (NIfTI's data are
    checked whole, which SimpleITK does not), and voxels that are NaN or infinite."""
    path = Path(path)
    if path.is_dir():
        image = dicom.read_series(path)
        check_whole(path, image)
        return image
    kind = suffix(path)
    if kind in DICOM or (kind not in SUFFIXES and dicom.is_dicom_file(path)):
        if dicom.is_seg_file(path):
            return dicom.read_seg(path)
        raise InputError(f"{path}: one file of a DICOM series; {DICOM_FIX}")
    if kind not in SUFFIXES:
        raise InputError(f"{path}: unsupported format; {unsupported(path)}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        image = _read_picture(path) if kind in PICTURES else None
        if image is None:
            raise InputError(
                f"{path}: unreadable (corrupt, truncated, or its data file is missing); replace it or remove it"
            ) from None
    check_whole(path, image)
    channels = image.GetNumberOfComponentsPerPixel()
    if channels > 1:
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        grey = sitk.GetImageFromArray(array[..., :3] @ np.array(LUMA[:channels], np.float32)[: min(3, channels)])
        grey.CopyInformation(image)
        image = grey
    if image.GetDimension() not in (2, 3):
        raise InputError(f"{path}: a {image.GetDimension()}D image; give a 2D image or a 3D volume")
    return image


def _read_picture(path: Path) -> sitk.Image | None:
    """A picture that SimpleITK does not read (a grey PNG with an alpha channel), through OpenCV: its grey or colour
    channels, the alpha channel left out; None where OpenCV cannot read it either."""
    picture = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if picture is None:
        return None
    if picture.ndim == 3:
        picture = cv2.cvtColor(picture[..., :3], cv2.COLOR_BGR2GRAY)
    return sitk.GetImageFromArray(picture)


def check_whole(path: Path, image: sitk.Image) -> None:
    """Refuse a NIfTI file whose data stop short (SimpleITK fills the missing voxels with zeros; nibabel reads the
    data whole and notices), and an image with NaN or infinite voxels (they would turn the percentile clip into NaN);
    warn about a constant image, which has nothing to segment."""
    array = sitk.GetArrayViewFromImage(image)
    if suffix(path) in NIFTI:  # SimpleITK also reads infinite NIfTI voxels as other numbers: nibabel's data are checked
        import nibabel

        try:
            array = np.asanyarray(nibabel.load(str(path)).dataobj)
        except nibabel.filebasedimages.ImageFileError as error:  # not gzip data under a .nii.gz name, say
            reason = str(error).splitlines()[0][:80]
            fix = "rename it .nii" if suffix(path) == ".nii.gz" else "replace it or remove it"
            raise InputError(f"{path}: not a NIfTI file as its name says ({reason}); {fix}") from None
        except (OSError, EOFError, ValueError, zlib.error) as error:
            reason = str(error).splitlines()[0][:80]
            raise InputError(f"{path}: truncated or corrupt NIfTI ({reason}); replace it or remove it") from None
    if array.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(
                f"{path}: {bad} voxels are NaN or infinite; set them to the background value, or remove the file"
            )
    if array.size and array.min() == array.max():
        log.warning("%s: every voxel is %s: nothing to segment, its mask will be empty", path, array.flat[0])


@dataclass(frozen=True)
class Stack:
    """An input as slices. ``image``: the input as read; ``stack``: 3D, slices along its third axis; ``order``: the
    axis permutation that made ``stack`` from a 3D ``image`` (None for a 2D image, a stack of one slice)."""

    image: sitk.Image
    stack: sitk.Image
    order: tuple[int, int, int] | None

    @property
    def slices(self) -> int:
        return self.stack.GetSize()[2]

    @property
    def is_2d(self) -> bool:
        """A picture: a 2D image, or a 3D image with one slice."""
        return self.slices == 1


def as_stack(image: sitk.Image) -> Stack:
    """``image`` as a stack of slices (see the module's docstring)."""
    if image.GetDimension() == 2:
        return Stack(image, sitk.JoinSeries(image), None)
    size = image.GetSize()
    order = (0, 1, 2)
    if size[2] != 1 and 1 in size[:2]:  # a 2D image stored in 3D with its singleton axis first or second
        singleton = size.index(1)
        order = (*(a for a in range(3) if a != singleton), singleton)
    stack = sitk.PermuteAxes(image, order) if order != (0, 1, 2) else image
    return Stack(image, stack, order)


def stack_size(path: Path) -> tuple[int, int, int]:
    """(columns, rows, slices) of an image file as ``as_stack`` cuts it, from its header alone where SimpleITK can
    read one (boxes are checked against every image of a folder without reading their voxels); otherwise from the
    whole image, whose reading refuses a bad file in one line (``read_image``)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        size = tuple(int(v) for v in reader.GetSize())
    except RuntimeError:
        size = ()
    if len(size) == 2:
        return size[0], size[1], 1
    if len(size) != 3:  # unreadable header (a grey PNG with alpha, a bad file), or not 2D or 3D
        return as_stack(read_image(path)).stack.GetSize()
    if size[2] != 1 and 1 in size[:2]:  # as_stack moves a singleton axis last
        singleton = size.index(1)
        return (*(size[a] for a in range(3) if a != singleton), 1)
    return size


def resample_in_plane(image: sitk.Image, spacing: float, interpolator: int) -> sitk.Image:
    """A 3D ``image`` resampled to ``spacing`` mm along its first two axes, on its own grid: same direction, same
    third axis, same field of view (the first voxel edge stays put; the far edge moves by under half a new pixel)."""
    old = np.array(image.GetSpacing())
    new = np.array([spacing, spacing, old[2]])
    size = np.maximum(np.rint(np.array(image.GetSize()) * old / new), 1).astype(int)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ ((new - old) / 2)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize(size.tolist())
    resampler.SetOutputSpacing(new.tolist())
    resampler.SetOutputOrigin(origin.tolist())
    resampler.SetOutputDirection(image.GetDirection())
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(0)
    resampler.SetUseNearestNeighborExtrapolator(True)  # border pixels take the edge value, not 0
    return resampler.Execute(image)


def on_grid_of(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A numpy array (z, y, x) as an image with ``reference``'s spacing, origin and direction."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def intensities(stack: sitk.Image, preprocessing: Preprocessing) -> sitk.Image:
    """The stack clipped to its percentiles, rescaled to [0, 255] (float32), then resampled in-plane for volumes."""
    scaled = clip_rescale(sitk.GetArrayFromImage(stack), *preprocessing.clip).astype(np.float32)
    scaled_image = on_grid_of(scaled, stack)
    if preprocessing.spacing is None:
        return scaled_image
    return resample_in_plane(scaled_image, preprocessing.spacing, sitk.sitkLinear)


def to_uint8(image: sitk.Image) -> np.ndarray:
    """Z x H x W uint8 of a float image in [0, 255] (rounded, clipped)."""
    return np.rint(np.clip(sitk.GetArrayFromImage(image), 0, 255)).astype(np.uint8)


@dataclass
class Framed:
    """A stack in the prepared frame: ``slices`` Z x S x S uint8, the ``geometry`` of each slice, and the ``grid``
    that the slices were cut from (the stack resampled in-plane, or the stack itself)."""

    slices: np.ndarray
    geometries: list[Geometry]
    grid: sitk.Image


def frame_slices(stack: Stack, preprocessing: Preprocessing) -> Framed:
    """Every slice of ``stack`` preprocessed as the model's training data was, in the S x S frame."""
    grid = intensities(stack.stack, preprocessing)
    framed, geometries = [], []
    for plane in to_uint8(grid):
        image, geometry = fit_image(plane, preprocessing.crop, preprocessing.fit)
        framed.append(image)
        geometries.append(geometry)
    return Framed(np.stack(framed), geometries, grid)


def to_input_grid(values: np.ndarray, framed: Framed, stack: Stack) -> np.ndarray:
    """Z x S x S values of the frame (probabilities) -> the input's own grid and layout: an H x W array for a 2D
    image, the input's (z, y, x) array for a volume. Linear interpolation, 0 outside what the frame kept."""
    assert values.shape == framed.slices.shape, f"values {values.shape} != framed slices {framed.slices.shape}"
    shape = framed.grid.GetSize()[1::-1]
    on_grid = np.stack([from_frame(v, g, shape) for v, g in zip(values, framed.geometries, strict=True)])
    image = on_grid_of(on_grid.astype(np.float32), framed.grid)
    if framed.grid.GetSize() != stack.stack.GetSize() or framed.grid.GetSpacing() != stack.stack.GetSpacing():
        image = sitk.Resample(image, stack.stack, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    if stack.order is None:
        return array[0]
    if stack.order != (0, 1, 2):
        array = np.transpose(array, _numpy_axes(stack.order))
    return array


def _numpy_axes(order: tuple[int, int, int]) -> tuple[int, int, int]:
    """The numpy transpose that undoes ``sitk.PermuteAxes(image, order)`` on (z, y, x) arrays."""
    inverse = [order.index(axis) for axis in range(3)]  # stack axis of each image axis (x, y, z)
    return tuple(2 - inverse[2 - k] for k in range(3))


def write_like(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    """``array`` (the reference's numpy layout) written to ``path`` with the reference's spacing, origin and
    direction; the format follows the suffix."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path), useCompression=suffix(path) not in PICTURES)
