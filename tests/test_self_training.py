"""``train.self_training``: the losses' image weights, the second round's epochs, which unboxed slices give
pseudo-boxes, and ``autoprompt train --self-training`` on a box-only folder."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import torch

from autoprompt.inference.presence import Evidence, Presence
from autoprompt.inference.pseudo_boxes import SAID, Harvest, doubts, harvest, inner_slice, reason_left_out
from autoprompt.model import backbones, losses
from autoprompt.model.decoding import decode
from autoprompt.training.loop import PseudoBoxes, _Cycle, train_head
from tests.helpers import train_config

RULE = Presence(("agreement", "sequence"), min_agreement=0.9, min_box_iou=0.3, max_growth=1.5)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (3 x 32 x 32), boxes and binary targets of three images."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 32, 32, generator=generator)
    boxes = torch.tensor([[4, 5, 20, 25], [0, 0, 31, 31], [10, 8, 18, 30]])
    return logits, boxes, torch.rand(3, 32, 32, generator=generator) > 0.5


@pytest.mark.parametrize("term", ["outer_bce", "tightness", "size", "pseudo_label"])
def test_image_weights_scale_each_images_share_and_none_changes_nothing(term: str) -> None:
    logits, boxes, target = batch()
    only = {"outer_bce": 0.0, "size": 0.0, "tightness": 0.0, "pseudo_label": 0.0, term: 1.0}
    weights = losses.LossWeights(**only)
    plain = losses.box_loss(logits, boxes, weights, pseudo=target)[term]
    ones = losses.box_loss(logits, boxes, weights, pseudo=target, image_weights=torch.ones(3))[term]
    assert torch.allclose(plain, ones, rtol=1e-6), "weights of one are no weights"
    # an image at weight 0 counts nothing: the loss no longer moves with its logits
    zero_last = torch.tensor([1.0, 1.0, 0.0])
    moved = logits.clone()
    moved[2] += 3.0
    a = losses.box_loss(logits, boxes, weights, pseudo=target, image_weights=zero_last)[term]
    b = losses.box_loss(moved, boxes, weights, pseudo=target, image_weights=zero_last)[term]
    assert torch.allclose(a, b, rtol=1e-6), f"{term}: an image of weight 0 still counts"
    c = losses.box_loss(moved, boxes, weights, pseudo=target)[term]
    assert not torch.allclose(a, c), f"{term}: the third image should count at weight 1"
    half = losses.box_loss(logits, boxes, weights, pseudo=target, image_weights=torch.full((3,), 0.5))[term]
    if term != "pseudo_label":  # the pseudo-label loss's BCE and soft Dice both scale
        assert torch.allclose(half, 0.5 * plain, rtol=1e-5), f"{term}: weights of 0.5 halve the term"


def test_the_cycle_gives_every_index_once_before_any_twice() -> None:
    cycle = _Cycle(7, torch.Generator().manual_seed(0))
    first = torch.cat([cycle.take(3), cycle.take(4)])
    assert sorted(first.tolist()) == list(range(7))
    assert sorted(torch.cat([cycle.take(5), cycle.take(2)]).tolist()) == list(range(7))


@pytest.fixture(scope="module")
def lite_decoder(lite_checkpoint):
    return backbones.build_prompt_decoder("lite_medsam", lite_checkpoint)


def test_pseudo_boxed_images_train_with_the_drawn_ones_and_stay_deterministic(lite_decoder) -> None:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(6, 256, 64, 64, generator=generator).half()
    boxes = torch.tensor([[20, 30, 90, 100], [10, 10, 60, 80], [40, 40, 120, 110], [5, 50, 70, 120],
                          [30, 30, 80, 90], [15, 20, 100, 100]])  # fmt: skip
    masks = decode(lite_decoder, embeddings, 128, 6, torch.device("cpu"), boxes=boxes) > 0.5
    config = train_config("augmented")
    cpu = torch.device("cpu")
    epochs: list[int] = []

    def second(weight: float):
        extra = PseudoBoxes(embeddings[2:], boxes[2:], masks[2:], weight, per_epoch=2)
        return train_head(embeddings[:2], boxes[:2], 128, lite_decoder, config, 3, cpu, pseudo=masks[:2],
                          extra=extra, on_epoch=lambda e, t: epochs.append(e)).head  # fmt: skip

    first = train_head(embeddings[:2], boxes[:2], 128, lite_decoder, config, 3, cpu, pseudo=masks[:2]).head
    a, b, light = second(0.5), second(0.5), second(0.1)
    assert len(epochs) == 3 * config.epochs, "the second round keeps the recipe's epochs"
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), f"{name} differs between identical second rounds"
    assert any(not torch.equal(v, first.state_dict()[k]) for k, v in a.state_dict().items()), "extra images unused"
    assert any(not torch.equal(v, light.state_dict()[k]) for k, v in a.state_dict().items()), "weight unused"


def evidence(found, agreement, boxes) -> Evidence:
    boxes = torch.tensor(boxes, dtype=torch.float32)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1) * torch.tensor(found)
    return Evidence(torch.tensor(found), torch.ones(len(found)), torch.tensor(agreement), area, boxes)


def test_a_slice_gives_a_pseudo_box_where_found_agreed_on_and_in_sequence() -> None:
    assert [inner_slice(i, 5) for i in range(5)] == [1, 2, None, 2, 3]
    assert inner_slice(0, 1) is None
    seen = evidence(
        [False, True, True, True, True],
        [1.0, 0.95, 0.97, 0.5, 0.99],
        [[0, 0, 0, 0], [50, 50, 60, 60], [10, 10, 30, 30], [11, 11, 31, 31], [12, 12, 30, 31]],
    )
    reasons = [reason_left_out(seen, i, RULE) for i in range(5)]
    assert reasons == ["empty", "sequence", None, "agreement", None], "slice 1 does not overlap slice 2's box"
    single = evidence([True], [0.95], [[5, 5, 9, 9]])
    assert reason_left_out(single, 0, RULE) is None, "a 2D image: agreement alone"


class StubPredictor:
    """Decodes each input to given evidence, as the first round's ``Predictor`` would."""

    presence = None

    def __init__(self, by_first_row: dict[int, Evidence]) -> None:
        self.by_first_row = by_first_row

    def decode_with_evidence(self, embeddings: torch.Tensor):
        return None, self.by_first_row[int(embeddings[0, 0, 0, 0])]


