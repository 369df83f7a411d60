"""Re-prompting: the box of a mask's largest component, loosened, and the decoder prompted with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoprompt.inference.reprompt import loosen, mask_boxes, reprompt
from autoprompt.model import backbones
from autoprompt.model.decoding import predict

CPU = torch.device("cpu")


def test_the_box_is_the_largest_components_loosened_and_clamped():
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[0, 10:31, 20:41] = True  # 21 x 21, the largest
    masks[0, 50:53, 50:53] = True  # a stray blob the box must ignore
    masks[1, 0:11, 54:64] = True  # against the top right corner
    boxes, found = mask_boxes(masks, 0.0)
    assert found.tolist() == [True, True, False], "an empty mask has no box"
    assert boxes[0].tolist() == [20, 10, 40, 30] and boxes[1].tolist() == [54, 0, 63, 10]
    assert boxes[2].tolist() == [0, 0, 0, 0]
    loose, _ = mask_boxes(masks, 0.1)
    assert loose[0].tolist() == pytest.approx([18, 8, 42, 32]), "each side out by 10% of the 20-pixel side"
    assert loose[1, 1] == 0 and loose[1, 2] == 63, "clamped to the image"
    assert torch.equal(loosen(boxes, 0.0, 64), boxes)
    with pytest.raises(AssertionError, match="margin"):
        loosen(boxes, -0.1, 64)


def test_reprompt_decodes_the_masks_boxes_and_keeps_empty_masks(lite_checkpoint: Path):
    decoder = backbones.build_prompt_decoder("lite_medsam", lite_checkpoint)
    embeddings = torch.randn(3, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    probs = torch.zeros(3, 128, 128)
    probs[0, 30:90, 40:100] = 0.9
    probs[1, 10:50, 10:40] = 0.7
    probs[2] = 0.3  # under the threshold: no mask, kept as it is
    out = reprompt(decoder, embeddings, probs, 0.05, 0.5, 2, CPU)
    boxes, _ = mask_boxes(probs[:2] > 0.5, 0.05)
    expected = predict(decoder, embeddings[:2], 128, 2, CPU, boxes=boxes)
    torch.testing.assert_close(out[:2], expected)
    assert torch.equal(out[2], probs[2])
    assert not torch.equal(out[0], probs[0]), "the decoder's answer replaces the head's"
