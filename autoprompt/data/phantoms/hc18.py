"""Synthetic HC18 data in the official layout: ultrasound-like fetal heads with outline annotations.

Each image is a fan-shaped scan of speckled tissue holding a bright elliptical skull ring of random size,
position and orientation, with a darker brain, a midline echo and a few blobs inside. The annotation is the
ring's outer ellipse drawn as a thin outline, and the CSV gives each image's pixel size and head circumference.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from autoprompt.data.hc18 import CSV_NAME, ellipse_perimeter, fill_ellipse
from autoprompt.io import atomic_path

SUBPIXEL_BITS = 4


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise blurred with ``sigma`` pixels."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return field / (field.std() + 1e-6)


def _fan(shape: tuple[int, int]) -> np.ndarray:
    """The sector a convex probe scans, apex above the top centre."""
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    dy, dx = rows + 0.15 * height, cols - width / 2
    radius, angle = np.hypot(dx, dy), np.degrees(np.arctan2(dx, dy))
    return ((np.abs(angle) < 42) & (radius < 1.12 * height)).astype(np.float32)


def draw_outline(shape: tuple[int, int], cx: float, cy: float, a: float, b: float, angle: float) -> np.ndarray:
    """A thin (2 px) ellipse outline, as the HC18 annotation PNGs hold."""
    outline = np.zeros(shape, np.uint8)
    scale = 1 << SUBPIXEL_BITS
    centre = (round(cx * scale), round(cy * scale))
    axes = (round(a * scale), round(b * scale))
    cv2.ellipse(outline, centre, axes, angle, 0, 360, 255, thickness=2, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    return outline


def phantom(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[float, ...]]:
    """One uint8 image and its head ellipse (cx, cy, a, b, angle in degrees)."""
    height, width = shape
    a = rng.uniform(0.24, 0.40) * height
    b = a * rng.uniform(0.72, 0.92)
    angle = rng.uniform(0, 180)
    cx = rng.uniform(0.35, 0.65) * width
    cy = rng.uniform(0.38, 0.62) * height
    thickness = rng.uniform(0.05, 0.09) * b

    head = fill_ellipse(shape, cx, cy, a, b, angle).astype(np.float32)
    brain = fill_ellipse(shape, cx, cy, a - thickness, b - thickness, angle).astype(np.float32)
    skull = head - brain
    midline = draw_outline(shape, cx, cy, 0.75 * a, 1.0, angle).astype(np.float32) / 255 * brain

    tissue = 0.38 + 0.08 * _smooth_noise(rng, shape, 25)
    image = tissue * (1 - head) + (0.16 + 0.05 * _smooth_noise(rng, shape, 12)) * brain
    image += rng.uniform(0.75, 0.95) * skull * (0.8 + 0.2 * _smooth_noise(rng, shape, 20))
    image += 0.35 * midline
    for _ in range(rng.integers(2, 5)):  # small echogenic structures inside the brain
        bx, by = cx + rng.uniform(-0.5, 0.5) * a, cy + rng.uniform(-0.5, 0.5) * b
        blob = fill_ellipse(shape, bx, by, rng.uniform(4, 12), rng.uniform(3, 8), rng.uniform(0, 180))
        image += 0.2 * blob * brain

    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.5)
    speckle = rng.rayleigh(1.0, shape).astype(np.float32)
    speckle = cv2.GaussianBlur(speckle, (0, 0), 1.0) / 1.25
    image = image * speckle * _fan(shape)
    return np.clip(image * 255, 0, 255).astype(np.uint8), (cx, cy, a, b, angle)


def write_hc18_phantoms(root: Path, subjects: int, size: tuple[int, int], seed: int, second_image: float) -> None:
    """Write ``root/training_set/NNN[_2]HC.png`` + ``_Annotation.png`` and ``root/<CSV_NAME>``.

    ``size`` is (width, height) as HC18 states it (800 x 540); ``second_image`` is the chance that a subject
    has a second image ``NNN_2HC.png``.
    """
    assert 0 < subjects <= 1000, f"HC18 subject numbers have three digits, got {subjects} subjects"
    width, height = size
    rng = np.random.default_rng(seed)
    rows = []
    with atomic_path(Path(root)) as tmp:
        image_dir = tmp / "training_set"
        image_dir.mkdir(parents=True)
        for subject in range(subjects):
            names = [f"{subject:03d}_HC"]
            if rng.random() < second_image:
                names.append(f"{subject:03d}_2HC")
            for name in names:
                image, (cx, cy, a, b, angle) = phantom(rng, (height, width))
                pixel_mm = rng.uniform(0.06, 0.16)
                cv2.imwrite(str(image_dir / f"{name}.png"), image)
                cv2.imwrite(str(image_dir / f"{name}_Annotation.png"), draw_outline(image.shape, cx, cy, a, b, angle))
                rows.append((f"{name}.png", pixel_mm, round(ellipse_perimeter(a, b) * pixel_mm, 2)))
        table = pd.DataFrame(rows, columns=["filename", "pixel size(mm)", "head circumference (mm)"])
        table.to_csv(tmp / CSV_NAME, index=False, float_format="%.9g")
