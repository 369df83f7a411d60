"""Users' own data (``reader: folder``): images with tight boxes drawn by hand, masks optional.

Layout under the dataset root::

    images/      2D images or 3D volumes, any format of ``images.SUFFIXES``, or folders of one DICOM series each;
                 hidden files are ignored
    boxes.csv    image, x_min, y_min, x_max, y_max[, slice]: one box per row, inclusive pixel indices; or, named by
                 ``prepare.<dataset>.boxes``, a COCO or Label Studio JSON export (``autoprompt.data.boxes``)
    masks/       optional: a mask per image under the image's name (or its name with another suffix), on its grid;
                 nonzero is the structure

``image`` is a file name in ``images/``. ``x`` is the column and ``y`` the row of a slice as ``images.as_stack``
cuts it (for a 2D image or an ordinary volume, the image's own columns and rows); ``slice``, needed for volumes only,
is the index along the stack's slice axis (numpy axis 0). A volume may have one box per slice.

Preprocessing is ``predict``'s (``records.preprocessing``): the stack clipped and rescaled as a whole
(``images.intensities``), resampled in-plane to ``spacing`` mm where it is set, cut into slices. Masks and boxes
take the same geometric path as labels: a box is drawn as a filled rectangle on its slice of an empty label volume,
resampled by nearest neighbour with the masks, and fitted to the frame in ``prepare`` (``Case.box_label``); the
index's box is the tight box of what is left of it.

Rows: a 2D image gives one case (id: the file name without its suffix); a volume gives one case per slice with a
box or with some mask (id ``<name>_sliceKK``, subject: the volume's name). ``split: boxes`` (the default) puts every
image with a box in train (its boxed slices only) and the others in test (their slices with some mask); images with
neither are left out, there being nothing to train on or to score. With proportions, every slice with a box or some
mask is read and subjects are dealt as for the other datasets.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoprompt.data.boxes import FORMATS, ROW_FORMAT, Box, read_boxes
from autoprompt.data.dicom import is_seg_file
from autoprompt.data.images import (
    DICOM,
    SUFFIXES,
    Stack,
    as_stack,
    intensities,
    is_image,
    on_grid_of,
    read_image,
    resample_in_plane,
    suffix,
    to_uint8,
)
from autoprompt.data.records import Case, CaseFiles, Reader, preprocessing
from autoprompt.errors import InputError
from autoprompt.settings import FolderPrepare

log = logging.getLogger(__name__)

NAME = "folder"
IMAGES, MASKS, BOXES = "images", "masks", "boxes.csv"


def case_name(path: Path) -> str:
    """A file's name without its format suffix (``.nii.gz`` whole); a DICOM series folder's name as it is."""
    if suffix(path) not in (*SUFFIXES, *DICOM) or path.is_dir():
        return path.name
    return path.name[: len(path.name) - len(suffix(path))]


def mask_files(masks: Path) -> dict[str, list[Path]]:
    """The files of ``masks/`` (DICOM SEG files among them) by name without suffix (empty where there is no such
    folder)."""
    found: dict[str, list[Path]] = {}
    if masks.is_dir():
        for path in sorted(masks.iterdir()):
            if (is_image(path) and path.is_file()) or is_seg_file(path):
                found.setdefault(case_name(path), []).append(path)
    return found


def find_mask(masks: dict[str, list[Path]], image: Path) -> Path | None:
    """The mask of ``image`` among ``masks`` (``mask_files``): ``masks/<its name>``, else the one file of its name
    with another suffix; None if it has none."""
    candidates = masks.get(case_name(image), [])
    exact = [p for p in candidates if p.name == image.name]
    if exact:
        return exact[0]
    if len(candidates) > 1:
        raise InputError(f"{candidates[0]}: {len(candidates)} masks for {image.name}; keep the one named {image.name}")
    return candidates[0] if candidates else None


def boxes_file(root: Path, section: FolderPrepare) -> Path:
    """The boxes of a folder: ``section.boxes`` (``boxes.csv`` by default), relative to ``root`` unless absolute."""
    return Path(root) / section.boxes


def image_files(images: Path) -> dict[str, Path]:
    """The images of the folder ``images`` (files, and folders of one DICOM series; hidden and unsupported files
    left out, the latter warned about) by case name (``case_name``), sorted; refused: none, or two of one name."""
    files = [p for p in sorted(images.iterdir()) if (p.is_file() or is_image(p)) and not p.name.startswith(".")]
    paths = [p for p in files if is_image(p)]  # files, and folders of one DICOM series
    if len(paths) < len(files):
        log.warning("%s: ignored %d files of unsupported formats", images, len(files) - len(paths))
    if not paths:
        raise InputError(f"{images}: no images found; add images in one of the formats {', '.join(SUFFIXES)}")
    by_name: dict[str, Path] = {}
    for path in paths:
        name = case_name(path)
        if name in by_name:
            raise InputError(f"{path}: same name as {by_name[name].name} but another format; rename one of them")
        by_name[name] = path
    return by_name


def case_id(name: str, k: int, is_2d: bool) -> str:
    """A prepared case's id: the image's case name, or ``<name>_sliceKK`` for slice ``k`` of a volume."""
    return name if is_2d else f"{name}_slice{k:02d}"


def find(root: Path, section: FolderPrepare) -> list[CaseFiles]:
    """Every image under ``root/images``, with the boxes file and its mask where it has one (the images are not
    read; the boxes are, and checked)."""
    images, csv_path = root / IMAGES, boxes_file(root, section)
    if not images.is_dir():
        raise InputError(f"{images}: folder not found; put your images (2D or 3D, {', '.join(SUFFIXES)}) there")
    if not csv_path.exists():
        raise InputError(f"{csv_path}: file not found; give {FORMATS} (boxes.csv: one box per row as {ROW_FORMAT})")
    by_name = image_files(images)
    boxes, masks = read_boxes(csv_path, images, section.label), mask_files(root / MASKS)
    out = []
    for name, path in by_name.items():
        mask = find_mask(masks, path)
        out.append(CaseFiles(name, name, (path, csv_path) + ((mask,) if mask is not None else ())))
    log.info(
        "%s: %d images, %d with boxes in %s, %d with masks",
        root,
        len(out),
        sum(path.name in boxes for path in by_name.values()),
        csv_path.name,
        sum(len(files.paths) > 2 for files in out),
    )
    return out


def _labels(array: np.ndarray, stack: Stack, spacing: float | None) -> np.ndarray:
    """Z x H x W label values on the stack's grid -> the grid of the preprocessed slices (nearest neighbour)."""
    image = on_grid_of(array.astype(np.uint8), stack.stack)
    if spacing is not None:
        image = resample_in_plane(image, spacing, sitk.sitkNearestNeighbor)
    return sitk.GetArrayFromImage(image)


