"""Boxes fitted across a volume's slices: gaps filled, off-sequence slices found, ends carried only when asked."""

from __future__ import annotations

import pytest
import torch

from autoprompt.inference.reprompt import mask_boxes
from autoprompt.inference.volume import END, GAP, OFF, fit_sequence, refine_volumes, volume_slices
from tests.test_reprompt import BoxPainter

CPU = torch.device("cpu")


def shrinking(z: int) -> torch.Tensor:
    """Z boxes of a structure that narrows steadily from base to apex, as a ventricle does."""
    return torch.tensor([[40.0 + 4 * k, 40.0 + 4 * k, 120.0 - 4 * k, 120.0 - 4 * k] for k in range(z)])


def test_a_smooth_sequence_is_left_alone_even_where_it_narrows_fast():
    boxes = shrinking(6)
    boxes[-1] = torch.tensor([76.0, 76.0, 84.0, 84.0])  # the apex: far smaller than its neighbour, but an end
    fitted = fit_sequence(boxes, torch.ones(6, dtype=torch.bool), torch.arange(6.0), 0.5, ends=True)
    assert fitted.reasons == [""] * 6 and not fitted.redo.any()
    assert torch.equal(fitted.boxes, boxes)


def test_an_empty_slice_between_found_ones_gets_the_box_between_theirs():
    boxes, found = shrinking(5), torch.ones(5, dtype=torch.bool)
    expected = boxes[2].clone()
    boxes[2], found[2] = 0.0, False
    fitted = fit_sequence(boxes, found, torch.arange(5.0), 0.5, ends=False)
    assert fitted.reasons == ["", "", GAP, "", ""]
    torch.testing.assert_close(fitted.boxes[2], expected)


def test_gaps_are_interpolated_by_slice_position_not_by_row():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 40.0, 40.0]])
    found = torch.tensor([True, False, True])
    fitted = fit_sequence(boxes, found, torch.tensor([0.0, 1.0, 3.0]), 0.5, ends=False)
    torch.testing.assert_close(fitted.boxes[1], torch.tensor([0.0, 0.0, 20.0, 20.0]))


def test_one_slice_off_the_sequence_is_found_and_its_neighbours_are_not():
    boxes = shrinking(7)
    boxes[3] = torch.tensor([150.0, 150.0, 170.0, 170.0])  # a mask that leaked onto something else
    fitted = fit_sequence(boxes, torch.ones(7, dtype=torch.bool), torch.arange(7.0), 0.5, ends=False)
    assert fitted.reasons == ["", "", "", OFF, "", "", ""], "only the worst slice is dropped; its neighbours then fit"
    torch.testing.assert_close(fitted.boxes[3], shrinking(7)[3])


def test_empty_end_slices_are_carried_only_with_ends():
    boxes, found = shrinking(5), torch.tensor([False, True, True, True, False])
    kept = fit_sequence(boxes, found, torch.arange(5.0), 0.5, ends=False)
    assert kept.reasons == [""] * 5, "beyond a structure's ends a slice may rightly be empty"
    carried = fit_sequence(boxes, found, torch.arange(5.0), 0.5, ends=True)
    assert carried.reasons == [END, "", "", "", END]
    assert torch.equal(carried.boxes[0], boxes[1]) and torch.equal(carried.boxes[4], boxes[3])


def test_a_volume_without_any_mask_has_nothing_to_carry():
    fitted = fit_sequence(torch.zeros(4, 4), torch.zeros(4, dtype=torch.bool), torch.arange(4.0), 0.5, ends=True)
    assert fitted.reasons == [""] * 4


def test_min_iou_zero_fills_gaps_but_calls_nothing_off():
    boxes = shrinking(5)
    boxes[2] = torch.tensor([150.0, 150.0, 170.0, 170.0])
    fitted = fit_sequence(boxes, torch.ones(5, dtype=torch.bool), torch.arange(5.0), 0.0, ends=False)
    assert fitted.reasons == [""] * 5


def test_positions_must_increase():
    with pytest.raises(AssertionError, match="increase"):
        fit_sequence(shrinking(3), torch.ones(3, dtype=torch.bool), torch.tensor([0.0, 2.0, 1.0]), 0.5, ends=False)


def test_volume_slices_group_rows_by_subject_in_slice_order():
    runs = volume_slices(["a", "b", "a", "a", "b"], torch.tensor([2.0, 1.0, 0.0, 1.0, 0.0]))
    assert [r.tolist() for r in runs] == [[2, 3, 0], [4, 1]]


def test_refine_volumes_prompts_the_missing_and_off_slices_with_the_fitted_boxes():
    """With a decoder that paints the box it is given, the refined masks are the fitted boxes, loosened; the other
    slices and the other volume keep their probabilities."""
    probs = torch.zeros(8, 256, 256)
    for k, (x0, y0, x1, y1) in enumerate(shrinking(5).long().tolist()):
        probs[k, y0 : y1 + 1, x0 : x1 + 1] = 0.9
    probs[2] = 0.0  # a missed slice
    probs[3] = 0.0
    probs[3, 200:230, 200:230] = 0.9  # a slice gone off the sequence
    probs[5:8, 10:30, 10:30] = 0.8  # a second volume, consistent
    positions = torch.tensor([0.0, 1, 2, 3, 4, 0, 1, 2])
    volumes = volume_slices(["p1"] * 5 + ["p2"] * 3, positions)
    out, counts = refine_volumes(BoxPainter(), torch.zeros(8, 256, 64, 64), probs, volumes, positions,
                                 0.0, 0.5, False, 0.5, 4, CPU)  # fmt: skip
    assert counts == {GAP: 1, OFF: 1}
    boxes, found = mask_boxes(out > 0.5, 0.0)
    assert found.all()
    torch.testing.assert_close(boxes[2:4], shrinking(5)[2:4])
    untouched = [0, 1, 4, 5, 6, 7]
    assert torch.equal(out[untouched], probs[untouched])


def test_empty_slices_between_boxes_apart_are_left_empty():
    """A mask found on something else past the structure's end is no anchor: the empty slices between it and the
    structure stay empty rather than take boxes drawn across the image."""
    boxes, found = shrinking(6), torch.tensor([True, False, False, True, True, True])
    boxes[0] = torch.tensor([200.0, 200.0, 230.0, 230.0])
    fitted = fit_sequence(boxes, found, torch.arange(6.0), 0.5, ends=False)
    assert fitted.reasons == [""] * 6 and not fitted.redo.any()


def test_refine_volumes_carries_empty_end_slices_with_ends():
    probs = torch.zeros(4, 256, 256)
    for k, (x0, y0, x1, y1) in enumerate(shrinking(4).long().tolist()[:3]):
        probs[k, y0 : y1 + 1, x0 : x1 + 1] = 0.9  # the last slice (the apex) is empty
    slices = torch.arange(4)
    kept, counts = refine_volumes(BoxPainter(), torch.zeros(4, 256, 64, 64), probs, [slices], slices.double(),
                                  0.0, 0.5, False, 0.5, 4, CPU)  # fmt: skip
    assert not counts and torch.equal(kept, probs)
    out, counts = refine_volumes(BoxPainter(), torch.zeros(4, 256, 64, 64), probs, [slices], slices.double(),
                                 0.0, 0.5, True, 0.5, 4, CPU)  # fmt: skip
    assert counts == {END: 1}
    boxes, found = mask_boxes(out > 0.5, 0.0)
    assert found.all() and torch.equal(boxes[3], boxes[2]), "the apex takes its neighbour's box"
