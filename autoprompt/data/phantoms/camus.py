"""Synthetic CAMUS data in either official layout: apical echocardiography-like ED and ES images with label maps.

Each image is a sector scan (apex at the top centre) of speckled tissue holding a dark LV cavity shaped like a half
ellipse (apex up, open at the mitral plane), a brighter myocardium around it, and a dark LA below the mitral plane;
the 4CH view adds an unlabelled RV and RA on the left, so that dark cavities are not all targets. The anatomy is drawn
in millimetres and rasterised on an anisotropic grid (columns coarser than rows, as in CAMUS). Labels: 1 LV cavity,
2 myocardium, 3 LA. Images are written as 3D files with a singleton third axis, as the MHD release stores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

from autoprompt.data.camus import SPLIT_FILES, VIEWS
from autoprompt.io import atomic_path

LAYOUTS = {"nifti": ("database_nifti", ".nii.gz"), "mhd": ("training", ".mhd")}
SECTOR_HALF_ANGLE = 37.0  # degrees
SPLIT_SHARES = {"test": 0.2, "val": 0.1}  # of the patients, in the optional split files


@dataclass(frozen=True)
class Heart:
    """One apical view, in mm: the LV apex (y down from the probe, x right of the centre line), the LV axis tilt
    (degrees, positive towards the right), cavity length and half width, wall thickness, and the LA's semi-axes."""

    apex_y: float
    apex_x: float
    tilt: float
    length: float
    half_width: float
    wall: float
    la_length: float
    la_width: float
    right_heart: bool

    def bottom(self) -> float:
        """The LA's lowest point, roughly."""
        return self.apex_y + (self.length + 3 + 2 * self.la_length) * math.cos(math.radians(self.tilt))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise blurred with ``sigma`` pixels."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return field / (field.std() + 1e-6)