def test_harvest_skips_the_boxed_rows_and_counts_why_others_give_nothing() -> None:
    volume = evidence([True, True, True], [0.95, 0.96, 0.2], [[10, 10, 30, 30], [11, 11, 30, 30], [12, 12, 30, 30]])
    picture = evidence([True], [0.99], [[1, 2, 3, 4]])
    predictor = StubPredictor({0: volume, 3: picture})
    read = lambda rows: torch.tensor(rows, dtype=torch.float32)[:, None, None, None].expand(-1, 1, 1, 1)  # noqa: E731
    found = harvest(predictor, [[0, 1, 2], [3], [4]], read, boxed={1, 4}, rule=RULE)
    assert isinstance(found, Harvest)
    assert found.rows == [0, 3] and found.looked == 3 and found.left_out == Counter({"agreement": 1})
    assert found.boxes.tolist() == [[10, 10, 30, 30], [1, 2, 3, 4]]
    assert found.describe() == "2 of 3 unboxed slices gave a pseudo-box (left out: 1 agreement)"


def test_doubts_are_the_unboxed_slices_the_runs_disagree_on_or_off_the_sequence() -> None:
    """``suggest --model``: a disagreement counts even on an emptied slice; an agreed empty slice does not."""
    volume = evidence(
        [True, True, False, True],
        [0.95, 0.2, 0.4, 0.97],
        [[50, 50, 60, 60], [11, 11, 30, 30], [0, 0, 0, 0], [10, 10, 30, 30]],
    )
    pictures = {4: evidence([True], [0.99], [[1, 2, 3, 4]]), 5: evidence([False], [1.0], [[0, 0, 0, 0]])}
    predictor = StubPredictor({0: volume, **pictures})
    read = lambda rows: torch.tensor(rows, dtype=torch.float32)[:, None, None, None].expand(-1, 1, 1, 1)  # noqa: E731
    found = doubts(predictor, [[0, 1, 2, 3], [4], [5]], read, boxed={3}, rule=RULE)
    assert found.rows == [0, 1, 2], "0 breaks the sequence, 1 is disagreed on, 2 is emptied but disagreed on"
    assert found.looked == 5 and found.agreement[1] == pytest.approx(0.2) and 3 not in found.agreement
    assert found.said == Counter({SAID[0]: 2, SAID[1]: 1, SAID[2]: 1, SAID[3]: 1})


@pytest.mark.parametrize(
    ("enabled", "min_unboxed", "runs", "said"),
    [
        ("auto", 6, True, "self-training: on (auto): 6 images and slices without a box"),
        ("auto", 7, False, "self-training: off (auto): 6 images and slices without a box, fewer than"),
        (True, 99, True, "self-training: on (train.self_training.enabled or --self-training)"),
        (False, 1, False, "self-training: off (train.self_training.enabled or --no-self-training)"),
    ],
)
def test_the_second_round_runs_where_enough_slices_are_unboxed(tmp_path, caplog, enabled, min_unboxed, runs, said):
    """Three pictures and a volume of five slices, two of them boxed: six unboxed, counted from the headers."""
    import SimpleITK as sitk

    from autoprompt.own_data import second_round
    from autoprompt.settings import SelfTraining

    for i in range(3):
        sitk.WriteImage(sitk.Image(16, 12, sitk.sitkUInt8), str(tmp_path / f"img{i}.png"))
    sitk.WriteImage(sitk.Image(16, 12, 5, sitk.sitkFloat32), str(tmp_path / "scan.nii.gz"))
    rule = SelfTraining(enabled=enabled, min_unboxed=min_unboxed)
    with caplog.at_level(logging.INFO):
        assert second_round(rule, tmp_path, boxed=2) is runs
    assert said in caplog.text
