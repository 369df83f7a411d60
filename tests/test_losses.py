"""The losses against the authors' values, a naive per-band reference, explicit formulas, and their edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from autoprompt.model import losses
from autoprompt.settings import Loss


def _case_tensors(case: dict, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.tensor(case["foreground_prob"], dtype=dtype)
    boxes = torch.tensor(case["boxes_xyxy_inclusive"], dtype=torch.long)
    assert probs.shape[1:] == (case["H"], case["W"]), "conformance case shape differs from its H x W"
    return probs, boxes


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_losses_match_conformance(conformance: dict, dtype: torch.dtype) -> None:
    """Each loss equals the authors' implementation on every conformance case, to 1e-5 relative."""
    assert conformance["cases"], "the conformance file holds no case"
    for index, case in enumerate(conformance["cases"]):
        probs, boxes = _case_tensors(case, dtype)
        d, t, bounds = int(case["d"]), float(case["t"]), tuple(case["margins"])
        got = {
            "outer_box_bce": losses.outer_box_bce(torch.logit(probs), boxes),
            "tightness": losses.tightness_prior(probs, boxes, d=d, t=t),
            "box_size": losses.box_size_prior(probs, boxes, bounds=bounds, t=t),
        }
        for name, value in got.items():
            assert value.dtype == dtype, f"case {index} {name}: computed in {value.dtype}, not {dtype}"
            expected = case["expected"][name]
            assert value.item() == pytest.approx(expected, rel=1e-5), f"case {index} {name} ({dtype})"


def _naive_tightness(probs: torch.Tensor, boxes: torch.Tensor, d: int, t: float) -> float:
    """Explicit loops: every band of d rows (then of d columns) of each box, the last band the remainder."""
    total = 0.0
    for image, (x0, y0, x1, y1) in zip(probs.double(), boxes.tolist(), strict=True):
        inside = image[y0 : y1 + 1, x0 : x1 + 1]
        for axis_sums in (inside.sum(dim=1), inside.sum(dim=0)):  # per row, then per column
            for start in range(0, len(axis_sums), d):
                band = axis_sums[start : start + d]
                z = float(len(band)) - float(band.sum())
                total += losses.log_barrier(torch.tensor(z, dtype=torch.float64), t).item()
    return total / len(probs)


def test_tightness_covers_every_line_when_lines_minus_one_is_a_multiple_of_d() -> None:
    """Boxes whose (lines - 1) % d == 0 keep their last row and column, as the naive reference does."""
    generator = torch.Generator().manual_seed(1)
    probs = torch.rand(2, 24, 30, generator=generator, dtype=torch.float64)
    boxes = torch.tensor([[2, 3, 22, 13], [0, 0, 5, 10]])  # 21 x 11 and 6 x 11 lines; d = 5
    d, t = 5, 5.0
    assert all((int(boxes[0, k + 2] - boxes[0, k])) % d == 0 for k in (0, 1))
    got = losses.tightness_prior(probs, boxes, d=d, t=t).item()
    assert got == pytest.approx(_naive_tightness(probs, boxes, d, t), rel=1e-10)

    # With p = 0 every band's z is its width in lines: 11 rows give bands 5, 5, 1 and 21 columns 5, 5, 5, 5, 1.
    empty = torch.zeros(1, 24, 30, dtype=torch.float64)
    widths = torch.tensor([5, 5, 1, 5, 5, 5, 5, 1], dtype=torch.float64)
    expected = losses.log_barrier(widths, t).sum().item()
    assert losses.tightness_prior(empty, boxes[:1], d=d, t=t).item() == pytest.approx(expected, rel=1e-12), (
        "the one-line last band of the rows or of the columns is left out"
    )


@pytest.mark.parametrize("d", [1, 3, 5, 7])
def test_tightness_matches_naive_reference_on_random_boxes(d: int) -> None:
    """Random boxes, one-line boxes included, against the explicit per-band loops."""
    generator = torch.Generator().manual_seed(d)
    height, width = 19, 23
    probs = torch.rand(4, height, width, generator=generator, dtype=torch.float64)
    boxes = torch.tensor([[0, 0, 22, 18], [4, 4, 4, 4], [3, 7, 9, 7], [5, 2, 17, 16]])
    got = losses.tightness_prior(probs, boxes, d=d, t=5.0).item()
    assert got == pytest.approx(_naive_tightness(probs, boxes, d, 5.0), rel=1e-10)


