"""Re-prompting: the box of a mask's largest component, loosened, and the decoder prompted with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoprompt.inference.reprompt import box_agreement, choose_margin, group_margins, loosen, mask_boxes, reprompt
from autoprompt.model import backbones
from autoprompt.model.decoding import decode
from autoprompt.settings import RepromptSettings

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
    expected = decode(decoder, embeddings[:2], 128, 2, CPU, boxes=boxes)
    torch.testing.assert_close(out[:2], expected)
    assert torch.equal(out[2], probs[2])
    assert not torch.equal(out[0], probs[0]), "the decoder's answer replaces the head's"


def test_box_agreement_is_the_iou_of_the_masks_box_with_the_tight_box():
    probs = torch.zeros(3, 64, 64)
    probs[0, 10:30, 10:30] = 0.9  # its box is the tight box
    probs[1, 10:30, 10:20] = 0.9  # half of it
    tight = torch.tensor([[10, 10, 29, 29]] * 3)
    assert box_agreement(probs, tight, 0.5).tolist() == pytest.approx([1.0, 0.5, 0.0]), "empty masks agree with none"


class BoxPainter(torch.nn.Module):
    """A decoder whose answer to a box prompt is that box, filled (input and label frames both 256 x 256): what a
    re-prompted mask's box is, and so which margin fits, can be worked out by hand."""

    input_size = 256

    def box_prompt(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return boxes[:, None, :].float(), torch.zeros(len(boxes), 1)

    def forward(self, embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x0, y0, x1, y1 = (sparse[:, 0, i, None, None] for i in range(4))
        ys, xs = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
        inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        return torch.where(inside, 20.0, -20.0)[:, None]

    def scored(self, embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The filled box, and a predicted IoU of 1: a box's answer is exactly that box."""
        logits = self(embeddings, sparse, dense)
        return logits, torch.ones(len(logits))


def test_choose_margin_keeps_masks_whose_boxes_are_tight_and_loosens_short_ones():
    """From boxes alone: masks that already fill their tight boxes are not re-prompted (ties keep the head's masks);
    masks that stop short of them are re-prompted with the candidate whose answers' boxes match the tight boxes."""
    embeddings = torch.zeros(2, 256, 64, 64)
    probs = torch.zeros(2, 256, 256)
    probs[0, 30:91, 40:91] = 0.9  # box sides of 60 and 50 pixels (x_max - x_min): 10% of them are whole pixels
    probs[1, 100:141, 20:121] = 0.9
    masks_boxes, _ = mask_boxes(probs > 0.5, 0.0)
    candidates = [0.0, 0.1, 0.3]
    chosen = choose_margin(BoxPainter(), embeddings, masks_boxes, probs, candidates, 0.5, 2, CPU)
    scores = chosen.scores
    assert chosen.margin is None and scores["off"] == scores["0.0"] == 1.0 and scores["0.3"] < 1.0
    assert chosen.box_threshold == 0.5, "one box threshold, the mask's, where none are given"

    tight = loosen(masks_boxes, 0.1, 256)  # the structures are larger than the head's masks
    chosen = choose_margin(BoxPainter(), embeddings, tight, probs, candidates, 0.5, 2, CPU)
    scores = chosen.scores
    assert chosen.margin == 0.1 and scores["0.1"] == 1.0 and max(scores["off"], scores["0.0"], scores["0.3"]) < 1.0


def test_a_box_threshold_takes_the_box_of_the_confident_core_and_falls_back_to_the_mask():
    """The heads spill over onto a look-alike neighbour with lower confidence: above the box threshold only the
    structure is left, and its box is what the decoder is prompted with; a mask with no pixel above it keeps the
    mask's box."""
    embeddings = torch.zeros(2, 256, 64, 64)
    probs = torch.zeros(2, 256, 256)
    probs[0, 20:200, 20:200] = 0.6  # the spill-over
    probs[0, 100:141, 100:161] = 0.95  # the structure, a confident core
    probs[1, 50:91, 60:121] = 0.7  # confident nowhere
    plain = reprompt(BoxPainter(), embeddings, probs, 0.0, 0.5, 2, CPU) > 0.5
    cored = reprompt(BoxPainter(), embeddings, probs, 0.0, 0.5, 2, CPU, box_threshold=0.9) > 0.5
    assert mask_boxes(plain, 0.0)[0][0].tolist() == [20, 20, 199, 199], "the mask's box: the spill-over's"
    assert mask_boxes(cored, 0.0)[0][0].tolist() == [100, 100, 160, 140], "the core's box"
    assert torch.equal(cored[1], plain[1]), "no core: the mask's box"


def test_choose_margin_picks_the_box_threshold_whose_boxes_match_the_tight_ones():
    """Several box thresholds: each is tried with every margin, and the pair whose answers' boxes match the tight
    boxes wins; where the cores are the structures, that is the core's threshold."""
    embeddings = torch.zeros(2, 256, 64, 64)
    probs = torch.zeros(2, 256, 256)
    probs[:, 20:200, 20:200] = 0.6
    probs[0, 100:141, 100:161] = 0.95
    probs[1, 40:81, 30:91] = 0.95
    cores, _ = mask_boxes(probs > 0.9, 0.0)
    tight = loosen(cores, 0.1, 256)
    chosen = choose_margin(BoxPainter(), embeddings, tight, probs, [0.0, 0.1], 0.5, 2, CPU, [0.5, 0.9])
    assert (chosen.margin, chosen.box_threshold) == (0.1, 0.9) and chosen.scores["0.1@0.9"] == 1.0
    assert list(chosen.scores) == ["off", "0.0@0.5", "0.1@0.5", "0.0@0.9", "0.1@0.9"]
    assert max(v for k, v in chosen.scores.items() if k != "0.1@0.9") < 1.0


def test_a_box_threshold_that_gives_the_same_boxes_is_not_decoded_again_and_loses_the_tie():
    """Where every box threshold boxes the same pixels, the answers are the same: the later thresholds reuse the
    first's scores, and the tie keeps the first, the mask's own boxes."""

    class Counting(BoxPainter):
        calls = 0

        def scored(self, embeddings, sparse, dense):
            Counting.calls += 1
            return super().scored(embeddings, sparse, dense)

    embeddings = torch.zeros(2, 256, 64, 64)
    probs = torch.zeros(2, 256, 256)
    probs[:, 30:91, 40:91] = 0.99  # confident throughout: every box threshold gives the mask's box
    tight, _ = mask_boxes(probs > 0.5, 0.1)
    chosen = choose_margin(Counting(), embeddings, tight, probs, [0.0, 0.1], 0.5, 2, CPU, [0.5, 0.9])
    assert Counting.calls == 2, "one batch of two images per margin, for the first box threshold only"
    assert chosen.scores["0.1@0.9"] == chosen.scores["0.1@0.5"] == 1.0 and chosen.box_threshold == 0.5


def test_group_margins_keeps_a_set_box_threshold_and_records_only_a_core():
    """A margin and box threshold set are recorded as set; with ``auto`` and no validation images, the fallback keeps a
    box threshold set, but has none to choose one on: the masks' own boxes, which the record leaves out."""
    set_both = RepromptSettings(margin=0.1, box_threshold=0.8)
    assert group_margins(set_both, None, ["a/fewshot"], None, None, {}, 0.5, 2, CPU) == {
        "a/fewshot": {"margin": 0.1, "box_threshold": 0.8}
    }
    fallback = group_margins(RepromptSettings(box_threshold=0.9), None, ["a/fewshot"], None, None, {}, 0.5, 2, CPU)
    assert fallback == {"a/fewshot": {"margin": 0.1, "validation_images": 0, "box_threshold": 0.9}}
    nothing_to_choose_on = group_margins(RepromptSettings(), None, ["a/fewshot"], None, None, {}, 0.5, 2, CPU)
    assert nothing_to_choose_on == {"a/fewshot": {"margin": 0.1, "validation_images": 0}}
    masks = group_margins(
        RepromptSettings(margin=0.1, box_threshold=0.5), None, ["a/fewshot"], None, None, {}, 0.5, 2, CPU
    )
    assert masks == {"a/fewshot": {"margin": 0.1}}, "the mask's threshold is the reader's default: not recorded"
