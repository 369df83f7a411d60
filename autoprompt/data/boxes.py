"""Tight boxes as users draw them: ``boxes.csv``, or the export of an annotation tool (COCO JSON, Label Studio JSON).

Every format becomes the same ``Box`` records, image file name -> its boxes, in inclusive pixel indices (x: column,
y: row). One box per image, or per slice of a volume; the image must be in the folder's ``images/``.

- ``boxes.csv``: ``image,x_min,y_min,x_max,y_max[,slice]``, inclusive pixel indices; ``slice`` for volumes only.
- COCO (``{"images": [...], "annotations": [...], "categories": [...]}``): ``bbox`` is ``[x, y, width, height]`` in
  pixels, continuous, pixel ``i`` spanning ``[i, i + 1)``: the box covers pixels ``floor(x)`` to
  ``ceil(x + width) - 1``. ``file_name`` is matched by its base name.
- Label Studio (a JSON export: a list of tasks with ``data`` and ``annotations``; or the JSON-MIN export): each
  ``rectanglelabels`` result gives ``x, y, width, height`` in percent of ``original_width`` and ``original_height``.
  The image is named by its URL's last part, without Label Studio's upload prefix (``1a2b3c4d-``) where the folder
  holds the name without it. Rotated rectangles are refused; of several annotations of a task, the first that was not
  cancelled is read. A task whose data names its file (``image_file``, and ``slice`` for a volume's slice: the tasks
  that ``autoprompt suggest`` writes, shown as PNG renders) gives a box on that file and slice instead.
- A ``boxes.csv`` row with an image and no corners (``autoprompt suggest``'s template, not yet filled) is refused
  in one line: draw the box or delete the row.

Where an export holds boxes of several labels, ``label`` picks one (``prepare.<dataset>.label``, ``--label``);
``boxes.csv`` has no labels, so a label with it is refused.

Every format's boxes go through ``validate``, which refuses, in one line naming the boxes file, the entry and the fix:
an image that is not there or not read here; a box whose corners are swapped, or under ``MIN_SIDE`` pixels wide or
high; a box starting or reaching outside its image (read from the image's header, not its voxels); a volume's box
without a slice, or with a slice outside it; an export whose stated image size (COCO ``width``/``height``, Label
Studio ``original_width``/``original_height``) differs from the file's by more than ``SIZE_TOLERANCE``. The COCO
and Label Studio readers refuse a zero or negative width or height first. Nothing is clamped: a box the tool cannot
place as drawn is the user's to fix. (The minimum size after the fit to the frame: ``prepare.check_fitted_box``.)
Boxes drawn on volumes in 3D Slicer (ROI markups) or napari (Shapes CSV) are read by ``viewer_boxes`` and
checked by the same ``validate``; a DICOM series may be named by its folder or its SeriesInstanceUID.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from autoprompt.data.dicom import folder_of_series
from autoprompt.data.images import is_image, stack_size, unsupported
from autoprompt.errors import InputError

COLUMNS = ("image", "x_min", "y_min", "x_max", "y_max")
SLICE = "slice"
ROW_FORMAT = "image,x_min,y_min,x_max,y_max[,slice] (inclusive pixel indices)"
FORMATS = (
    "boxes.csv, a COCO JSON or a Label Studio JSON export, 3D Slicer ROIs (.mrk.json, or a folder of them) or a "
    "napari Shapes CSV"
)
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio renames uploads to <8 hex digits>-<name>
MIN_SIDE = 2  # pixels: a narrower or lower box is a click, not a box around a structure
SIZE_TOLERANCE = 1.0  # pixels: an export's stated image size may differ from the file's by its rounding
STUDIO_FILE, STUDIO_SLICE = "image_file", "slice"  # a Label Studio task's data: the file in images/, its slice


@dataclass(frozen=True)
class Box:
    """One box: ``where`` it was read (``line 3``, ``annotation 17``), its slice (None where not given) and its
    inclusive pixel indices (x: column, y: row)."""

    where: str
    slice: int | None
    x_min: int
    y_min: int
    x_max: int
    y_max: int


def read_boxes(path: Path, images: Path, label: str | None = None) -> dict[str, tuple[Box, ...]]:
    """The boxes of ``path`` (any format of the module's docstring) as image name -> its boxes, checked against the
    images in ``images``; read once per version of the file."""
    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise InputError(f"{path}: boxes file not found; give {FORMATS}")
    parts = sorted(path.iterdir()) if path.is_dir() else [path]  # a folder of viewer exports: each file's version
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in parts if p.is_file())
    if Path(images).is_dir():  # an image added or removed: names are checked again, viewer boxes mapped again
        stamp += (Path(images).stat().st_mtime_ns,)
    return _read(path.resolve(), Path(images).resolve(), label, stamp)


@functools.lru_cache(maxsize=8)
def _read(path: Path, images: Path, label: str | None, _stamp: tuple) -> dict[str, tuple[Box, ...]]:
    from autoprompt.data.viewer_boxes import is_viewer_export, viewer_rows

    stated: dict[str, tuple[float, float]] = {}
    if label is not None and (path.suffix.lower() == ".csv" or is_viewer_export(path)):
        raise InputError(
            f"{path}: {path.name} has no labels, so label {label!r} picks nothing; leave --label (or prepare's "
            "label) out, or give a COCO or Label Studio export"
        )
    if is_viewer_export(path):  # 3D Slicer ROIs, napari Shapes CSV (autoprompt.data.viewer_boxes)
        rows = viewer_rows(path, images)
    elif path.suffix.lower() == ".csv":
        rows = _csv_rows(path, images)
    elif path.suffix.lower() == ".json":
        rows = _json_rows(path, images, label, stated)
    else:
        raise InputError(f"{path}: unknown boxes format; give {FORMATS}")
    rows = validate(path, rows, images, stated)
    boxes: dict[str, list[Box]] = {}
    seen: dict[tuple[str, int | None], str] = {}
    for name, box in rows:
        key = (name, box.slice)
        if key in seen:
            shown = name if box.slice is None else f"{name} slice {box.slice}"
            raise InputError(
                f"{path}: {box.where}: a second box for {shown} (first on {seen[key]}); keep one box per image, or "
                "per slice of a volume"
            )
        seen[key] = box.where
        boxes.setdefault(name, []).append(box)
    if not boxes:
        raise InputError(f"{path}: no boxes in it; draw a box on each training image ({FORMATS})")
    return {name: tuple(found) for name, found in boxes.items()}


def validate(
    source: Path,
    rows: Sequence[tuple[str, Box]],
    images: Path,
    stated: Mapping[str, tuple[float, float]] | None = None,
) -> list[tuple[str, Box]]:
    """``rows`` (image file name in ``images``, its ``Box``), read from the boxes file ``source``, checked against
    their images; returned with a series' SeriesInstanceUID replaced by its folder's name. Every box format's
    reader ends here, so that a box means the same whatever
    drew it. Refused, in one line naming ``source``, the box's ``where`` and the fix:

    - an image not in ``images``, or of a format not read here;
    - corners swapped (``x_min > x_max`` or ``y_min > y_max``);
    - a side under ``MIN_SIDE`` pixels (a 1-pixel box trains nothing: it is a click, not a box);
    - a box starting before pixel 0 or reaching past the image's last column or row;
    - a volume's box without a slice, or with a slice past its last; a 2D image's box with a slice other than 0;
    - ``stated`` (``where`` -> the image's width and height as the export states them): a stated size more than
      ``SIZE_TOLERANCE`` pixels off the file's.

    Image sizes come from the files' headers (``images.stack_size``), not their voxels.
    """
    stated, sizes, checked = stated or {}, {}, []
    for named, box in rows:
        name = folder_of_series(images, named) or named  # a DICOM series named by its SeriesInstanceUID
        checked.append((name, box))
        where = f"{source}: {box.where}"
        path = Path(images) / name
        if not is_image(path):
            if path.is_file():
                raise InputError(f"{where}: {path} is not in a format read here; {unsupported(name)}")
            raise InputError(f"{where}: {path} not found; fix the name (with its suffix) or add the image")
        corners = f"({box.x_min}, {box.y_min}, {box.x_max}, {box.y_max})"
        if box.x_min > box.x_max or box.y_min > box.y_max:
            raise InputError(f"{where}: box {corners} has min > max; swap the corners")
        if name not in sizes:  # one header read per image, however many of its slices have a box
            sizes[name] = stack_size(path)
        width, height, depth = sizes[name]
        if box.where in stated:
            said_width, said_height = stated[box.where]
            if abs(said_width - width) > SIZE_TOLERANCE or abs(said_height - height) > SIZE_TOLERANCE:
                raise InputError(
                    f"{where}: the export says {name} is {said_width:g} x {said_height:g} pixels, but the file is "
                    f"{width} x {height}; export the boxes again from this image (boxes drawn on another size "
                    "would be misplaced)"
                )
        if box.x_min < 0 or box.y_min < 0:
            raise InputError(
                f"{where}: box {corners} starts outside {name} (x_min and y_min are at least 0); draw it inside the "
                "image"
            )
        if box.x_max >= width or box.y_max >= height:
            raise InputError(
                f"{where}: box {corners} leaves {name} ({width} columns x {height} rows); x_max <= {width - 1} and "
                f"y_max <= {height - 1}"
            )
        box_width, box_height = box.x_max - box.x_min + 1, box.y_max - box.y_min + 1
        if min(box_width, box_height) < MIN_SIDE:
            raise InputError(
                f"{where}: box {corners} of {name} is {box_width} x {box_height} pixels; draw a box around the whole "
                f"structure, at least {MIN_SIDE} pixels wide and high"
            )
        if box.slice is None and depth > 1:
            raise InputError(f"{where}: {name} is a volume of {depth} slices; give the box's slice, from 0")
        if box.slice is not None and box.slice >= depth:
            raise InputError(f"{where}: slice {box.slice} is outside {name} (slices 0 to {depth - 1}); fix slice")
    return checked


# ---------------------------------------------------------------------------------------------------------- CSV
def _integer(value: str, column: str, where: str) -> int:
    """A CSV cell as a non-negative integer (``12`` or ``12.0``)."""
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{where}: {column} is {value!r}; give a whole number of pixels") from None
    if not number.is_integer() or number < 0:
        raise InputError(f"{where}: {column} is {value!r}; give a whole number of pixels >= 0")
    return int(number)


def _csv_rows(path: Path, images: Path) -> list[tuple[str, Box]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)
            header = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = header
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: unreadable ({error}); write it as {ROW_FORMAT}") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InputError(f"{path}: columns {missing} missing (header {header}); give a header {ROW_FORMAT}")
    out = []
    for line, row in rows:
        where = f"line {line}"
        name = (row.get("image") or "").strip()
        if not name or Path(name).name != name:
            raise InputError(f"{path}: {where}: image is {name!r}; give the file name of an image in {images}/")
        if not any((row.get(c) or "").strip() for c in COLUMNS[1:]):  # a template's row, not filled yet
            cell = (row.get(SLICE) or "").strip()
            shown = f"{name} slice {cell}" if cell else name
            raise InputError(f"{path}: {where}: no box yet for {shown}; draw the box or delete the row")
        corners = tuple(_integer((row.get(c) or "").strip(), c, f"{path}: {where}") for c in COLUMNS[1:])
        cell = (row.get(SLICE) or "").strip()
        k = _integer(cell, SLICE, f"{path}: {where}") if cell else None
        out.append((name, Box(where, k, *corners)))
    return out


# --------------------------------------------------------------------------------------------------------- JSON
def _pixels(where: str, left: float, top: float, width: float, height: float) -> tuple[int, int, int, int]:
    """A continuous box (pixel ``i`` spans ``[i, i + 1)``) -> the inclusive indices of the pixels it covers, not
    clamped (``validate`` refuses what leaves the image). A zero or negative width or height is refused here: it is
    no box at all, and its indices would read as swapped corners."""
    if not all(math.isfinite(v) for v in (left, top, width, height)):
        raise InputError(
            f"{where}: box ({left:g}, {top:g}, {width:g}, {height:g}) is not a number everywhere; export it again"
        )
    if not width > 0 or not height > 0:
        raise InputError(
            f"{where}: box of width {width:g} and height {height:g}; draw a box with a positive width and height"
        )
    x_min, y_min = math.floor(left + 1e-6), math.floor(top + 1e-6)
    x_max, y_max = math.ceil(left + width - 1e-6) - 1, math.ceil(top + height - 1e-6) - 1
    return x_min, y_min, max(x_max, x_min), max(y_max, y_min)


def _json_rows(
    path: Path, images: Path, label: str | None, stated: dict[str, tuple[float, float]]
) -> list[tuple[str, Box]]:
    """The rows of a COCO or Label Studio export; ``stated`` gets each box's image size as the export states it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path}: unreadable JSON ({error.__class__.__name__}: {error}); export it again") from None
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return _coco_rows(path, data, images, label, stated)
    if isinstance(data, list):
        return _label_studio_rows(path, data, images, label, stated)
    raise InputError(f"{path}: neither a COCO file (images, annotations) nor a Label Studio export (a list of tasks)")


def _one_label(path: Path, found: set[str], label: str | None) -> str | None:
    """The label to keep: ``label``, or the only one there is; refused where several are there and none is chosen."""
    if label is not None:
        if label not in found:
            raise InputError(f"{path}: no boxes labelled {label!r} (labels: {sorted(found)}); give one of them")
        return label
    if len(found) > 1:
        raise InputError(f"{path}: boxes of several labels {sorted(found)}; pick one with --label (or prepare's label)")
    return None


def _coco_rows(
    path: Path, data: dict, images: Path, label: str | None, stated: dict[str, tuple[float, float]]
) -> list[tuple[str, Box]]:
    try:
        files = {int(image["id"]): Path(str(image["file_name"])).name for image in data["images"]}
        sizes = {
            int(image["id"]): (float(image["width"]), float(image["height"]))
            for image in data["images"]
            if image.get("width") is not None and image.get("height") is not None
        }
        names = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
        annotations = [(int(a["id"]) if "id" in a else i, a) for i, a in enumerate(data["annotations"])]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: not a COCO file ({error.__class__.__name__}: {error}); export it again") from None
    chosen = _one_label(path, {names.get(a.get("category_id"), "") for _, a in annotations}, label)
    out = []
    for number, annotation in annotations:
        if chosen is not None and names.get(annotation.get("category_id")) != chosen:
            continue
        where = f"annotation {number}"
        try:
            image_id = int(annotation["image_id"])
            name = files[image_id]
            left, top, width, height = (float(v) for v in annotation["bbox"])
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f"{path}: {where}: no image_id of the images list, or no bbox [x, y, width, height]"
            ) from None
        if image_id in sizes:
            stated[where] = sizes[image_id]
        out.append((name, Box(where, None, *_pixels(f"{path}: {where}", left, top, width, height))))
    return out


def _image_name(url: str, images: Path) -> str:
    """The file in ``images`` that a Label Studio image URL names."""
    parsed = urlparse(url)
    source = parse_qs(parsed.query).get("d", [parsed.path])[0]  # local storage: /data/local-files/?d=dir/img.png
    name = Path(unquote(source)).name
    bare = UPLOAD_PREFIX.sub("", name)
    return bare if not (images / name).exists() and (images / bare).exists() else name


def _rectangles(task: dict) -> list[dict]:
    """A task's rectangle results, in either export: full (annotations -> result) or JSON-MIN (rectangles per control,
    each with its own original size)."""
    if "annotations" in task or "completions" in task:
        done = [a for a in task.get("annotations", task.get("completions", [])) if not a.get("was_cancelled")]
        results = done[0].get("result", []) if done else []
        return [
            {**r["value"], "original_width": r.get("original_width"), "original_height": r.get("original_height")}
            for r in results
            if r.get("type") == "rectanglelabels" or "rectanglelabels" in r.get("value", {})
        ]
    return [item for value in task.values() if isinstance(value, list) for item in value if "rectanglelabels" in item]


def _label_studio_rows(
    path: Path, tasks: list, images: Path, label: str | None, stated: dict[str, tuple[float, float]]
) -> list[tuple[str, Box]]:
    """Each rectangle's percentages scaled by its image file's size (its ``original_width`` and
    ``original_height`` checked against it by ``validate``)."""
    parsed: list[tuple[int, str, int | None, dict]] = []
    for number, task in enumerate(tasks, 1):
        if not isinstance(task, dict):
            raise InputError(f"{path}: item {number} is not a Label Studio task; export it again as JSON")
        data = task["data"] if isinstance(task.get("data"), dict) else task  # JSON-MIN: the data's keys at the top
        url, named, k = data.get("image"), data.get(STUDIO_FILE), data.get(STUDIO_SLICE)
        rectangles = _rectangles(task)
        task_id = task.get("id", number)
        if rectangles and not isinstance(url, str) and not isinstance(named, str):
            raise InputError(f"{path}: task {task_id}: no image URL (data.image); export it again")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise InputError(f"{path}: task {task_id}: data.{STUDIO_SLICE} is {k!r}; give a slice index from 0")
        name = named if isinstance(named, str) else _image_name(url, images)
        parsed += [(task_id, name, k, r) for r in rectangles]
    chosen = _one_label(path, {str(lab) for *_, r in parsed for lab in r.get("rectanglelabels", [])}, label)
    out = []
    for task_id, name, k, rectangle in parsed:
        if chosen is not None and chosen not in rectangle.get("rectanglelabels", []):
            continue
        where = f"task {task_id}"
        if float(rectangle.get("rotation") or 0):
            raise InputError(f"{path}: {where}: a rotated rectangle; draw the box without rotation")
        try:
            width, height = float(rectangle["original_width"]), float(rectangle["original_height"])
            x, y, w, h = (float(rectangle[k]) for k in ("x", "y", "width", "height"))
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f"{path}: {where}: a rectangle without x, y, width, height and the original size"
            ) from None
        stated[where] = (width, height)
        if is_image(images / name):  # the file's own size: a stated size within SIZE_TOLERANCE is its rounding
            width, height, _ = stack_size(images / name)
        corners = _pixels(f"{path}: {where}", x / 100 * width, y / 100 * height, w / 100 * width, h / 100 * height)
        out.append((name, Box(where, k, *corners)))
    return out


def to_csv(boxes: dict[str, tuple[Box, ...]]) -> str:
    """``boxes`` as the text of a ``boxes.csv`` (one row per box, ``slice`` where a box has one)."""
    lines = [",".join([*COLUMNS, SLICE])]
    for name, found in sorted(boxes.items()):
        for box in found:
            slice_ = "" if box.slice is None else str(box.slice)
            lines.append(f"{name},{box.x_min},{box.y_min},{box.x_max},{box.y_max},{slice_}")
    return "\n".join(lines) + "\n"