def test_box_spanning_the_whole_image() -> None:
    """A box over every pixel: no outside pixel (BCE 0), finite priors equal to the references."""
    generator = torch.Generator().manual_seed(2)
    probs = torch.rand(1, 40, 48, generator=generator, dtype=torch.float64)
    boxes = torch.tensor([[0, 0, 47, 39]])
    assert losses.outer_box_bce(torch.logit(probs), boxes).item() == 0.0
    tight = losses.tightness_prior(probs, boxes, d=5, t=5.0)
    assert torch.isfinite(tight)
    assert tight.item() == pytest.approx(_naive_tightness(probs, boxes, 5, 5.0), rel=1e-10)
    size = losses.box_size_prior(probs, boxes, bounds=(0.5, 0.9), t=5.0)
    area, total = 40 * 48, probs.sum()
    expected = (losses.log_barrier(total - 0.9 * area, 5.0) + losses.log_barrier(0.5 * area - total, 5.0)) / area
    assert size.item() == pytest.approx(expected.item(), rel=1e-12)


def test_outer_bce_matches_explicit_mean() -> None:
    """Mean of -log(1 - p) over the pixels outside each image's box, pooled over the batch."""
    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(2, 9, 11, generator=generator, dtype=torch.float64)
    boxes = torch.tensor([[1, 2, 5, 6], [0, 0, 9, 3]])
    values = []
    for image, (x0, y0, x1, y1) in zip(probs, boxes.tolist(), strict=True):
        for y in range(9):
            for x in range(11):
                if not (x0 <= x <= x1 and y0 <= y <= y1):
                    values.append(-math.log(1.0 - image[y, x].item()))
    got = losses.outer_box_bce(torch.logit(probs), boxes).item()
    assert got == pytest.approx(sum(values) / len(values), rel=1e-12)


def test_outer_bce_keeps_a_gradient_where_the_probability_saturates() -> None:
    """A logit of 40 outside the box is p = 1 in float32: -log(1 - p + eps) is flat there, softplus is not."""
    logits = torch.full((1, 8, 8), -5.0)
    logits[0, 0, 0] = 40.0  # outside the box
    logits.requires_grad_(True)
    boxes = torch.tensor([[2, 2, 5, 5]])
    losses.outer_box_bce(logits, boxes).backward()
    assert logits.grad[0, 0, 0] > 0.01, "the saturated pixel is still pushed down"
    again = logits.detach().clone().requires_grad_(True)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 2:6] = False
    (-torch.log(1 - torch.sigmoid(again) + 1e-10)[0][outside].mean()).backward()
    assert again.grad[0, 0, 0] == 0, "the probability form has no gradient there, which is why the loss takes logits"


def test_pseudo_label_loss_is_half_bce_half_soft_dice() -> None:
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 10, 12, generator=generator, dtype=torch.float64)
    target = torch.rand(2, 10, 12, generator=generator, dtype=torch.float64) > 0.6
    p, y = torch.sigmoid(logits), target.double()
    bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    soft_dice = torch.stack([1 - (2 * (p[i] * y[i]).sum() + 1) / (p[i].sum() + y[i].sum() + 1) for i in range(2)])
    expected = 0.5 * bce + 0.5 * soft_dice.mean()
    assert losses.pseudo_label_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-10)
    perfect = torch.where(target, 30.0, -30.0).double()
    assert losses.pseudo_label_loss(perfect, target).item() < 1e-6, "a perfect prediction costs nothing"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_flow(dtype: torch.dtype) -> None:
    """The weighted total has finite, non-zero gradients, saturated logits (±40) included."""
    generator = torch.Generator().manual_seed(4)
    values = torch.randn(3, 32, 36, generator=generator, dtype=dtype)
    values[0, :4] = 40.0  # outside the box, saturated
    values[1, 10:20, 10:20] = -40.0
    logits = values.clone().requires_grad_(True)
    boxes = torch.tensor([[5, 5, 30, 25], [0, 0, 35, 31], [8, 3, 20, 29]])
    weights = losses.LossWeights(pseudo_label=1.0)
    terms = losses.box_loss(logits, boxes, weights, pseudo=values.detach() > 0)
    assert set(terms) == {"outer_bce", "tightness", "size", "pseudo_label", "total"}
    for name, value in terms.items():
        assert torch.isfinite(value), f"{name} is {value}"
    terms["total"].backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all(), "non-finite gradient"
    assert (logits.grad != 0).any(dim=(1, 2)).all(), "an image gets no gradient"


