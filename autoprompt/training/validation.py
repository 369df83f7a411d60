"""Validation during training: Dice of the head's masks on the validation images, each epoch or every few.

Two references: the backbone's own mask when prompted with the image's tight box (``dice_box``; it needs only the
boxes, so selection by it needs no masks), and the annotated masks where there are some (``dice_mask``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from autoprompt.evaluation.metrics import dice
from autoprompt.model.decoding import PromptDecoder, decode

THRESHOLD = 0.5


@dataclass
class ValidationSet:
    """``embeddings``: N x 256 x 64 x 64; ``box_masks``: N x S x S, the box-prompted masks; ``masks``: N x S x S
    annotated masks, or None for a dataset with boxes only; ``batch_size``: images per decoder call."""

    embeddings: Tensor
    box_masks: Tensor
    masks: Tensor | None = None
    batch_size: int = 16


@torch.no_grad()
def score(
    head: torch.nn.Module,
    decoder: PromptDecoder,
    validation: ValidationSet,
    label_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Mean validation Dice (0-1) of the head's thresholded masks against each reference available."""
    was_training = head.training
    probs = decode(decoder, validation.embeddings, label_size, validation.batch_size, device, head=head)
    head.train(was_training)
    masks = probs > THRESHOLD
    scores = {"dice_box": float(dice(masks, validation.box_masks).mean())}
    if validation.masks is not None:
        scores["dice_mask"] = float(dice(masks, validation.masks).mean())
    return scores
