"""``predict --report``: one self-contained HTML page to review a prediction folder, worst inputs first.

Each input is a tile: a thumbnail of the input (a volume's slice with the largest mask) with the mask's outline, its
name and a score: Dice against a reference mask where one is given (``--masks``), else the agreement of the mask's
box with a drawn box (``--boxes``: box IoU), else how well the ensemble's runs agree with each other (mean Dice of
each run's mask with the ensemble's). A volume's tile also shows its slices as a strip (its ``STRIP`` worst slices,
worst first, where it has more), each with its mask and score (Dice with the reference's slice, else the decoder's
predicted IoU), the slices judged absent and emptied (``autoprompt.inference.presence``) marked; the volume's worst
slice decides its place. Tiles are sorted by that score, empty masks first, so that the inputs to look at come first.
The page needs no server and no network: the thumbnails are inlined.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk
import torch

from autoprompt.data.boxes import Box
from autoprompt.data.images import as_stack, on_grid_of
from autoprompt.errors import InputError
from autoprompt.evaluation.metrics import mask_dice
from autoprompt.geometry import inclusive_box_iou, largest_component_box
from autoprompt.io import write_text

THUMBNAIL = 256  # the longest side of a thumbnail, in pixels
STRIP = 12  # a volume's slices shown at most: its worst first where it has more
STRIP_SIDE = 96  # the longest side of a slice's thumbnail in the strip
KINDS = {"dice": "Dice with the reference mask", "box_iou": "box IoU with the drawn box", "agreement": "run agreement"}


@dataclass(frozen=True)
class SliceTile:
    """One slice of a volume in its strip: its index, thumbnail (PNG bytes), score in [0, 1] (None: none), whether
    it was judged absent (its mask emptied) and whether its mask is empty."""

    index: int
    thumbnail: bytes
    score: float | None
    absent: bool
    empty: bool


@dataclass(frozen=True)
class Entry:
    """One input of the report: its name, thumbnail (PNG bytes), score in [0, 1] and what the score is, whether
    its mask is empty, and for a volume its slices' strip."""

    name: str
    thumbnail: bytes
    score: float | None
    kind: str | None
    empty: bool
    slices: tuple[SliceTile, ...] = ()

    @property
    def rank(self) -> float | None:
        """The score that places the tile: a volume's worst slice's, else the input's."""
        scores = [t.score for t in self.slices if t.score is not None]
        return min(scores) if scores else self.score


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


