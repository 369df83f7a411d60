"""The consistency loss's transforms: exact flips and quarter turns, the drawn mix, and the loss itself."""

from __future__ import annotations

import math

import pytest
import torch

from autoprompt.data.preprocess import tight_box
from autoprompt.geometry import warp, warp_boxes
from autoprompt.training.augment import Augment, consistency_loss, random_affine, random_dihedral, random_inputs

NEVER = Augment(flip=0.0, rot90=0.0, rotate=0.0, angle=0.25)


def _matrix(angle: float = 0.0, flip: bool = False) -> torch.Tensor:
    cos, sin, sign = math.cos(angle), math.sin(angle), -1.0 if flip else 1.0
    return torch.tensor([[[sign * cos, -sign * sin, 0.0], [sign * sin, sign * cos, 0.0]]])


def test_flips_and_quarter_turns_are_exact_on_a_square_grid():
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(warp(x, _matrix(flip=True)), torch.flip(x, dims=(2, 3)), atol=1e-5)
    turned = warp(x, _matrix(math.pi / 2))
    matches = [torch.allclose(turned, torch.rot90(x, k, dims=(2, 3)), atol=1e-5) for k in (1, 3)]
    assert any(matches), "a quarter turn is a 90-degree rotation of the grid"
    assert torch.allclose(warp(x, _matrix()), x, atol=1e-6), "the identity leaves the embedding as it is"


def test_drawn_transforms_follow_their_probabilities():
    generator = torch.Generator().manual_seed(1)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.allclose(random_affine(8, NEVER, generator), identity.expand(8, 2, 3))
    always_flip = random_affine(64, Augment(flip=1.0, rot90=0.0, rotate=0.0), generator)
    assert torch.allclose(always_flip, -identity.expand(64, 2, 3).clone().index_fill_(2, torch.tensor([2]), 0))
    mixed = random_affine(2000, Augment(), generator)
    is_identity = (mixed - identity).abs().amax(dim=(1, 2)) < 1e-6
    # Unchanged: no small rotation (1/4), and no flip nor turn (1/16) or a flip undone by two turns (3/4 * 3/4 / 3).
    assert float(is_identity.float().mean()) == pytest.approx(0.25 * (1 / 16 + 3 / 16), abs=0.015)
    angles = torch.atan2(mixed[:, 1, 0], mixed[:, 0, 0]).abs()
    small = angles[(angles < 1.0)]
    assert float(small.max()) <= 0.25 + 1e-5, "small rotations stay within ±0.25 rad"
    determinant = torch.linalg.det(mixed[:, :, :2])
    assert torch.allclose(determinant, torch.ones_like(determinant), atol=1e-5), "rotations and flips only"


def test_consistency_is_zero_for_an_equivariant_prediction_and_not_otherwise():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, 16, 16, generator=generator)
    matrices = random_affine(4, Augment(flip=1.0, rot90=1.0, rotate=0.0), generator)

    def equivariant(z):  # a pixel-wise prediction commutes with every grid transform
        return torch.sigmoid(z[:, 0])

    loss = consistency_loss(equivariant(warp(x, matrices)), equivariant(x), matrices)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)

    def fixed_position(z):  # a prediction that ignores the image's content moves nowhere
        return torch.linspace(0, 1, 16).expand(len(z), 16, 16)

    assert consistency_loss(fixed_position(warp(x, matrices)), fixed_position(x), matrices).item() > 0.5


def test_consistency_sends_no_gradient_through_its_target():
    moved = torch.rand(2, 8, 8, requires_grad=True)
    target = torch.rand(2, 8, 8, requires_grad=True)
    consistency_loss(moved, target, _matrix(flip=True).expand(2, 2, 3)).backward()
    assert moved.grad is not None and moved.grad.abs().sum() > 0
    assert target.grad is None


def test_dihedral_moves_keep_boxes_tight():
    """Each of the 7 flips and turns of the square moves a mask onto pixels whose tight box is ``warp_boxes``'s."""
    generator = torch.Generator().manual_seed(4)
    matrices = random_dihedral(300, 1.0, generator)
    assert len({tuple(m.flatten().tolist()) for m in matrices}) == 7, "every non-identity element is drawn"
    masks = torch.zeros(300, 1, 40, 40)
    masks[:, :, 8:31, 5:21] = 1
    boxes = torch.tensor([[5, 8, 20, 30]]).expand(300, 4)
    moved = warp(masks, matrices, mode="nearest")[:, 0] > 0.5
    expected = torch.tensor([tight_box(m.numpy()) for m in moved])
    assert torch.equal(warp_boxes(boxes, matrices, 40), expected)
    assert torch.equal(random_dihedral(5, 0.0, generator)[:, :, :2], torch.eye(2).expand(5, 2, 2))


def test_zooms_and_shifts_move_boxes_with_their_masks():
    """Inputs are zoomed by up to exp(±0.3) and shifted by up to 10%: the moved box is the moved mask's tight box,
    to the pixel, and the zoom reaches both ends of its range."""
    generator = torch.Generator().manual_seed(5)
    matrices = random_inputs(400, Augment(dihedral=0.75, zoom=0.3, shift=0.1), generator)
    scales = torch.linalg.det(matrices[:, :, :2]).abs().sqrt()
    assert 0.74 < float(scales.min()) < 0.78 and 1.30 < float(scales.max()) < 1.35
    assert float(matrices[:, :, 2].abs().max()) <= 0.1
    masks = torch.zeros(400, 1, 64, 64)
    masks[:, :, 20:41, 15:36] = 1
    moved = warp(masks, matrices, mode="nearest")[:, 0] > 0.5
    boxes = warp_boxes(torch.tensor([[15, 20, 35, 40]]).expand(400, 4), matrices, 64)
    errors = torch.stack(
        [(torch.tensor(tight_box(m.numpy())) - b).abs().max() for m, b in zip(moved, boxes, strict=True)]
    )
    assert int(errors.max()) <= 1
