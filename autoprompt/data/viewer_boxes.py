"""Boxes drawn on volumes in a viewer: 3D Slicer ROI markups and napari Shapes layers, as ``Box`` records.

- **3D Slicer** (``.mrk.json``, a markups file with ROIs): each ROI's ``center`` and ``size`` (and ``orientation``,
  the ROI's axes) in mm, in the file's ``coordinateSystem`` (``LPS``, Slicer's default on save, or ``RAS``). The
  ROI's eight corners are mapped through the volume's geometry (origin, spacing, direction) to continuous voxel
  indices of its stack of slices; the box is every pixel the ROI touches in the slice plane. An ROI thin along the
  slice axis (under one slice thick: Slicer draws it so in a slice view) is a box on the slice its centre lies on;
  one thick along the slice axis, or thin along another, is refused. Slicer saves each ROI in a file of its own, so
  ``--boxes`` may name a folder of them. An ROI belongs to the volume whose extent holds its centre; where several
  volumes share a frame of reference, the file named after its volume (``sax.mrk.json``, ``sax_3.mrk.json``) picks it.
- **napari** (a Shapes layer saved as CSV: ``index, shape-type, vertex-index, axis-0, axis-1[, axis-2]``): each
  ``rectangle``'s vertices in the layer's data coordinates, pixel indices of the image with axis 0 the slice (a 3D
  layer) and the last two the row and column, as numpy holds the volume that ``images.as_stack`` cuts (SimpleITK's
  array). The CSV names no image: it is the image the file is named after (``sax.csv``), or the folder's only image.

Pixel centres lie on whole indices in both viewers, so a continuous box from ``a`` to ``b`` covers pixels
``floor(a + 0.5)`` to ``ceil(b + 0.5) - 1``. Boxes are returned in pixel indices, not checked against the image's
size: that is the boxes' shared check, which every format goes through.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoprompt.data import dicom
from autoprompt.data.boxes import Box, _pixels
from autoprompt.data.images import as_stack, is_image, suffix
from autoprompt.errors import InputError

SLICER = ".mrk.json"
NAPARI = ("index", "shape-type", "vertex-index", "axis-0", "axis-1")
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
THIN = 1.0  # an ROI under one voxel thick along an axis is thin along it


def _is_napari(path: Path) -> bool:
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = [c.strip() for c in next(csv.reader(handle), [])]
    return all(c in header for c in NAPARI)


def _exports(path: Path) -> list[Path]:
    """The viewer exports ``path`` is or holds (a folder: its ``.mrk.json`` and napari ``.csv`` files)."""
    if path.is_dir():
        return [p for p in sorted(path.iterdir()) if p.name.lower().endswith(SLICER) or _is_napari(p)]
    return [path] if path.name.lower().endswith(SLICER) or _is_napari(path) else []


def is_viewer_export(path: Path) -> bool:
    """A Slicer markups file, a napari Shapes CSV, or a folder of them."""
    return bool(_exports(Path(path)))


def viewer_rows(path: Path, images: Path) -> list[tuple[str, Box]]:
    """Every box of the exports at ``path`` as (image name in ``images``, Box)."""
    path = Path(path)
    candidates = [p for p in sorted(Path(images).iterdir()) if is_image(p) and not p.name.startswith(".")]
    grids: dict[Path, sitk.Image] = {}
    rows = []
    for export in _exports(path):
        if export.name.lower().endswith(SLICER):
            rows += _slicer_rows(export, candidates, grids)
        else:
            rows += _napari_rows(export, candidates)
    return rows


def _stem(path: Path) -> str:
    name = path.name
    for end in (SLICER, ".csv"):
        if name.lower().endswith(end):
            return name[: -len(end)]
    return name


def _image_stem(path: Path) -> str:
    return path.name if path.is_dir() else path.name[: len(path.name) - len(suffix(path))]


def _named(export: Path, candidates: list[Path]) -> list[Path]:
    """The images that ``export``'s file name names: its stem, or its stem up to a ``_N`` or ``-N`` counter."""
    stem = _stem(export)
    return [c for c in candidates if stem == _image_stem(c) or stem.startswith(_image_stem(c) + "_")]


def _grid(path: Path, grids: dict[Path, sitk.Image]) -> sitk.Image:
    """The stack of slices of ``path``'s volume (headers only), with its geometry."""
    if path not in grids:
        if path.is_dir():
            reference = dicom.scan_series(path).reference()
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                raise InputError(f"{path}: unreadable; replace it or remove it") from None
            reference = sitk.Image(list(reader.GetSize()), sitk.sitkUInt8)
            reference.SetOrigin(reader.GetOrigin())
            reference.SetSpacing(reader.GetSpacing())
            reference.SetDirection(reader.GetDirection())
        grids[path] = as_stack(reference).stack if reference.GetDimension() == 3 else None
    return grids[path]


def _inside(grid: sitk.Image, index: np.ndarray) -> bool:
    return bool(np.all(index >= -0.5) and np.all(index <= np.array(grid.GetSize()) - 0.5))


