"""``predict --report``: one self-contained HTML page to review a prediction folder, worst inputs first.

Each input is a tile: a thumbnail of the input (a volume's slice with the largest mask) with the mask's outline, its
name and a score: Dice against a reference mask where one is given (``--masks``), else the agreement of the mask's
box with a drawn box (``--boxes``: box IoU), else how well the ensemble's runs agree with each other (mean Dice of
each run's mask with the ensemble's). Tiles are sorted by that score, empty masks first, so that the inputs to look
at come first. The page needs no server and no network: the thumbnails are inlined.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

from autoprompt.data.boxes import Box
from autoprompt.data.images import as_stack, on_grid_of
from autoprompt.errors import InputError
from autoprompt.io import write_text

THUMBNAIL = 256  # the longest side of a thumbnail, in pixels
KINDS = {"dice": "Dice with the reference mask", "box_iou": "box IoU with the drawn box", "agreement": "run agreement"}


@dataclass(frozen=True)
class Entry:
    """One input of the report: its name, thumbnail (PNG bytes), score in [0, 1] and what the score is, and whether
    its mask is empty."""

    name: str
    thumbnail: bytes
    score: float | None
    kind: str | None
    empty: bool


def overlay_picture(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """H x W x 3 BGR: the input (a volume's slice with the largest mask) with the mask's outline in red; ``mask`` is
    the input's own layout."""
    grey = sitk.GetArrayFromImage(image).astype(np.float32)
    planes = mask if mask.ndim == 3 else mask[None]
    grey = grey if grey.ndim == 3 else grey[None]
    if as_stack(image).order not in (None, (0, 1, 2)):  # a 2D image stored in 3D: show its one plane
        grey, planes = np.squeeze(grey)[None], np.squeeze(planes)[None]
    k = int(np.argmax(planes.reshape(len(planes), -1).sum(1)))
    low, high = np.percentile(grey[k], (0.5, 99.5))
    picture = np.clip((grey[k] - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    picture = cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours((planes[k] > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(picture, contours, -1, (0, 0, 255), max(1, round(max(picture.shape[:2]) / 400)))
    return picture


def thumbnail(picture: np.ndarray) -> bytes:
    """A picture scaled to at most ``THUMBNAIL`` pixels on its longest side, as PNG bytes."""
    scale = min(1.0, THUMBNAIL / max(picture.shape[:2]))
    if scale < 1:
        picture = cv2.resize(picture, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", picture)
    assert ok, "OpenCV could not encode a PNG"
    return encoded.tobytes()


def dice(mask: np.ndarray, reference: np.ndarray) -> float:
    mask, reference = mask > 0, reference > 0
    total = int(mask.sum() + reference.sum())
    return 1.0 if total == 0 else 2 * float((mask & reference).sum()) / total


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box (x_min, y_min, x_max, y_max, inclusive) of a 2D mask's largest 8-connected component."""
    count, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    x, y, w, h = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), :4]
    return int(x), int(y), int(x + w - 1), int(y + h - 1)


def box_iou(mask: np.ndarray, image: sitk.Image, boxes: tuple[Box, ...]) -> float:
    """Mean IoU, over the drawn ``boxes`` of an input, of each box with the box of the mask on its slice (the mask in
    the input's own layout; slices as ``images.as_stack`` cuts them)."""
    stack = sitk.GetArrayFromImage(as_stack(on_grid_of(mask.astype(np.uint8), image)).stack)
    scores = []
    for drawn in boxes:
        k = drawn.slice or 0
        if k >= len(stack):
            raise InputError(f"slice {k} of a box is outside the input ({len(stack)} slices); fix the boxes file")
        found = _box(stack[k])
        if found is None:
            scores.append(0.0)
            continue
        x0, y0 = max(found[0], drawn.x_min), max(found[1], drawn.y_min)
        x1, y1 = min(found[2], drawn.x_max), min(found[3], drawn.y_max)
        overlap = max(0, x1 - x0 + 1) * max(0, y1 - y0 + 1)
        corners = (drawn.x_min, drawn.y_min, drawn.x_max, drawn.y_max)
        areas = [(b[2] - b[0] + 1) * (b[3] - b[1] + 1) for b in (found, corners)]
        scores.append(overlap / (sum(areas) - overlap))
    return float(np.mean(scores))


def entry(
    name: str,
    image: sitk.Image,
    mask: np.ndarray,
    reference: np.ndarray | None = None,
    boxes: tuple[Box, ...] = (),
    agreement: float | None = None,
) -> Entry:
    """The report's tile of one input: ``mask`` (its own layout) scored against ``reference`` (a mask of the same
    layout), else ``boxes``, else by ``agreement``."""
    if reference is not None:
        if reference.shape != mask.shape:
            raise InputError(f"{name}: its reference mask is {reference.shape}, its prediction {mask.shape}")
        score, kind = dice(mask, reference), "dice"
    elif boxes:
        score, kind = box_iou(mask, image, boxes), "box_iou"
    else:
        score, kind = agreement, "agreement" if agreement is not None else None
    return Entry(name, thumbnail(overlay_picture(image, mask)), score, kind, not bool((mask > 0).any()))


def order(entries: list[Entry]) -> list[Entry]:
    """Worst first: empty masks, then by score (inputs without a score last), then by name."""
    return sorted(entries, key=lambda e: (not e.empty, e.score is None, e.score or 0.0, e.name))


STYLE = """
body { font-family: sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
h1 { font-size: 1.3em; } p { max-width: 60em; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.tile { margin: 0; width: 260px; background: white; border: 1px solid #ddd; padding: 6px; }
.tile img { max-width: 256px; max-height: 256px; display: block; margin: auto; }
.tile figcaption { font-size: 0.85em; margin-top: 4px; overflow-wrap: anywhere; }
.low { border-color: #c00; border-width: 2px; } .empty { background: #fee; }
"""
SCRIPT = """
const tiles = document.querySelectorAll('.tile');
const low = document.querySelectorAll('.tile.low, .tile.empty').length;
document.getElementById('summary').textContent = tiles.length + ' inputs, ' + low + ' to look at first';
"""


def write_report(entries: list[Entry], path: Path, title: str, low: float = 0.5) -> None:
    """The page (see the module's docstring), written whole; ``low``: scores under it are outlined in red."""
    tiles = []
    for e in order(entries):
        classes = ["tile"] + (["empty"] if e.empty else []) + (["low"] if e.score is not None and e.score < low else [])
        score = "no score" if e.score is None else f"{KINDS[e.kind]}: {100 * e.score:.1f}"
        note = " · empty mask" if e.empty else ""
        data = base64.b64encode(e.thumbnail).decode()
        tiles.append(
            f'<figure class="{" ".join(classes)}" data-score="{"" if e.score is None else f"{e.score:.4f}"}">'
            f'<img alt="{html.escape(e.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{html.escape(e.name)}</b><br>{score}{note}</figcaption></figure>"
        )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p id='summary'></p>"
        "<p>Worst first: empty masks, then the lowest scores (red outline: under "
        f"{100 * low:.0f}). Scores are the Dice with a reference mask, the IoU of the mask's box with a drawn box, "
        "or, without either, how well the ensemble's runs agree.</p>"
        f"<div class='grid'>{''.join(tiles)}</div><script>{SCRIPT}</script></body></html>\n"
    )
    write_text(path, page)
