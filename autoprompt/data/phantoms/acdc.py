"""Synthetic ACDC data in the official layout: short-axis cine MR-like ED and ES volumes with label maps.

Each volume is a stack of short-axis slices from base to apex through a torso: bright blood in an LV pool inside a
dark myocardial ring, and a bright RV crescent wrapped around the ring's left side, all shrinking towards the apex
(the RV ends before it), with dark lungs, bright fat, Rician-like noise and a smooth multiplicative bias field.
Anatomy is drawn in millimetres on a grid of anisotropic spacing (in-plane 1.25-1.75 mm, slices 8-10 mm) with an
oblique direction matrix, as scanner volumes have. Labels: 1 RV, 2 myocardium, 3 LV.

``anatomy: tail`` draws the two ends of the stack as real scans' misses gather there: the most apical slice's LV is a
cavity of a few dozen square millimetres inside a thick wall, and the most basal slice's RV a thin crescent along
the septum. ``classic`` (the default) keeps the smooth shrink of earlier releases, file for file.

``beyond`` adds that many unlabelled slices at each end of the stack, as a scan covers more than the ventricles:
above the base the atria and the great vessels (bright pools of blood where the RV and LV were, the aorta and the
pulmonary trunk as round pools beside them), below the apex the apical cap (muscle around no cavity) and then the
liver. A head trained on boxes of the ventricles draws masks on them (docs/volumes.md: Presence); ``0`` (the
default) writes the volumes of earlier releases, file for file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

from autoprompt.io import atomic_path

GROUPS = ("NOR", "DCM", "HCM", "MINF", "RV")
FRAMES = 30
ANATOMIES = ("classic", "tail")
APEX_RADIUS_MM = (2.5, 4.5)  # tail: the apical LV cavity's radius, from the smallest heart to the largest
BASAL_RV_WIDTH_MM = 6.0  # tail: how far the basal RV reaches beyond the ring: a crescent about 5 mm thick
BLOOD, MUSCLE, LIVER = 1, 2, 4  # tissue codes of ``render`` besides the labels (1 and 3 blood, 2 myocardium)


@dataclass(frozen=True)
class Heart:
    """A short-axis heart in mm: LV centre (y, x) in the slice, basal cavity radius, wall thickness, RV size and its
    angle around the LV (degrees), and how far towards the apex the RV reaches (a fraction of the stack)."""

    centre: tuple[float, float]
    radius: float
    wall: float
    rv_width: float
    rv_angle: float
    rv_extent: float


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise blurred with ``sigma`` pixels."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return field / (field.std() + 1e-6)


def draw_slice(heart: Heart, y: np.ndarray, x: np.ndarray, depth: float, anatomy: str = "classic") -> np.ndarray:
    """The label map (0-3) of the slice at ``depth`` (0 at the base, 1 at the apex) on the mm grid ``y``, ``x``;
    ``anatomy``: ``classic`` or ``tail`` (the module's docstring)."""
    assert anatomy in ANATOMIES, f"anatomy must be one of {ANATOMIES}, got {anatomy!r}"
    shrink = math.sqrt(max(1 - (0.88 * depth) ** 2, 0.0))
    radius, wall = max(heart.radius * shrink, 4.0), heart.wall * (1 + 0.2 * depth)
    tail = anatomy == "tail"
    if tail and depth >= 1.0:  # the apex: a cavity of a few dozen mm², its wall as thick as the ring around it
        low, high = APEX_RADIUS_MM
        size = min(max((heart.radius - 20) / 8, 0.0), 1.0)  # where the heart lies in random_heart's range
        cavity = low + (high - low) * size
        radius, wall = cavity, wall + radius - cavity
    dy, dx = y - heart.centre[0], x - heart.centre[1]
    distance = np.hypot(dy, dx)
    label = np.zeros(y.shape, np.uint8)
    if depth <= heart.rv_extent:
        t = math.radians(heart.rv_angle)
        along, across = dx * math.cos(t) + dy * math.sin(t), -dx * math.sin(t) + dy * math.cos(t)
        outer = radius + wall
        rv_width = heart.rv_width * (1 - 0.6 * depth / max(heart.rv_extent, 1e-6))
        if tail and depth <= 0.0:  # the base: a thin crescent hugging the septum
            rv_width = BASAL_RV_WIDTH_MM
        # a crescent: an ellipse reaching ``rv_width`` beyond the ring on the RV's side, less the ring and a gap
        semi_axis = 0.85 * (outer + rv_width)
        ellipse = ((along - (outer + rv_width - semi_axis)) / semi_axis) ** 2 + (across / (1.15 * outer)) ** 2 <= 1
        label[ellipse & (distance > outer + 2.5) & (along > -0.1 * outer)] = 1
    label[distance <= radius + wall] = 2
    label[distance <= radius] = 3
    return label


def draw_beyond(heart: Heart, y: np.ndarray, x: np.ndarray, step: int) -> np.ndarray:
    """The tissue map (``BLOOD``, ``MUSCLE``, ``LIVER``, 0 elsewhere) of an unlabelled slice ``step`` slices beyond
    the heart's ventricles: negative above the base (atria and great vessels), positive below the apex (the apical
    cap, then the liver)."""
    dy, dx = y - heart.centre[0], x - heart.centre[1]
    tissue = np.zeros(y.shape, np.uint8)
    t = math.radians(heart.rv_angle)
    side_y, side_x = math.sin(t), math.cos(t)  # towards the RV
    if step < 0:  # above the base: the right atrium where the RV was, the left atrium behind the LV, the vessels
        far = -step - 1  # each slice further up, the atria shrink and the vessels take over
        ra = np.hypot(dy - 0.9 * heart.radius * side_y, dx - 1.1 * heart.radius * side_x)
        la = np.hypot(dy + 0.5 * heart.radius, dx + 0.3 * heart.radius * side_x)
        shrink = 0.75**far
        tissue[ra <= (0.8 * heart.radius + 2) * shrink] = BLOOD
        tissue[la <= 0.7 * heart.radius * shrink] = BLOOD
        aorta = np.hypot(dy, dx - 0.2 * heart.radius * side_x)
        trunk = np.hypot(dy - 0.6 * heart.radius, dx - 0.5 * heart.radius * side_x)
        for vessel, radius in ((aorta, 12.0), (trunk, 10.0)):
            tissue[(vessel <= radius + 2) & (tissue == 0)] = MUSCLE  # the vessel's wall
            tissue[vessel <= radius] = BLOOD
    elif step == 1:  # the apical cap: a disc of muscle around no cavity
        tissue[np.hypot(dy, dx) <= 0.5 * heart.radius + heart.wall] = MUSCLE
    else:  # the liver, reaching in from below on the RV's side, where the heart was
        liver = ((dy + 0.4 * heart.radius) / (2.2 * heart.radius)) ** 2 + (
            (dx - 0.6 * heart.radius * side_x) / (2.6 * heart.radius)
        ) ** 2
        tissue[liver <= 1] = LIVER
    return tissue


def render(rng: np.random.Generator, label: np.ndarray, y: np.ndarray, x: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A cine-MR-like slice (arbitrary units, about 0-1) for a label map on the mm grid ``y``, ``x`` (or a tissue
    map of ``draw_beyond``: ``LIVER`` is a mid-grey organ)."""
    shape = label.shape
    cy, cx = float(y.mean()), float(x.mean())
    body = ((y - cy) / (0.42 * np.ptp(y))) ** 2 + ((x - cx) / (0.47 * np.ptp(x))) ** 2 <= 1
    side = (np.abs(x - cx) - 0.25 * np.ptp(x)) / (0.13 * np.ptp(x))  # the two lungs, mirrored about the centre
    lungs = ((y - cy + 5) / (0.3 * np.ptp(y))) ** 2 + side**2 <= 1
    fat = body & ~(((y - cy) / (0.39 * np.ptp(y))) ** 2 + ((x - cx) / (0.44 * np.ptp(x))) ** 2 <= 1)
    image = np.where(body, 0.35 + 0.08 * _smooth_noise(rng, shape, 6), 0.0)
    image[lungs & body] = 0.08
    image[fat] = 0.85
    liver = label == LIVER
    if liver.any():  # only then: the random stream, and so every other slice, stays as in earlier releases
        image[liver] = (0.5 + 0.03 * _smooth_noise(rng, shape, 4))[liver]
    image[label == 2] = 0.22
    blood = (label == 1) | (label == 3)
    image[blood] = (0.9 + 0.05 * _smooth_noise(rng, shape, 3))[blood]
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.8) * bias
    noise = 0.04 * rng.standard_normal((2, *shape))
    return np.hypot(image + noise[0], noise[1])  # the magnitude of complex Gaussian noise: Rician


def random_heart(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> Heart:
    return Heart(
        centre=(float(y.mean() + rng.uniform(-12, 12)), float(x.mean() + rng.uniform(0, 18))),
        radius=rng.uniform(20, 28),
        wall=rng.uniform(7, 10),
        rv_width=rng.uniform(22, 32),
        rv_angle=rng.uniform(160, 200),  # the RV on the image's left
        rv_extent=rng.uniform(0.6, 0.85),
    )


def _direction(rng: np.random.Generator) -> tuple[float, ...]:
    """An oblique orientation: a rotation about a random axis by 20-60 degrees, with a flip of the first axis."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(20, 60))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    return tuple((rotation @ np.diag([-1.0, 1.0, 1.0])).ravel().tolist())


def _write(
    array: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, ...],
    direction: tuple[float, ...],
    path: Path,
) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)