def _slicer_rows(export: Path, candidates: list[Path], grids: dict[Path, sitk.Image]) -> list[tuple[str, Box]]:
    try:
        markups = json.loads(export.read_text(encoding="utf-8"))["markups"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"{export}: not a 3D Slicer markups file ({error.__class__.__name__}); save it again"
        ) from None
    rois = [m for m in markups if isinstance(m, dict) and m.get("type") == "ROI"]
    if not rois:
        kinds = sorted({str(m.get("type")) for m in markups if isinstance(m, dict)})
        raise InputError(f"{export}: no ROI in it (markups of type {kinds}); draw the box as an ROI markup")
    volumes = [c for c in candidates if _grid(c, grids) is not None]
    out = []
    for number, roi in enumerate(rois, 1):
        where = f"{export.name}: ROI {number}" if len(rois) > 1 else export.name
        try:
            centre, size = np.array(roi["center"], float), np.array(roi["size"], float)
            axes = np.array(roi.get("orientation", np.eye(3).ravel()), float).reshape(3, 3)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{export}: {where}: no center and size; save the ROI again from 3D Slicer") from None
        if centre.shape != (3,) or size.shape != (3,):
            raise InputError(f"{export}: {where}: center and size are not 3D points; save the ROI again")
        if roi.get("coordinateUnits", "mm") != "mm":
            raise InputError(f"{export}: {where}: units {roi['coordinateUnits']!r}; save it in mm")
        system = str(roi.get("coordinateSystem", "LPS")).upper()
        if system not in ("LPS", "RAS"):
            raise InputError(f"{export}: {where}: coordinate system {system!r}; save it in LPS or RAS")
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        corners = centre + (signs * size / 2) @ axes.T
        if system == "RAS":
            corners, centre = corners @ LPS_FROM_RAS.T, LPS_FROM_RAS @ centre
        holding = [v for v in volumes if _inside(_grid(v, grids), np.array(_index(_grid(v, grids), centre)))]
        if len(holding) > 1:
            holding = [v for v in holding if v in _named(export, candidates)] or holding
        if not holding:
            raise InputError(
                f"{export}: {where}: centre {np.round(centre, 1).tolist()} mm (LPS) lies in none of the volumes in "
                f"{export.parent if not volumes else volumes[0].parent}; draw it on a volume of images/ (is the "
                "coordinate system right?)"
            )
        if len(holding) > 1:
            names = ", ".join(v.name for v in holding)
            raise InputError(
                f"{export}: {where}: lies in {names}; name the file after its volume ({_image_stem(holding[0])}"
                f"{SLICER})"
            )
        volume = holding[0]
        grid = _grid(volume, grids)
        index = np.array([_index(grid, c) for c in corners])
        low, high = index.min(axis=0), index.max(axis=0)
        extent = high - low
        if extent[2] > THIN:
            thin = [name for axis, name in ((0, "columns"), (1, "rows")) if extent[axis] <= THIN]
            if thin:
                raise InputError(
                    f"{export}: {where}: thin across the {thin[0]} of {volume.name}, not across its slices; draw the "
                    "ROI in the view of its slices"
                )
            first, last = int(np.floor(low[2] + 0.5)), int(np.ceil(high[2] + 0.5)) - 1
            raise InputError(
                f"{export}: {where}: spans slices {max(first, 0)} to {last} of {volume.name}; make it thin across "
                "the slices (size 0 there) and draw one ROI per slice"
            )
        k = int(np.floor((low[2] + high[2]) / 2 + 0.5))
        corners_px = _pixels(f"{export}: {where}", low[0] + 0.5, low[1] + 0.5, extent[0], extent[1])
        out.append((volume.name, Box(where, k, *corners_px)))
    return out


def _index(grid: sitk.Image, point: np.ndarray) -> tuple[float, float, float]:
    return grid.TransformPhysicalPointToContinuousIndex([float(v) for v in point])


def _napari_rows(export: Path, candidates: list[Path]) -> list[tuple[str, Box]]:
    named = _named(export, candidates)
    if len(named) == 1:
        image = named[0]
    elif len(candidates) == 1:
        image = candidates[0]
    else:
        raise InputError(
            f"{export}: a napari CSV names no image and the folder holds {len(candidates)}; name the file after its "
            "image (sax.csv for images/sax)"
        )
    try:
        with export.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)
            axes = sorted(c for c in reader.fieldnames or [] if c.startswith("axis-"))
            shapes: dict[str, list[dict]] = {}
            for row in reader:
                shapes.setdefault(row["index"], []).append(row)
    except (OSError, UnicodeDecodeError, csv.Error, KeyError) as error:
        raise InputError(f"{export}: unreadable napari CSV ({error}); save the Shapes layer again") from None
    if len(axes) not in (2, 3):
        raise InputError(f"{export}: {len(axes)} axes; give a 2D or 3D Shapes layer (one time point)")
    out = []
    for index, rows in shapes.items():
        where = f"{export.name}: shape {index}"
        kind = rows[0].get("shape-type", "")
        if kind != "rectangle":
            raise InputError(f"{export}: {where}: a {kind}, not a rectangle; draw boxes with the rectangle tool")
        try:
            points = np.array([[float(r[a]) for a in axes] for r in rows])
        except (TypeError, ValueError):
            raise InputError(f"{export}: {where}: a vertex without numbers; save the layer again") from None
        k = None
        if len(axes) == 3:
            if np.ptp(points[:, 0]) > 0.5:
                raise InputError(f"{export}: {where}: its corners lie on several slices; draw it on one slice")
            k = int(np.floor(points[:, 0].mean() + 0.5))
            if k < 0:  # numpy would take it from the volume's far end
                raise InputError(f"{export}: {where}: on slice {k}; draw it on a slice of the volume (from 0)")
        low, high = points[:, -2:].min(axis=0), points[:, -2:].max(axis=0)  # (row, column)
        corners = _pixels(f"{export}: {where}", low[1] + 0.5, low[0] + 0.5, high[1] - low[1], high[0] - low[0])
        out.append((image.name, Box(where, k, *corners)))
    return out