def thumbnail(picture: np.ndarray, side: int = THUMBNAIL) -> bytes:
    """A picture scaled to at most ``side`` pixels on its longest side, as PNG bytes."""
    scale = min(1.0, side / max(picture.shape[:2]))
    if scale < 1:
        picture = cv2.resize(picture, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", picture)
    assert ok, "OpenCV could not encode a PNG"
    return encoded.tobytes()


def strip(
    image: sitk.Image,
    mask: np.ndarray,
    reference: np.ndarray | None,
    absent: list[int],
    predicted_iou: np.ndarray | None,
) -> tuple[SliceTile, ...]:
    """A volume's slices (the first axis of its own layout) as strip tiles, each scored by its Dice with the
    reference's slice (1 where both are empty), else by ``predicted_iou`` (Z, the decoder's; None where the mask is
    empty); in slice order, or its ``STRIP`` worst slices, worst first, where it has more."""
    grey = sitk.GetArrayFromImage(image).astype(np.float32)
    if grey.ndim != 3 or len(grey) < 2 or as_stack(image).order not in (None, (0, 1, 2)):
        return ()
    low, high = np.percentile(grey, (0.5, 99.5))
    tiles = []
    for k in range(len(grey)):
        found = bool(mask[k].any())
        if reference is not None:
            score = mask_dice(mask[k], reference[k])
        else:
            score = float(predicted_iou[k]) if predicted_iou is not None and found else None
        picture = np.clip((grey[k] - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
        picture = cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR)
        contours, _ = cv2.findContours((mask[k] > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(picture, contours, -1, (0, 0, 255), 1)
        tiles.append(SliceTile(k, thumbnail(picture, STRIP_SIDE), score, k in absent, not found))
    if len(tiles) > STRIP:
        tiles = sorted(tiles, key=lambda t: (t.score is None, t.score or 0.0, t.index))[:STRIP]
    return tuple(tiles)


def box_iou(mask: np.ndarray, image: sitk.Image, boxes: tuple[Box, ...]) -> float:
    """Mean IoU, over the drawn ``boxes`` of an input, of each box with the box of the mask on its slice (the mask in
    the input's own layout; slices as ``images.as_stack`` cuts them)."""
    stack = sitk.GetArrayFromImage(as_stack(on_grid_of(mask.astype(np.uint8), image)).stack)
    scores = []
    for drawn in boxes:
        k = drawn.slice or 0
        if k >= len(stack):
            raise InputError(f"slice {k} of a box is outside the input ({len(stack)} slices); fix the boxes file")
        found = largest_component_box(stack[k])
        corners = torch.tensor([[drawn.x_min, drawn.y_min, drawn.x_max, drawn.y_max]])
        scores.append(0.0 if found is None else float(inclusive_box_iou(torch.tensor([found]), corners)[0, 0]))
    return float(np.mean(scores))


def entry(
    name: str,
    image: sitk.Image,
    mask: np.ndarray,
    reference: np.ndarray | None = None,
    boxes: tuple[Box, ...] = (),
    agreement: float | None = None,
    absent: list[int] | None = None,
    predicted_iou: np.ndarray | None = None,
) -> Entry:
    """The report's tile of one input: ``mask`` (its own layout) scored against ``reference`` (a mask of the same
    layout), else ``boxes``, else by ``agreement``; a volume's slices as a strip (``strip``: ``absent``, the slices
    judged absent; ``predicted_iou``, Z, each slice's score without a reference)."""
    if reference is not None:
        if reference.shape != mask.shape:
            raise InputError(f"{name}: its reference mask is {reference.shape}, its prediction {mask.shape}")
        score, kind = mask_dice(mask, reference), "dice"
    elif boxes:
        score, kind = box_iou(mask, image, boxes), "box_iou"
    else:
        score, kind = agreement, "agreement" if agreement is not None else None
    slices = strip(image, mask, reference, absent or [], predicted_iou)
    return Entry(name, thumbnail(overlay_picture(image, mask)), score, kind, not bool((mask > 0).any()), slices)


def order(entries: list[Entry]) -> list[Entry]:
    """Worst first: empty masks, then by score (a volume's worst slice's; inputs without a score last), then by
    name."""
    return sorted(entries, key=lambda e: (not e.empty, e.rank is None, e.rank or 0.0, e.name))


STYLE = """
body { font-family: sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
h1 { font-size: 1.3em; } p { max-width: 60em; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.tile { margin: 0; width: 260px; background: white; border: 1px solid #ddd; padding: 6px; }
.tile img { max-width: 256px; max-height: 256px; display: block; margin: auto; }
.tile figcaption { font-size: 0.85em; margin-top: 4px; overflow-wrap: anywhere; }
.low { border-color: #c00; border-width: 2px; } .empty { background: #fee; }
.tile.volume { width: auto; max-width: 100%; }
.strip { display: flex; flex-wrap: wrap; gap: 4px; margin-top: 6px; }
.slice { margin: 0; font-size: 0.75em; text-align: center; border: 1px solid #eee; padding: 2px; }
.slice img { max-width: 96px; max-height: 96px; } .slice.absent { background: #eef; border-color: #88c; }
.slice.low { border-color: #c00; }
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
        classes = ["tile"] + (["empty"] if e.empty else []) + (["low"] if e.rank is not None and e.rank < low else [])
        classes += ["volume"] if e.slices else []
        score = "no score" if e.score is None else f"{KINDS[e.kind]}: {100 * e.score:.1f}"
        note = " · empty mask" if e.empty else ""
        data = base64.b64encode(e.thumbnail).decode()
        tiles.append(
            f'<figure class="{" ".join(classes)}" data-score="{"" if e.rank is None else f"{e.rank:.4f}"}">'
            f'<img alt="{html.escape(e.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{html.escape(e.name)}</b><br>{score}{note}</figcaption>{_strip_html(e)}</figure>"
        )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p id='summary'></p>"
        "<p>Worst first: empty masks, then the lowest scores (red outline: under "
        f"{100 * low:.0f}). Scores are the Dice with a reference mask, the IoU of the mask's box with a drawn box, "
        "or, without either, how well the ensemble's runs agree. A volume shows its slices (its worst first where it "
        "has many), each scored by its Dice with the reference's slice, else by the decoder's predicted IoU; blue: "
        "judged absent, its mask emptied; the worst slice places the volume.</p>"
        f"<div class='grid'>{''.join(tiles)}</div><script>{SCRIPT}</script></body></html>\n"
    )
    write_text(path, page)


def _strip_html(e: Entry) -> str:
    """A volume's strip of slices, or nothing."""
    if not e.slices:
        return ""
    cells = []
    for t in e.slices:
        classes = (
            ["slice"] + (["absent"] if t.absent else []) + (["low"] if t.score is not None and t.score < 0.5 else [])
        )
        label = "absent" if t.absent else ("empty" if t.empty else "")
        score = "" if t.score is None else f"{100 * t.score:.0f}"
        data = base64.b64encode(t.thumbnail).decode()
        cells.append(
            f'<figure class="{" ".join(classes)}" data-slice="{t.index}"><img alt="slice {t.index}" '
            f'src="data:image/png;base64,{data}"><br>{t.index}: {score} {label}</figure>'
        )
    return f"<div class='strip'>{''.join(cells)}</div>"
