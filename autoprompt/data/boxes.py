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
  cancelled is read.

Where an export holds boxes of several labels, ``label`` picks one (``prepare.<dataset>.label``, ``--label``).
Boxes drawn on volumes in 3D Slicer (ROI markups) or napari (Shapes CSV) are read by ``viewer_boxes``.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from autoprompt.data.dicom import folder_of_series
from autoprompt.data.images import is_image, unsupported
from autoprompt.errors import InputError

COLUMNS = ("image", "x_min", "y_min", "x_max", "y_max")
SLICE = "slice"
ROW_FORMAT = "image,x_min,y_min,x_max,y_max[,slice] (inclusive pixel indices)"
FORMATS = (
    "boxes.csv, a COCO JSON or a Label Studio JSON export, 3D Slicer ROIs (.mrk.json, or a folder of them) or a "
    "napari Shapes CSV"
)
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio renames uploads to <8 hex digits>-<name>


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

    if is_viewer_export(path):  # 3D Slicer ROIs, napari Shapes CSV (autoprompt.data.viewer_boxes)
        rows = viewer_rows(path, images)
    elif path.suffix.lower() == ".csv":
        rows = _csv_rows(path, images)
    elif path.suffix.lower() == ".json":
        rows = _json_rows(path, images, label)
    else:
        raise InputError(f"{path}: unknown boxes format; give {FORMATS}")
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


def _checked(
    path: Path, where: str, name: str, images: Path, corners: tuple[int, ...], k: int | None
) -> tuple[str, Box]:
    """(name, Box) after checking the image exists and the corners are ordered."""
    x_min, y_min, x_max, y_max = corners
    name = folder_of_series(images, name) or name  # a DICOM series named by its SeriesInstanceUID
    if not is_image(images / name):
        if (images / name).is_file():
            raise InputError(f"{path}: {where}: {images / name} is not in a format read here; {unsupported(name)}")
        raise InputError(f"{path}: {where}: {images / name} not found; fix the name (with its suffix) or add the image")
    if x_min > x_max or y_min > y_max:
        raise InputError(f"{path}: {where}: box ({x_min}, {y_min}, {x_max}, {y_max}) has min > max; swap the corners")
    return name, Box(where, k, x_min, y_min, x_max, y_max)


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
        corners = tuple(_integer((row.get(c) or "").strip(), c, f"{path}: {where}") for c in COLUMNS[1:])
        cell = (row.get(SLICE) or "").strip()
        k = _integer(cell, SLICE, f"{path}: {where}") if cell else None
        out.append(_checked(path, where, name, images, corners, k))
    return out


# --------------------------------------------------------------------------------------------------------- JSON
def _pixels(left: float, top: float, width: float, height: float) -> tuple[int, int, int, int]:
    """A continuous box (pixel ``i`` spans ``[i, i + 1)``) -> the inclusive indices of the pixels it covers."""
    x_min, y_min = math.floor(left + 1e-6), math.floor(top + 1e-6)
    x_max, y_max = math.ceil(left + width - 1e-6) - 1, math.ceil(top + height - 1e-6) - 1
    return max(x_min, 0), max(y_min, 0), max(x_max, x_min), max(y_max, y_min)


def _json_rows(path: Path, images: Path, label: str | None) -> list[tuple[str, Box]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path}: unreadable JSON ({error.__class__.__name__}: {error}); export it again") from None
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return _coco_rows(path, data, images, label)
    if isinstance(data, list):
        return _label_studio_rows(path, data, images, label)
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


def _coco_rows(path: Path, data: dict, images: Path, label: str | None) -> list[tuple[str, Box]]:
    try:
        files = {int(image["id"]): Path(str(image["file_name"])).name for image in data["images"]}
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
            name = files[int(annotation["image_id"])]
            left, top, width, height = (float(v) for v in annotation["bbox"])
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f"{path}: {where}: no image_id of the images list, or no bbox [x, y, width, height]"
            ) from None
        out.append(_checked(path, where, name, images, _pixels(left, top, width, height), None))
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


def _label_studio_rows(path: Path, tasks: list, images: Path, label: str | None) -> list[tuple[str, Box]]:
    parsed: list[tuple[int, str, dict]] = []
    for number, task in enumerate(tasks, 1):
        if not isinstance(task, dict):
            raise InputError(f"{path}: item {number} is not a Label Studio task; export it again as JSON")
        url = task.get("data", {}).get("image") if isinstance(task.get("data"), dict) else task.get("image")
        rectangles = _rectangles(task)
        if rectangles and not isinstance(url, str):
            raise InputError(f"{path}: task {task.get('id', number)}: no image URL (data.image); export it again")
        parsed += [(task.get("id", number), _image_name(url, images), r) for r in rectangles]
    chosen = _one_label(path, {str(lab) for _, _, r in parsed for lab in r.get("rectanglelabels", [])}, label)
    out = []
    for task_id, name, rectangle in parsed:
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
        corners = _pixels(x / 100 * width, y / 100 * height, w / 100 * width, h / 100 * height)
        out.append(_checked(path, where, name, images, corners, None))
    return out


def to_csv(boxes: dict[str, tuple[Box, ...]]) -> str:
    """``boxes`` as the text of a ``boxes.csv`` (one row per box, ``slice`` where a box has one)."""
    lines = [",".join([*COLUMNS, SLICE])]
    for name, found in sorted(boxes.items()):
        for box in found:
            slice_ = "" if box.slice is None else str(box.slice)
            lines.append(f"{name},{box.x_min},{box.y_min},{box.x_max},{box.y_max},{slice_}")
    return "\n".join(lines) + "\n"
