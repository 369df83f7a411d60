"""Boxes fitted across a volume's slices: the slices whose mask is missing or off the sequence, prompted again.

A structure's box changes smoothly from one slice of a volume to the next, so a slice's neighbours say where its box
should be. ``fit_sequence`` takes the boxes of a volume's masks in slice order and fits that sequence: it drops, one
at a time, the slice whose box overlaps (IoU) its nearest kept neighbours least, until every interior slice left
overlaps at least one of its two neighbours by ``min_iou``; each dropped slice (``off``) and each empty slice between
kept ones (``gap``) gets the box interpolated between its kept neighbours', where their boxes overlap at all (two
boxes apart are not one structure's sequence: a mask found on something else beyond the structure's end would
otherwise pull boxes across the empty slices between). One good neighbour is enough to stay: a
structure may change fast towards one end (the apex), so the slice next to it matches its other neighbour, while a
mask that leaked onto something else matches neither. A slice at either end of the sequence has a neighbour on one
side only, so an end slice is never called off; an empty end slice gets its neighbour's box only with ``ends``
(``end``): where every slice is known to hold the structure, as the test slices of a task do. ``predict`` cannot know
that (slices beyond the apex are rightly empty) and leaves the ends alone.

``refine_volumes`` prompts the decoder again with those boxes, loosened by the re-prompting margin: boxes only, no
masks, the way MedSAM2 carries a prompt from frame to frame.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from autoprompt.geometry import inclusive_box_iou
from autoprompt.inference.reprompt import loosen, mask_boxes
from autoprompt.model.decoding import PromptDecoder, decode_scored

GAP, OFF, END = "gap", "off", "end"  # why a slice is prompted again
REASONS = (GAP, OFF, END)


@dataclass(frozen=True)
class Fitted:
    """A volume's fitted sequence: ``boxes`` Z x 4 (the boxes to prompt the ``redo`` slices with; the others'
    boxes are their own) and each slice's reason to be prompted again (``""``: kept)."""

    boxes: Tensor
    reasons: list[str]

    @property
    def redo(self) -> Tensor:
        """Z bool: the slices to prompt again."""
        return torch.tensor([bool(r) for r in self.reasons], dtype=torch.bool)


def _neighbours(kept: Tensor, i: int) -> tuple[int | None, int | None]:
    """The nearest kept slices before and after slice ``i`` (None where there is none)."""
    before = torch.nonzero(kept[:i]).flatten()
    after = torch.nonzero(kept[i + 1 :]).flatten()
    return (int(before[-1]) if len(before) else None), (i + 1 + int(after[0]) if len(after) else None)


def _between(boxes: Tensor, positions: Tensor, i: int, j: int, k: int) -> Tensor:
    """The box at slice ``i``'s position, interpolated linearly between those of slices ``j`` and ``k``."""
    t = float((positions[i] - positions[j]) / (positions[k] - positions[j]))
    return boxes[j] + t * (boxes[k] - boxes[j])


def _iou(a: Tensor, b: Tensor) -> float:
    return float(inclusive_box_iou(a[None], b[None])[0, 0])


def fit_sequence(boxes: Tensor, found: Tensor, positions: Tensor, min_iou: float, ends: bool) -> Fitted:
    """Z x 4 boxes (x_min, y_min, x_max, y_max, inclusive pixels) of one volume's masks, Z bool ``found`` (the mask
    is not empty) and Z slice positions, in increasing order -> the fitted sequence (the module's docstring)."""
    z = len(boxes)
    assert boxes.shape == (z, 4) and found.shape == positions.shape == (z,), (
        f"expected Z x 4 boxes, Z found, Z positions: {tuple(boxes.shape)}, {tuple(found.shape)}, "
        f"{tuple(positions.shape)}"
    )
    assert bool((positions[1:] > positions[:-1]).all()), f"slice positions must increase: {positions.tolist()}"
    boxes, positions = boxes.float(), positions.double()
    kept = found.clone()
    reasons = ["" if f else GAP for f in found.tolist()]
    while True:  # drop the slice farthest off its neighbours' sequence, then look again
        worst, worst_iou = None, min_iou
        for i in torch.nonzero(kept).flatten().tolist():
            j, k = _neighbours(kept, i)
            if j is not None and k is not None:
                iou = max(_iou(boxes[i], boxes[j]), _iou(boxes[i], boxes[k]))
                if iou < worst_iou:
                    worst, worst_iou = i, iou
        if worst is None:
            break
        kept[worst], reasons[worst] = False, OFF
    out = boxes.clone()
    for i in range(z):
        if kept[i]:
            continue
        j, k = _neighbours(kept, i)
        if j is not None and k is not None:
            if _iou(boxes[j], boxes[k]) > 0:
                out[i] = _between(boxes, positions, i, j, k)
            else:  # neighbours that do not overlap are not one structure's sequence: nothing to carry between
                reasons[i] = ""
        elif ends and (j is not None or k is not None):
            out[i], reasons[i] = boxes[j if j is not None else k], END
        else:
            reasons[i] = ""  # nothing to carry: an empty volume, or an end slice without ``ends``
    return Fitted(out, reasons)


def volume_slices(subjects: list[str], positions: Tensor) -> list[Tensor]:
    """Each subject's rows (a volume's slices) among N, ordered by their N slice ``positions``."""
    runs: dict[str, list[int]] = {}
    for i, subject in enumerate(subjects):
        runs.setdefault(subject, []).append(i)
    return [torch.tensor(sorted(index, key=lambda i: float(positions[i]))) for index in runs.values()]


@torch.no_grad()
def refine_volumes(
    decoder: PromptDecoder,
    embeddings: Tensor,
    probs: Tensor,
    volumes: list[Tensor],
    positions: Tensor,
    margin: float,
    min_iou: float,
    ends: bool,
    threshold: float,
    batch_size: int,
    device: torch.device,
    iou: Tensor | None = None,
) -> tuple[Tensor, Counter]:
    """N x 256 x 64 x 64 embeddings and N x S x S probabilities of N slices; ``volumes``: each volume's row
    positions in slice order; ``positions``: N slice positions -> the probabilities with each volume's missing and
    off-sequence slices (``fit_sequence``) decoded again from their fitted boxes loosened by ``margin``, and how many
    slices were for each reason. ``iou`` (N, the decoder's predicted IoU of each mask given): updated in place for the
    slices decoded again."""
    assert len(embeddings) == len(probs) == len(positions), (
        f"{len(embeddings)} embeddings, {len(probs)} probability maps, {len(positions)} positions"
    )
    size = probs.shape[-1]
    tight, found = mask_boxes(probs > threshold, 0.0)
    redo, boxes, counts = [], [], Counter()
    for rows in volumes:
        fitted = fit_sequence(tight[rows], found[rows], positions[rows], min_iou, ends)
        picked = fitted.redo
        redo.append(rows[picked])
        boxes.append(fitted.boxes[picked])
        counts.update(r for r in fitted.reasons if r)
    out = probs.clone()
    index = torch.cat(redo) if redo else torch.zeros(0, dtype=torch.long)
    if len(index):
        prompts = loosen(torch.cat(boxes), margin, size)
        out[index], predicted = decode_scored(decoder, embeddings[index], size, batch_size, device, boxes=prompts)
        if iou is not None:
            iou[index] = predicted
    return out, counts