def read_mask(path: Path, image: sitk.Image, stack: Stack) -> np.ndarray:
    """Z x H x W uint8 (0/1) of a mask file, checked to have its image's size, in the stack's layout."""
    mask = read_image(path)
    if mask.GetSize() != image.GetSize():
        raise InputError(
            f"{path}: size {mask.GetSize()} differs from its image's {image.GetSize()}; give the mask on the grid "
            "of the image of the same name"
        )
    return (sitk.GetArrayFromImage(as_stack(mask).stack) != 0).astype(np.uint8)


def box_slices(boxes: tuple[Box, ...], stack: Stack, csv_path: Path, image_path: Path) -> dict[int, Box]:
    """Slice index -> box, checked against the stack's size: a volume's boxes need a slice within it, a 2D image's
    boxes none (or 0), and every box must lie inside the image."""
    width, height, depth = stack.stack.GetSize()
    out: dict[int, Box] = {}
    for box in boxes:
        where = f"{csv_path}: {box.where}"
        if box.slice is None and not stack.is_2d:
            raise InputError(f"{where}: {image_path.name} is a volume of {depth} slices; give the box's slice, from 0")
        k = box.slice or 0
        if k >= depth:
            raise InputError(f"{where}: slice {k} is outside {image_path.name} (slices 0 to {depth - 1}); fix slice")
        if k in out:
            raise InputError(f"{where}: a second box for {image_path.name} (first on {out[k].where}); keep one")
        if box.x_max >= width or box.y_max >= height:
            raise InputError(
                f"{where}: box ({box.x_min}, {box.y_min}, {box.x_max}, {box.y_max}) leaves {image_path.name} "
                f"({width} columns x {height} rows); x_max <= {width - 1} and y_max <= {height - 1}"
            )
        out[k] = box
    return out


def draw_boxes(boxes: dict[int, Box], shape: tuple[int, int, int]) -> np.ndarray:
    """Z x H x W uint8: each box a filled rectangle of 1 on its slice."""
    volume = np.zeros(shape, np.uint8)
    for k, box in boxes.items():
        volume[k, box.y_min : box.y_max + 1, box.x_min : box.x_max + 1] = 1
    return volume


def chosen_slices(boxed: set[int], masked: set[int], by_boxes: bool) -> tuple[list[int], str | None]:
    """The slices to read and their split: with ``split: boxes``, the boxed ones (train) or, without boxes, those
    with some mask (test); else every slice with a box or some mask, split later."""
    if not by_boxes:
        return sorted(boxed | masked), None
    if boxed:
        return sorted(boxed), "train"
    return sorted(masked), "test"


def load(files: CaseFiles, section: FolderPrepare) -> list[Case]:
    """One image's slices that have a box or a mask, preprocessed as ``predict`` does (see the module's docstring)."""
    image_path, csv_path, *mask_path = files.paths
    steps = preprocessing(section)
    image = read_image(image_path)
    stack = as_stack(image)
    found = read_boxes(csv_path, image_path.parent, section.label).get(image_path.name, ())
    boxes = box_slices(found, stack, csv_path, image_path)
    shape = sitk.GetArrayViewFromImage(stack.stack).shape
    mask = read_mask(mask_path[0], image, stack) if mask_path else np.zeros(shape, np.uint8)
    slices = to_uint8(intensities(stack.stack, steps))
    labels = _labels(mask, stack, steps.spacing)
    drawn = _labels(draw_boxes(boxes, shape), stack, steps.spacing) if boxes else None
    masked = {k for k in range(labels.shape[0]) if labels[k].any()}
    chosen, split = chosen_slices(set(boxes), masked, section.split == "boxes")
    if steps.spacing is not None:
        spacing = (steps.spacing, steps.spacing)
    else:
        spacing = (float(stack.stack.GetSpacing()[1]), float(stack.stack.GetSpacing()[0]))
    has_mask = {"has_mask": float(bool(mask_path))}
    return [
        Case(
            id=case_id(files.id, k, stack.is_2d),
            subject=files.subject,
            image=slices[k],
            label=labels[k],
            spacing=spacing,
            source=f"{IMAGES}/{image_path.name}",
            split=split,
            extra=has_mask if stack.is_2d else {"slice": float(k), **has_mask},
            box_label=drawn[k] if drawn is not None and k in boxes else None,
        )
        for k in chosen
    ]


READER = Reader(name=NAME, classes={"structure": 1}, find=find, load=load)
