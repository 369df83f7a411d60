"""Re-prompting: the frozen decoder prompted again with the box of the head's own mask, loosened.

The head's masks tend to stop short of a structure's edge, and the backbone's box prompt does better with a box a
little larger than the structure than with the tight one (docs/results.md). ``mask_boxes`` takes the box of each
mask's largest connected component and moves each side out by ``margin`` times the box's width or height;
``reprompt`` decodes those boxes. Images whose mask is empty keep the head's probabilities.

The box is taken from the pixels whose probability is above a ``box_threshold``, the mask's threshold by default. A
higher one takes the box of the heads' confident core: where the heads spill over from the structure onto a
neighbour that looks alike (the amniotic fluid around a small fetal head), the core's box is the structure's, and the
decoder, prompted with it, keeps to the structure. Where no pixel is above it, the mask's box is used.

``choose_margin`` picks the margin, and with several box thresholds the pair, from boxes alone (``group_margins``:
for each recipe's ensemble): on images with a tight box (the validation split, or a user's training boxes), the one
whose re-prompted masks' boxes overlap those tight boxes best, or none (no re-prompting) when the head's own masks do
better. On real HC18 images this criterion ranks margins as Dice does; on the demo's phantoms it turns re-prompting
off for the CAMUS atrium, whose masks a loosened box makes worse (docs/results.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from autoprompt.geometry import inclusive_box_iou, largest_component_box
from autoprompt.model.decoding import PromptDecoder, decode_scored
from autoprompt.settings import AUTO, RepromptSettings

log = logging.getLogger(__name__)


def loosen(boxes: Tensor, margin: float, size: int) -> Tensor:
    """N x 4 boxes (x_min, y_min, x_max, y_max) -> each side moved out by ``margin`` x the box's width or height,
    clamped to an S x S image (``size``)."""
    assert margin >= 0, f"margin must be >= 0, got {margin}"
    boxes = boxes.float()
    dx, dy = margin * (boxes[:, 2] - boxes[:, 0]), margin * (boxes[:, 3] - boxes[:, 1])
    return torch.stack([boxes[:, 0] - dx, boxes[:, 1] - dy, boxes[:, 2] + dx, boxes[:, 3] + dy], 1).clamp(0, size - 1)


def mask_boxes(masks: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """N x S x S bool masks -> N x 4 float boxes (label frame) of their largest components, each side moved out by
    ``margin`` x the box's side and clamped to the image, and N bool: which masks have any foreground (the others'
    boxes are zeros)."""
    assert masks.ndim == 3 and masks.shape[1] == masks.shape[2], f"expected N x S x S masks, got {tuple(masks.shape)}"
    boxes, found = torch.zeros(len(masks), 4), torch.zeros(len(masks), dtype=torch.bool)
    for i, mask in enumerate(masks.numpy()):
        box = largest_component_box(mask)
        if box is not None:
            boxes[i], found[i] = torch.tensor(box, dtype=torch.float32), True
    return loosen(boxes, margin, masks.shape[-1]) * found[:, None], found


def prompt_boxes(
    probs: Tensor, margin: float, threshold: float, box_threshold: float | None = None
) -> tuple[Tensor, Tensor]:
    """``mask_boxes`` of the masks (``probs > threshold``), or of their cores (``probs > box_threshold``) where a
    core is found: the boxes ``reprompt`` prompts with (N x 4), and which masks have any (N bool)."""
    boxes, found = mask_boxes(probs > threshold, margin)
    if box_threshold is not None and box_threshold != threshold:
        core_boxes, in_core = mask_boxes(probs > box_threshold, margin)
        boxes[in_core] = core_boxes[in_core]
    return boxes, found


@torch.no_grad()
def reprompt(
    decoder: PromptDecoder,
    embeddings: Tensor,
    probs: Tensor,
    margin: float,
    threshold: float,
    batch_size: int,
    device: torch.device,
    iou: Tensor | None = None,
    box_threshold: float | None = None,
) -> Tensor:
    """N x 256 x 64 x 64 embeddings and the head's N x S x S probabilities -> N x S x S probabilities of the decoder
    prompted with the loosened boxes of the masks (``probs > threshold``), or of their cores (``probs >
    box_threshold``) where a core is found; an empty mask keeps its probabilities. ``iou`` (N, the decoder's predicted
    IoU of each mask given): updated in place for the masks decoded again."""
    assert len(embeddings) == len(probs), f"{len(embeddings)} embeddings for {len(probs)} probability maps"
    boxes, found = prompt_boxes(probs, margin, threshold, box_threshold)
    out = probs.clone()
    if found.any():
        index = torch.nonzero(found).flatten()
        out[index], predicted = decode_scored(
            decoder, embeddings[index], probs.shape[-1], batch_size, device, boxes=boxes[index]
        )
        if iou is not None:
            iou[index] = predicted
    return out


def box_agreement(probs: Tensor, boxes: Tensor, threshold: float) -> Tensor:
    """N: IoU of the box of each mask's (``probs > threshold``) largest component with the given N x 4 tight box
    (label frame, inclusive pixel indices); 0 where a mask is empty."""
    found_boxes, found = mask_boxes(probs > threshold, 0.0)
    return inclusive_box_iou(found_boxes, boxes.float()).diagonal() * found


@dataclass(frozen=True)
class MarginChoice:
    """What ``choose_margin`` picked: the ``margin`` (None: no re-prompting), the ``box_threshold`` its boxes are
    taken at, and each choice's mean box IoU (``scores``: key ``off``, the margin, or ``margin@box_threshold`` where
    there were several box thresholds)."""

    margin: float | None
    box_threshold: float
    scores: dict[str, float]


def choose_margin(
    decoder: PromptDecoder,
    embeddings: Tensor,
    boxes: Tensor,
    probs: Tensor,
    candidates: list[float],
    threshold: float,
    batch_size: int,
    device: torch.device,
    box_thresholds: list[float] | None = None,
) -> MarginChoice:
    """The margin of ``candidates`` (or None: no re-prompting), and the box threshold of ``box_thresholds`` (default:
    the mask's ``threshold`` alone), whose masks' boxes agree best with the tight boxes of N images (N x 4), from the
    head's N x S x S probabilities on them. Ties keep the earlier choice: ``off`` first, then each box threshold in
    order, each with every margin."""
    assert len(boxes) == len(probs) > 0, f"{len(boxes)} tight boxes for {len(probs)} probability maps"
    tried = list(box_thresholds) if box_thresholds else [threshold]
    scores, pairs = {"off": float(box_agreement(probs, boxes, threshold).mean())}, {"off": (None, threshold)}
    seen: dict[bytes, float] = {}  # a threshold whose boxes an earlier one gave: the same answers, not decoded again
    for taken in tried:
        same = seen.setdefault(prompt_boxes(probs, 0.0, threshold, taken)[0].numpy().tobytes(), taken)
        for margin in candidates:
            key = str(margin) if len(tried) == 1 else f"{margin}@{taken}"
            if same != taken:
                scores[key] = scores[f"{margin}@{same}"]
            else:
                again = reprompt(decoder, embeddings, probs, margin, threshold, batch_size, device, box_threshold=taken)
                scores[key] = float(box_agreement(again, boxes, threshold).mean())
            pairs[key] = (float(margin), taken)
    best = max(scores, key=scores.__getitem__)  # the first of equals: dicts keep their order
    margin, taken = pairs[best]
    return MarginChoice(margin, taken, {k: round(v, 4) for k, v in scores.items()})


def group_margins(
    settings: RepromptSettings,
    decoder: torch.nn.Module,
    head_groups: list[str],
    embeddings: torch.Tensor | None,
    boxes: torch.Tensor,
    ensembles: dict[str, torch.Tensor],
    threshold: float,
    batch: int,
    device: torch.device,
) -> dict[str, dict]:
    """Each head group's margin (``recipe/regime``): the configured one, or with ``auto`` the one ``choose_margin``
    picks on the N validation images (N x 256 x 64 x 64 ``embeddings``, N x 4 tight ``boxes``, each group's N x S x S
    ensemble probabilities), with the mean box IoU of each choice (``choices``: None is no re-prompting; a margin, or
    ``[margin, box threshold]`` where several box thresholds were tried). ``box_threshold`` is there only where it is
    not the mask's ``threshold``. ``auto`` without validation images (``embeddings`` None): the fallback for every
    group, at the box threshold set (or the mask's threshold, there being nothing to choose one on)."""
    box_thresholds = settings.thresholds(threshold)
    if not settings.auto:
        return {
            group: with_box_threshold({"margin": settings.margin}, box_thresholds[0], threshold)
            for group in head_groups
        }
    if embeddings is None:
        log.warning(
            "no validation images to choose the re-prompt margin on: reprompt.fallback (%s) it is", settings.fallback
        )
        fixed = box_thresholds[0] if settings.box_threshold != AUTO else threshold
        return {
            group: with_box_threshold({"margin": settings.fallback, "validation_images": 0}, fixed, threshold)
            for group in head_groups
        }
    out = {}
    for group in head_groups:
        chosen = choose_margin(
            decoder, embeddings, boxes, ensembles[group], list(settings.candidates), threshold, batch, device,
            box_thresholds,
        )  # fmt: skip
        pairs = (
            settings.candidates
            if len(box_thresholds) == 1
            else [[m, b] for b in box_thresholds for m in settings.candidates]
        )
        out[group] = with_box_threshold({"margin": chosen.margin}, chosen.box_threshold, threshold) | {
            "choices": [None, *pairs],
            "validation_box_iou": list(chosen.scores.values()),
            "validation_images": len(boxes),
        }
    return out


def recorded_box_threshold(box_threshold: float, threshold: float) -> float | None:
    """A box threshold as the model file and the metrics JSON record it: None where it is the mask's ``threshold``
    (their readers' default)."""
    return None if box_threshold == threshold else box_threshold


def with_box_threshold(record: dict, box_threshold: float, threshold: float) -> dict:
    """``record`` with its ``box_threshold`` where one is recorded (``recorded_box_threshold``)."""
    kept = recorded_box_threshold(box_threshold, threshold)
    return record if kept is None else record | {"box_threshold": kept}
