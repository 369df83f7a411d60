"""Presence: the slices past a structure's ends (and 2D images without it) get empty masks, judged from the ends in."""

from __future__ import annotations

import pytest
import torch

from autoprompt.inference.presence import Evidence, Presence, absent_slices, gather, slice_agreement

SIZE = 64


def _evidence(boxes: list[tuple[int, int, int, int] | None], iou: list[float], agreement=None) -> Evidence:
    """The evidence of Z slices whose masks fill ``boxes`` (None: an empty mask) with the given predicted IoUs."""
    probs = torch.zeros(len(boxes), SIZE, SIZE)
    for k, box in enumerate(boxes):
        if box is not None:
            x0, y0, x1, y1 = box
            probs[k, y0 : y1 + 1, x0 : x1 + 1] = 1.0
    agreement = torch.ones(len(boxes)) if agreement is None else torch.tensor(agreement)
    return gather(probs, torch.tensor(iou), agreement, 0.5)


def test_iou_empties_the_unsure_slices_from_each_end_in_and_never_one_inside_the_run() -> None:
    """The ends are walked in while the decoder is unsure; an unsure slice between sure ones stays (a structure is
    one contiguous run: a hole inside it is the volume fit's to fill)."""
    box = (20, 20, 40, 40)
    evidence = _evidence([box] * 7, [0.5, 0.6, 0.9, 0.4, 0.95, 0.9, 0.7])
    absent = absent_slices(evidence, Presence(("iou",), min_iou=0.8))
    assert absent.tolist() == [True, True, False, False, False, False, True]
    assert not absent_slices(evidence, Presence(("iou",), min_iou=0.3)).any()
    assert not absent_slices(evidence, Presence(())).any(), "no cue: every mask is kept"


def test_sequence_empties_an_end_mask_that_jumps_in_place_or_size_and_keeps_a_narrowing_end() -> None:
    core = (20, 20, 40, 40)
    jumped = _evidence([(45, 45, 60, 60), core, core, (24, 24, 36, 36)], [0.9] * 4)
    rule = Presence(("sequence",), min_box_iou=0.3, max_growth=1.5)
    assert absent_slices(jumped, rule).tolist() == [True, False, False, False], "moved off; the narrowing end stays"
    grown = _evidence([core, core, (10, 10, 50, 50)], [0.9] * 3)
    assert absent_slices(grown, rule).tolist() == [False, False, True], "four times the area of the slice in"
    assert not absent_slices(grown, Presence(("sequence",), min_box_iou=0.2, max_growth=10)).any()  # IoU 0.26


def test_the_walk_goes_past_empty_end_slices_and_stops_at_the_first_present_one() -> None:
    box = (20, 20, 40, 40)
    evidence = _evidence([None, box, box, box, None], [0.0, 0.5, 0.9, 0.5, 0.0])
    absent = absent_slices(evidence, Presence(("iou",), min_iou=0.8))
    assert absent.tolist() == [False, True, False, True, False], "empty masks are not counted as emptied"


def test_agreement_empties_an_end_slice_the_runs_disagree_on() -> None:
    box = (20, 20, 40, 40)
    evidence = _evidence([box] * 3, [0.9] * 3, agreement=[0.9, 0.95, 0.3])
    assert absent_slices(evidence, Presence(("agreement",), min_agreement=0.8)).tolist() == [False, False, True]
    first = torch.zeros(3, SIZE, SIZE)
    first[:, 10:30, 10:30] = 1.0
    second = first.clone()
    second[2] = 0.0
    second[2, 40:60, 40:60] = 1.0  # the second run draws elsewhere on slice 2
    agreement = slice_agreement([first, second], 0.5)
    assert agreement[:2].tolist() == [1.0, 1.0] and agreement[2] < 0.7
    assert slice_agreement([first], 0.5).tolist() == [1.0, 1.0, 1.0], "one run always agrees"


def test_a_2d_image_is_its_own_end_and_a_volume_keeps_its_surest_slice() -> None:
    box = (20, 20, 40, 40)
    rule = Presence(("iou",), min_iou=0.8, images=True)
    assert absent_slices(_evidence([box], [0.5]), rule).tolist() == [True]
    assert absent_slices(_evidence([box], [0.85]), rule).tolist() == [False]
    everything_unsure = _evidence([box] * 4, [0.5, 0.7, 0.6, 0.4])
    assert absent_slices(everything_unsure, rule).tolist() == [True, False, True, True]


def test_a_rule_round_trips_through_its_record_and_refuses_an_unknown_cue() -> None:
    rule = Presence(("iou", "sequence"), min_iou=0.75, min_box_iou=0.2, max_growth=2.0)
    assert Presence.from_dict(rule.as_dict()) == rule
    assert "predicted IoU < 0.75" in rule.describe()
    with pytest.raises(AssertionError, match="unknown presence cues"):
        Presence(("size",))


def test_a_2d_image_is_judged_only_where_the_rule_says_images() -> None:
    """A picture the runs disagree on keeps its mask by default (a folder's pictures hold the structure: an emptied
    one is a miss); with ``images`` it is judged on its own."""
    evidence = _evidence([(20, 20, 40, 40)], [0.9], agreement=[0.3])
    assert not absent_slices(evidence, Presence(("agreement",), min_agreement=0.85)).any()
    assert absent_slices(evidence, Presence(("agreement",), min_agreement=0.85, images=True)).tolist() == [True]
    assert Presence.from_dict(Presence(images=True).as_dict()).images and not Presence.from_dict({"cues": []}).images