def _axes(y: np.ndarray, x: np.ndarray, origin: tuple[float, float], tilt: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along the LV axis (towards the apex, i.e. upwards) and across it, from ``origin`` (y, x)."""
    t = math.radians(tilt)
    dy, dx = y - origin[0], x - origin[1]
    return -dy * math.cos(t) - dx * math.sin(t), -dy * math.sin(t) + dx * math.cos(t)


def _half_ellipse(along: np.ndarray, across: np.ndarray, length: float, half_width: float) -> np.ndarray:
    return (along >= 0) & ((along / length) ** 2 + (across / half_width) ** 2 <= 1)


def _ellipse(along: np.ndarray, across: np.ndarray, centre: float, length: float, half_width: float) -> np.ndarray:
    return ((along - centre) / length) ** 2 + (across / half_width) ** 2 <= 1


def draw(heart: Heart, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label map (0-3) and a map of unlabelled cavities (RV, RA) on the mm grid ``y``, ``x``."""
    t = math.radians(heart.tilt)
    base = (heart.apex_y + heart.length * math.cos(t), heart.apex_x + heart.length * math.sin(t))
    along, across = _axes(y, x, base, heart.tilt)
    cavity = _half_ellipse(along, across, heart.length, heart.half_width)
    wall = _half_ellipse(along, across, heart.length + heart.wall, heart.half_width + heart.wall) & ~cavity
    atrium = _ellipse(along, across, -(3 + heart.la_length), heart.la_length, heart.la_width)
    label = np.zeros(y.shape, np.uint8)
    label[atrium] = 3
    label[wall] = 2
    label[cavity] = 1
    other = np.zeros(y.shape, bool)
    if heart.right_heart:
        rv_width = 0.7 * heart.half_width
        offset = across + heart.half_width + heart.wall + 2 + rv_width
        other = _half_ellipse(along, offset, 0.8 * heart.length, rv_width)
        other |= _ellipse(along, offset, -(3 + 0.8 * heart.la_length), 0.8 * heart.la_length, 0.9 * rv_width)
        other &= label == 0
    return label, other


def _fan(y: np.ndarray, x: np.ndarray, depth: float) -> np.ndarray:
    """The scanned sector, apex at the top centre."""
    return (np.hypot(y, x) < depth) & (np.degrees(np.abs(np.arctan2(x, y))) < SECTOR_HALF_ANGLE)


def render(
    rng: np.random.Generator, heart: Heart, shape: tuple[int, int], spacing: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 image and its label map, ``shape`` (rows, columns) pixels of ``spacing`` (row, column) mm."""
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = (rows + 0.5) * spacing[0], (cols + 0.5 - width / 2) * spacing[1]
    label, other = draw(heart, y, x)
    fan = _fan(y, x, height * spacing[0])
    label *= fan

    blood = (label == 1) | (label == 3) | other
    heart_mask = ((label > 0) | other).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, round(4 / spacing[1])), round(8 / spacing[0])))
    pericardium = (cv2.dilate(heart_mask, kernel) > 0) & (heart_mask == 0)
    apex_distance = np.hypot(y - heart.apex_y, x - heart.apex_x)
    image = 0.28 + 0.1 * _smooth_noise(rng, shape, 14)
    image[pericardium] = (0.75 + 0.1 * _smooth_noise(rng, shape, 6))[pericardium]
    image[label == 2] = (0.55 + 0.1 * _smooth_noise(rng, shape, 6))[label == 2]
    image[blood] = (0.06 + 0.03 * _smooth_noise(rng, shape, 8) + 0.2 * np.exp(-apex_distance / 12))[blood]
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.5)
    speckle = cv2.GaussianBlur(rng.rayleigh(1.0, shape).astype(np.float32), (0, 0), sigmaX=1.6, sigmaY=0.7)
    image = image * speckle / 1.25 * (1 - 0.35 * y / y.max()) * fan
    return np.clip(image * 255, 0, 255).astype(np.uint8), label


def random_heart(rng: np.random.Generator, view: str) -> Heart:
    """An end-diastole apical view; 4CH tilts the LV to the right and shows the right heart."""
    four = view == "4CH"
    return Heart(
        apex_y=rng.uniform(12, 22),
        apex_x=rng.uniform(-6, 6),
        tilt=rng.uniform(4, 14) if four else rng.uniform(-6, 6),
        length=rng.uniform(66, 84),
        half_width=rng.uniform(19, 25),
        wall=rng.uniform(8, 11),
        la_length=rng.uniform(16, 23),
        la_width=rng.uniform(15, 21),
        right_heart=four,
    )


def end_systole(heart: Heart, rng: np.random.Generator) -> Heart:
    """The same view at end systole: a shorter, narrower cavity, a thicker wall, a fuller atrium."""
    return replace(
        heart,
        length=heart.length * rng.uniform(0.8, 0.88),
        half_width=heart.half_width * 0.7,
        wall=heart.wall * 1.3,
        la_length=heart.la_length * 1.1,
        la_width=heart.la_width * 1.1,
    )


def _write(array: np.ndarray, spacing: tuple[float, float], path: Path) -> None:
    """An H x W array as a 3D file with a singleton third axis; SimpleITK's spacing is (x, y, z)."""
    image = sitk.GetImageFromArray(array[None])
    image.SetSpacing((spacing[1], spacing[0], 1.0))
    sitk.WriteImage(image, str(path), useCompression=path.suffix == ".gz")


def _info(rng: np.random.Generator, frames: int, ed_area: int, es_area: int) -> str:
    ef = 100 * (1 - (es_area / max(ed_area, 1)) ** 1.5)
    quality = rng.choice(["Good", "Medium", "Poor"])
    return (
        f"ED: 1\nES: {frames}\nNbFrame: {frames}\nSex: {rng.choice(['F', 'M'])}\nAge: {rng.integers(20, 90)}\n"
        f"ImageQuality: {quality}\nEF: {ef:.1f}\nFrameRate: 25.0\n"
    )


def write_camus_phantoms(
    root: Path, subjects: int, size: tuple[int, int], seed: int, layout: str = "nifti", split_files: bool = False
) -> None:
    """Write ``subjects`` patients in the NIfTI release layout (``root/database_nifti/patientNNNN/``) or, with
    ``layout="mhd"``, the MHD/RAW release layout (``root/training/patientNNNN/``): ED and ES images of both views
    with their ``_gt`` labels and ``Info_2CH.cfg`` / ``Info_4CH.cfg``. ``size`` is (width, height) in pixels; each
    patient gets its own anisotropic spacing, the depth fitted to the heart. ``split_files`` adds the official-style
    ``root/database_split/subgroup_*.txt`` (70 / 10 / 20 % of the patients; NIfTI layout only).
    """
    assert 0 < subjects <= 9999, f"CAMUS patient numbers have four digits, got {subjects} patients"
    assert layout in LAYOUTS, f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}"
    folder, extension = LAYOUTS[layout]
    width, height = size
    rng = np.random.default_rng(seed)
    with atomic_path(Path(root)) as tmp:
        names = [f"patient{number:04d}" for number in range(1, subjects + 1)]
        for name in names:
            patient = tmp / folder / name
            patient.mkdir(parents=True)
            for view in VIEWS:
                ed = random_heart(rng, view)
                row_mm = (ed.bottom() + rng.uniform(4, 16)) / height
                spacing = (row_mm, row_mm * rng.uniform(1.4, 2.0))
                areas = []
                for phase, heart in (("ED", ed), ("ES", end_systole(ed, rng))):
                    image, label = render(rng, heart, (height, width), spacing)
                    _write(image, spacing, patient / f"{name}_{view}_{phase}{extension}")
                    _write(label, spacing, patient / f"{name}_{view}_{phase}_gt{extension}")
                    areas.append(int((label == 1).sum()))
                (patient / f"Info_{view}.cfg").write_text(_info(rng, int(rng.integers(12, 26)), *areas))
        if split_files and layout == "nifti":
            order = [names[i] for i in rng.permutation(len(names))]
            counts = {split: round(share * subjects) for split, share in SPLIT_SHARES.items()}
            lists = {
                "test": order[: counts["test"]],
                "val": order[counts["test"] : counts["test"] + counts["val"]],
                "train": order[counts["test"] + counts["val"] :],
            }
            (tmp / "database_split").mkdir()
            for file_name, split in SPLIT_FILES.items():
                (tmp / "database_split" / file_name).write_text("".join(f"{n}\n" for n in sorted(lists[split])))