LOSS_PARAMS = {
    "outer_bce": 2.0,
    "tightness": {"weight": 1e-3, "d": 4},
    "size": {"weight": 0.5, "bounds": [0.4, 0.8]},
    "pseudo_label": 0.25,
    "consistency": 0.0,
    "barrier": {"t": 3.0, "factor": 1.1, "every": 5},
}


def test_loss_weights_from_settings() -> None:
    """A recipe's loss section maps onto the weights, and the total is their weighted sum (zero weights left out)."""
    weights = losses.LossWeights.from_settings(Loss.model_validate(LOSS_PARAMS))
    assert weights == losses.LossWeights(
        outer_bce=2.0,
        tightness=1e-3,
        tightness_d=4,
        size=0.5,
        size_bounds=(0.4, 0.8),
        pseudo_label=0.25,
        consistency=0.0,
        t=3.0,
        t_factor=1.1,
        t_every=5,
    )
    logits = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    probs = torch.sigmoid(logits)
    boxes = torch.tensor([[2, 2, 10, 12], [0, 4, 15, 9]])
    pseudo = probs > 0.5
    terms = losses.box_loss(logits, boxes, weights, pseudo=pseudo)
    assert "consistency" not in terms, "a zero weight skips its term"
    assert terms["tightness"].item() == pytest.approx(_naive_tightness(probs, boxes, 4, 3.0), rel=1e-10)
    expected = 2.0 * terms["outer_bce"] + 1e-3 * terms["tightness"] + 0.5 * terms["size"] + 0.25 * terms["pseudo_label"]
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-12)
    sharper = losses.box_loss(logits, boxes, weights, t=weights.barrier_t(10), pseudo=pseudo)
    assert sharper["size"].item() != pytest.approx(terms["size"].item()), "the barrier's t reaches the size prior"


def test_barrier_t_is_raised_on_schedule() -> None:
    """The follow-up's schedule: t = 5, multiplied by 1.1 every 5 epochs; factor 1 keeps it fixed."""
    weights = losses.LossWeights(t=5.0, t_factor=1.1, t_every=5)
    assert [weights.barrier_t(e) for e in (0, 4, 5, 9, 10, 199)] == pytest.approx(
        [5.0, 5.0, 5.5, 5.5, 6.05, 5.0 * 1.1**39]
    )
    assert losses.LossWeights(t=5.0).barrier_t(150) == 5.0


@pytest.mark.parametrize("t", [1.0, 5.0, 20.0])
def test_log_barrier_is_continuous_at_the_switch(t: float) -> None:
    """Value and slope of the barrier and its tangent line meet at z = -1/t^2."""
    switch = -1.0 / t**2
    z = torch.tensor([switch - 1e-9, switch, switch + 1e-9], dtype=torch.float64, requires_grad=True)
    values = losses.log_barrier(z, t)
    expected = -math.log(-switch) / t
    assert values.detach().tolist() == pytest.approx([expected] * 3, abs=1e-7)
    values.sum().backward()
    assert z.grad[[0, 2]].tolist() == pytest.approx([t, t], rel=1e-6), "slopes differ on the two sides"
    # Away from the switch: the barrier on the left, the line on the right.
    left, right = torch.tensor(-2.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    assert losses.log_barrier(left, t).item() == pytest.approx(-math.log(2.0) / t)
    assert losses.log_barrier(right, t).item() == pytest.approx(t * 3.0 - math.log(1 / t**2) / t + 1 / t)


def test_log_barrier_slope_at_the_switch_itself() -> None:
    """Exactly at z = -1/t^2 the slope is t, as on both sides, not 0."""
    t = 5.0
    z = torch.tensor(-1.0 / t**2, dtype=torch.float64, requires_grad=True)
    losses.log_barrier(z, t).backward()
    assert z.grad.item() == pytest.approx(t)
