"""Presence: whether a slice (or a 2D image) holds the structure at all, and an empty mask where it does not.

The head always produces a prompt and the decoder always draws something, so a slice past a structure's end (the
atria above the ventricles' base, the liver below the apex) gets a mask too. A structure occupies one contiguous run
of a volume's slices, so presence is decided from the ends inwards: each end slice in turn is judged, and while it
is judged absent its mask is emptied and the next one in is judged; the first slice judged present stops the walk.
Slices between present ones are never emptied (a missing slice inside the run is the volume fit's business,
``autoprompt.inference.volume``). A 2D image (a one-slice input) is its own end, judged only where ``images`` is
set: the rule was measured on volumes' ends, and a folder's pictures are mostly there because they hold the
structure, where an emptied mask is a miss (docs/volumes.md: Presence).

A slice is judged absent (``judge``) by the evidence it has, none of which needs an annotation beyond the boxes the
head was trained on:

- ``iou``: the decoder's own estimate of its mask's IoU (``decoding.decode_scored``) under ``min_iou``;
- ``agreement``: the runs of an ensemble disagree on the slice (mean Dice of each run's mask with the ensemble's
  under ``min_agreement``; one run always agrees);
- ``sequence``: its mask's box does not continue the sequence of the slices further in: box IoU with the next
  slice in under ``min_box_iou``, or an area more than ``max_growth`` times that slice's (a structure narrows
  towards its ends).

``Presence`` holds which of them are used and their thresholds; ``autoprompt.inference.policy`` carries it from
``train``/``evaluate`` into the model file and ``predict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from autoprompt.geometry import inclusive_box_iou
from autoprompt.inference.reprompt import mask_boxes

CUES = ("iou", "agreement", "sequence")


@dataclass(frozen=True)
class Evidence:
    """What one input's Z slices say about presence: ``found`` (Z bool: the mask is not empty), ``iou`` (Z: the
    decoder's predicted IoU of each final mask), ``agreement`` (Z: mean Dice of each run's mask with the ensemble's
    on the slice; 1 for one run), ``area`` (Z: mask pixels) and ``boxes`` (Z x 4: the box of each mask's largest
    component, inclusive pixels, zeros where empty), in slice order."""

    found: Tensor
    iou: Tensor
    agreement: Tensor
    area: Tensor
    boxes: Tensor

    def __len__(self) -> int:
        return len(self.found)


def slice_agreement(each: list[Tensor], threshold: float) -> Tensor:
    """Each run's Z x S x S probabilities -> Z: mean over runs of the Dice of its mask with the ensemble's (the mean
    of the probabilities, thresholded) on each slice; 1 where both are empty, and for one run."""
    if len(each) < 2:
        return torch.ones(len(each[0]))
    ensemble = (sum(each) / len(each)) > threshold
    dices = []
    for probs in each:
        mask = probs > threshold
        overlap = (mask & ensemble).flatten(1).sum(1).double()
        total = (mask.flatten(1).sum(1) + ensemble.flatten(1).sum(1)).double()
        dices.append(torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total)))
    return torch.stack(dices).mean(0).float()


def gather(probs: Tensor, iou: Tensor, agreement: Tensor, threshold: float) -> Evidence:
    """Z x S x S final probabilities, their Z predicted IoUs and Z run agreements -> the slices' ``Evidence``."""
    masks = probs > threshold
    boxes, found = mask_boxes(masks, 0.0)
    return Evidence(found, iou.float(), agreement.float(), masks.flatten(1).sum(1).float(), boxes)


