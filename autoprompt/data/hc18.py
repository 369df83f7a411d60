"""HC18 (fetal head circumference), official layout.

``<root>/training_set/NNN_HC.png`` with its outline ``NNN_HC_Annotation.png`` (a subject may have several images:
``010_HC.png``, ``010_2HC.png``), and ``training_set_pixel_size_and_HC.csv`` next to ``training_set/`` or inside it.
The mask is the filled ellipse fitted to the outline points, which works even where the ellipse leaves the image.

``images`` (``prepare.hc18.images``): ``first`` reads only each subject's first image ``NNN_HC.png`` (806 images, as
the authors' follow-up), ``all`` also its extra images ``NNN_2HC.png`` / ``NNN_3HC.png`` (999 images). Without the
setting, every image is read.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from autoprompt.data.preprocess import clip_rescale
from autoprompt.data.records import Case, CaseFiles, Reader
from autoprompt.errors import InputError
from autoprompt.settings import Hc18Prepare

DOWNLOAD = "https://zenodo.org/records/1327317"
CSV_NAME = "training_set_pixel_size_and_HC.csv"
IMAGE_NAME = re.compile(r"^(?P<subject>\d{3})_(?P<index>\d+)?HC\.png$")


@functools.lru_cache(maxsize=4)
def _pixel_table(csv: Path) -> dict[str, tuple[float, float]]:
    """filename -> (pixel size in mm, head circumference in mm)."""
    try:
        table = pd.read_csv(csv)
        return {str(row[0]): (float(row[1]), float(row[2])) for row in table.iloc[:, :3].itertuples(index=False)}
    except Exception as error:
        raise InputError(
            f"{csv}: unreadable HC18 pixel-size table ({error}); download it again from {DOWNLOAD}"
        ) from error


def find(root: Path, section: Hc18Prepare) -> list[CaseFiles]:
    """Every ``NNN[_k]HC.png`` under ``root/training_set`` (only ``NNN_HC.png`` with ``images: first``), with its
    annotation and the pixel-size CSV."""
    first_only = section.images == "first"
    image_dir = root / "training_set"
    if not image_dir.is_dir():
        raise InputError(
            f"{image_dir}: HC18 training images not found; download training_set.zip from "
            f"{DOWNLOAD} and unzip it into {root}/"
        )
    csv = next((p for p in (root / CSV_NAME, image_dir / CSV_NAME) if p.is_file()), None)
    if csv is None:
        raise InputError(
            f"{root / CSV_NAME}: HC18 pixel-size table not found; download {CSV_NAME} from "
            f"{DOWNLOAD} next to {image_dir}/"
        )
    cases = []
    for path in sorted(image_dir.iterdir()):
        match = IMAGE_NAME.match(path.name)
        if match and not (first_only and match["index"]):
            annotation = path.with_name(f"{path.stem}_Annotation.png")
            cases.append(CaseFiles(path.stem, match["subject"], (path, annotation, csv)))
    if not cases:
        raise InputError(f"{image_dir}: no NNN_HC.png images found; download training_set.zip from {DOWNLOAD}")
    return cases


def _read_gray(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(
            f"{path}: file missing; restore it from the HC18 download ({DOWNLOAD}) or set prepare.on_error: skip"
        )
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise InputError(
            f"{path}: unreadable PNG; restore it from the HC18 download ({DOWNLOAD}) or set prepare.on_error: skip"
        )
    return image


def fit_ellipse(outline: np.ndarray, source: Path) -> tuple[float, float, float, float, float]:
    """(cx, cy, semi-axis a, semi-axis b, angle in degrees) of the ellipse fitted to an outline's pixels."""
    points = np.argwhere(outline > 127)[:, ::-1].astype(np.float32)
    if len(points) < 5:
        raise InputError(
            f"{source}: annotation has {len(points)} outline pixels, too few to fit an ellipse; "
            "check the file or set prepare.on_error: skip"
        )
    (cx, cy), (width, height), angle = cv2.fitEllipse(points)
    return cx, cy, width / 2.0, height / 2.0, angle


def fill_ellipse(shape: tuple[int, int], cx: float, cy: float, a: float, b: float, angle: float) -> np.ndarray:
    """H x W uint8 mask of the pixel centres inside the ellipse (OpenCV's angle convention)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    theta = math.radians(angle)
    dx, dy = cols - cx, rows - cy
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    return ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(np.uint8)


def ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's second approximation of an ellipse's circumference."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def load(files: CaseFiles, section: Hc18Prepare) -> list[Case]:
    image_path, annotation_path, csv = files.paths
    image = _read_gray(image_path)
    outline = _read_gray(annotation_path)
    if outline.shape != image.shape:
        raise InputError(
            f"{annotation_path}: shape {outline.shape} differs from its image {image.shape}; "
            "restore the matching annotation or set prepare.on_error: skip"
        )
    table = _pixel_table(csv)
    if image_path.name not in table:
        raise InputError(f"{csv}: no row for {image_path.name}; restore the official CSV or remove the image")
    pixel_mm, hc_mm = table[image_path.name]
    cx, cy, a, b, angle = fit_ellipse(outline, annotation_path)
    return [
        Case(
            id=files.id,
            subject=files.subject,
            image=clip_rescale(image),
            label=fill_ellipse(image.shape, cx, cy, a, b, angle),
            spacing=(pixel_mm, pixel_mm),
            source=f"training_set/{image_path.name}",
            extra={"hc_mm": hc_mm, "hc_mm_fit": ellipse_perimeter(a, b) * pixel_mm},
        )
    ]


READER = Reader(name="hc18", classes={"head": 1}, find=find, load=load)
