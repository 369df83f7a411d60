"""What the cardiac readers (ACDC, CAMUS) share: ``Info*.cfg`` files, SimpleITK reads, label checks.

Every failure is an ``InputError`` naming the file, with the reader's ``fix`` appended.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoprompt.data.images import check_whole
from autoprompt.errors import InputError

LABEL_VALUES = (0, 1, 2, 3)
GEOMETRY_TOLERANCE = 1e-3  # mm for spacing and origin, unitless for the direction cosines


def read_info(path: Path, fix: str) -> dict[str, str]:
    """The ``key: value`` lines of an ACDC ``Info.cfg`` or a CAMUS ``Info_2CH.cfg``; it must give ``ED``."""
    if not path.is_file():
        raise InputError(f"{path}: file missing; {fix}")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: unreadable ({error}); {fix}") from error
    info = {}
    for line in lines:
        key, colon, value = line.partition(":")
        if colon:
            info[key.strip()] = value.strip()
    ed_frame(info, path, fix)
    return info


def ed_frame(info: dict[str, str], path: Path, fix: str) -> int:
    """The end-diastole frame number (``ED: 1``) of a parsed info file."""
    try:
        return int(info["ED"])
    except (KeyError, ValueError):
        raise InputError(f"{path}: no end-diastole frame (a line `ED: <frame number>`); {fix}") from None


def read_image(path: Path, fix: str, kind: str = "image") -> sitk.Image:
    """An image or label file read with SimpleITK; ``kind`` names it in the message when it is missing."""
    if not path.is_file():
        raise InputError(f"{path}: {kind} file missing; {fix}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(
            f"{path}: unreadable by SimpleITK (corrupt, truncated, or its data file is missing); {fix}"
        ) from None
    check_whole(path, image)
    return image


def _differs(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return not np.allclose(a, b, rtol=0.0, atol=GEOMETRY_TOLERANCE)


def check_label(image: sitk.Image, label: sitk.Image, label_path: Path, fix: str) -> np.ndarray:
    """The label's values as a uint8 array ([z,] y, x), after checking that it has its image's size, spacing, origin
    and direction, and holds only the values 0 to 3."""
    checks = (
        ("size", image.GetSize(), label.GetSize()),
        ("spacing", image.GetSpacing(), label.GetSpacing()),
        ("origin", image.GetOrigin(), label.GetOrigin()),
        ("direction", image.GetDirection(), label.GetDirection()),
    )
    for what, expected, found in checks:
        if len(expected) != len(found) or _differs(expected, found):
            shown = [tuple(np.round(v, 4).tolist()) for v in (found, expected)]
            raise InputError(f"{label_path}: {what} {shown[0]} differs from its image's {shown[1]}; {fix}")
    values = sitk.GetArrayFromImage(label)
    found = np.unique(values)
    unexpected = found[~np.isin(found, LABEL_VALUES)]
    if unexpected.size:
        raise InputError(
            f"{label_path}: unexpected label values {unexpected[:5].tolist()} (expected {list(LABEL_VALUES)}); {fix}"
        )
    return values.astype(np.uint8)