def write_patient(
    rng: np.random.Generator,
    folder: Path,
    size: tuple[int, int],
    slices: tuple[int, int],
    anatomy: str = "classic",
    beyond: int = 0,
) -> None:
    """One patient: ``Info.cfg`` and the ED and ES frames with their ``_gt`` labels (``anatomy``: ``draw_slice``;
    ``beyond``: unlabelled slices at each end, ``draw_beyond``)."""
    width, height = size
    pixel_mm, slice_mm = rng.uniform(1.25, 1.75), rng.uniform(8.0, 10.0)
    count = int(rng.integers(slices[0], slices[1] + 1))
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = (rows + 0.5) * pixel_mm, (cols + 0.5) * pixel_mm
    ed_heart = random_heart(rng, y, x)
    es_heart = Heart(
        ed_heart.centre,
        ed_heart.radius * 0.65,
        ed_heart.wall * 1.4,
        ed_heart.rv_width * 0.7,
        ed_heart.rv_angle,
        ed_heart.rv_extent,
    )
    ed, es = 1, int(rng.integers(9, 16))
    direction = _direction(rng)
    origin = tuple(rng.uniform(-150, 150, 3).tolist())
    bias = [np.exp(0.25 * _smooth_noise(rng, (height, width), 30)) for _ in range(count)]
    bias += [np.exp(0.25 * _smooth_noise(rng, (height, width), 30)) for _ in range(2 * beyond)]  # none: as before
    for frame, heart in ((ed, ed_heart), (es, es_heart)):
        labels = np.stack([draw_slice(heart, y, x, k / (count - 1), anatomy) for k in range(count)])
        images = np.stack([render(rng, labels[k], y, x, bias[k]) for k in range(count)])
        if beyond:
            steps = [*range(-beyond, 0), *range(1, beyond + 1)]
            tissues = [draw_beyond(heart, y, x, step) for step in steps]
            extra = [render(rng, tissue, y, x, b) for tissue, b in zip(tissues, bias[count:], strict=True)]
            images = np.concatenate([extra[:beyond], images, extra[beyond:]])
            empty = np.zeros((beyond, *labels.shape[1:]), labels.dtype)
            labels = np.concatenate([empty, labels, empty])
        stem = f"{folder.name}_frame{frame:02d}"
        geometry = ((pixel_mm, pixel_mm, slice_mm), origin, direction)
        _write(np.rint(images * 400).astype(np.int16), *geometry, folder / f"{stem}.nii.gz")
        _write(labels, *geometry, folder / f"{stem}_gt.nii.gz")
    (folder / "Info.cfg").write_text(
        f"ED: {ed}\nES: {es}\nGroup: {rng.choice(GROUPS)}\n"
        f"Height: {rng.uniform(150, 195):.1f}\nNbFrame: {FRAMES}\n"
        f"Weight: {rng.uniform(50, 110):.1f}\n"
    )


def write_acdc_phantoms(
    root: Path,
    training: int,
    testing: int,
    size: tuple[int, int],
    slices: tuple[int, int],
    seed: int,
    anatomy: str = "classic",
    beyond: int = 0,
) -> None:
    """Write ``root/training/patientNNN/`` (patients 1 to ``training``) and ``root/testing/patientNNN/`` (the next
    ``testing`` numbers). ``size`` is (width, height) in pixels; ``slices`` the (min, max) slices per volume of the
    ventricles, with ``beyond`` unlabelled slices more at each end; ``anatomy``: ``classic`` or ``tail`` (the
    module's docstring)."""
    assert training > 0 and testing >= 0 and training + testing <= 999, "ACDC patient numbers have three digits"
    assert 2 <= slices[0] <= slices[1], f"slices must be (min, max) with min >= 2, got {slices}"
    rng = np.random.default_rng(seed)
    with atomic_path(Path(root)) as tmp:
        for number in range(1, training + testing + 1):
            folder = tmp / ("training" if number <= training else "testing") / f"patient{number:03d}"
            folder.mkdir(parents=True)
            write_patient(rng, folder, tuple(size), tuple(slices), anatomy, beyond)