@dataclass(frozen=True)
class Presence:
    """The rule: which ``cues`` judge a slice (a subset of ``CUES``; a slice failing any of them is absent) and
    their thresholds (the module's docstring)."""

    cues: tuple[str, ...] = ("agreement", "sequence")
    min_iou: float = 0.8
    min_agreement: float = 0.85
    min_box_iou: float = 0.3
    max_growth: float = 1.5
    images: bool = False  # 2D images judged too (one-slice inputs: agreement and predicted IoU alone)

    def __post_init__(self) -> None:
        unknown = set(self.cues) - set(CUES)
        assert not unknown, f"unknown presence cues {sorted(unknown)}; use {CUES}"

    def as_dict(self) -> dict:
        return {
            "cues": list(self.cues),
            "min_iou": self.min_iou,
            "min_agreement": self.min_agreement,
            "min_box_iou": self.min_box_iou,
            "max_growth": self.max_growth,
            "images": self.images,
        }

    @classmethod
    def from_dict(cls, record: dict) -> Presence:
        """The rule of ``as_dict``'s record (other keys, such as evaluate's counts beside it, are left aside)."""
        fields = ("min_iou", "min_agreement", "min_box_iou", "max_growth")
        values = {k: float(record[k]) for k in fields if k in record}
        return cls(tuple(record.get("cues", ())), **values, images=bool(record.get("images", False)))

    def describe(self) -> str:
        words = {
            "iou": f"predicted IoU < {self.min_iou:g}",
            "agreement": f"run agreement < {self.min_agreement:g}",
            "sequence": f"box IoU with the next slice in < {self.min_box_iou:g} or area > {self.max_growth:g} x",
        }
        said = " or ".join(words[c] for c in self.cues) or "no cue"
        return said if self.images else f"{said} (volumes only)"


def off_sequence(evidence: Evidence, i: int, inner: int | None, rule: Presence) -> bool:
    """Whether slice ``i``'s box breaks the sequence of the slice further in (``inner``; None: there is none)."""
    if inner is None or not bool(evidence.found[inner]):
        return False
    iou = float(inclusive_box_iou(evidence.boxes[i][None], evidence.boxes[inner][None])[0, 0])
    return iou < rule.min_box_iou or float(evidence.area[i]) > rule.max_growth * float(evidence.area[inner])


def judge(evidence: Evidence, i: int, inner: int | None, rule: Presence) -> bool:
    """Whether slice ``i`` is judged absent by ``rule``; ``inner``: the next slice towards the volume's middle
    (None for a 2D image). An empty mask is absent already."""
    if not bool(evidence.found[i]):
        return True
    return (
        ("iou" in rule.cues and float(evidence.iou[i]) < rule.min_iou)
        or ("agreement" in rule.cues and float(evidence.agreement[i]) < rule.min_agreement)
        or ("sequence" in rule.cues and off_sequence(evidence, i, inner, rule))
    )


def absent_slices(evidence: Evidence, rule: Presence) -> Tensor:
    """Z bool: the slices whose masks are emptied, walking in from each end while the end slice is judged absent
    (already empty masks count as absent and the walk goes on past them); none of a 2D image unless ``images``.
    Never every slice of a volume but one found: the slice the decoder is surest of stays, so that a volume always
    keeps a mask where one was found."""
    z = len(evidence)
    absent = torch.zeros(z, dtype=torch.bool)
    if not rule.cues or (z == 1 and not rule.images):
        return absent
    for order in (range(z), range(z - 1, -1, -1)):
        order = list(order)
        for step, i in enumerate(order):
            inner = order[step + 1] if step + 1 < z else None
            if absent[i] or not judge(evidence, i, inner, rule):
                break
            absent[i] = True
    found = evidence.found
    if z > 1 and bool(found.any()) and bool((absent | ~found).all()):
        keep = int(torch.argmax(torch.where(found, evidence.iou, torch.full_like(evidence.iou, -1.0))))
        absent[keep] = False
    return absent & found


def empty_absent(
    probs: Tensor, iou: Tensor, agreement: Tensor, volumes: list[Tensor], rule: Presence, threshold: float
) -> tuple[Tensor, int]:
    """N x S x S probabilities of N slices with their N predicted IoUs and N run agreements; ``volumes``: each
    volume's rows in slice order -> the probabilities with each volume's slices judged absent zeroed, and how many
    masks were emptied."""
    out, emptied = probs.clone(), 0
    for rows in volumes:
        evidence = gather(probs[rows], iou[rows], agreement[rows], threshold)
        absent = rows[absent_slices(evidence, rule)]
        out[absent] = 0.0
        emptied += len(absent)
    return out, emptied
