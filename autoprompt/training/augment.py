"""Random geometric transforms of cached embeddings: of the training inputs, and for the consistency loss.

A transform is one 2 x 3 affine matrix per image in normalised coordinates (``autoprompt.geometry``), applied alike
to the 64 x 64 image embedding and to what lives in the same frame: boxes, pseudo-labels, probabilities. Points that
a transform brings in from outside the image are zero.

- Inputs (``random_inputs``): a flip or quarter turn, a zoom and a shift move a training image, its box and its
  pseudo-label before the losses, so that a few images show the head the structure at other sizes and places.
- Views (``pick_views``): a training image may be replaced, batch by batch, by one of its encoded views
  (``autoprompt.data.views``: the image itself moved and changed in intensity, then encoded), with the view's box
  and pseudo-label.
- Consistency (``random_affine``, the follow-up's weak transforms): a flip of both axes, quarter turns and a small
  rotation; the prediction on the transformed embedding is compared with the transformed prediction where both
  are defined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from autoprompt.geometry import warp
from autoprompt.settings import Moves, RecipeAugment


@dataclass(frozen=True)
class Augment:
    """A recipe's ``augment`` section. Inputs: the probability of a flip or quarter turn (``dihedral``), the largest
    zoom as a log factor (``zoom``: 0.3 zooms by 0.74 to 1.35) and the largest shift as a fraction of the half side
    (``shift``), and the probability that an image is replaced by one of its encoded views (``views``).
    Consistency: the probabilities of a flip, of quarter turns and of a small rotation, and its largest angle in
    radians (the follow-up's weak transforms: 0.75, 0.75, 0.75, 0.25)."""

    dihedral: float = 0.0
    zoom: float = 0.0
    shift: float = 0.0
    views: float = 0.0
    flip: float = 0.75
    rot90: float = 0.75
    rotate: float = 0.75
    angle: float = 0.25

    @classmethod
    def from_settings(cls, augment: RecipeAugment | Moves) -> Augment:
        """A recipe's ``augment`` section, or a baseline's (its images moved, no views, no consistency loss)."""
        if isinstance(augment, Moves):
            return cls(dihedral=augment.dihedral, zoom=augment.zoom, shift=augment.shift)
        inputs, consistency = augment.inputs, augment.consistency
        return cls(
            dihedral=inputs.dihedral,
            zoom=inputs.zoom,
            shift=inputs.shift,
            views=inputs.views,
            flip=consistency.flip,
            rot90=consistency.rot90,
            rotate=consistency.rotate,
            angle=consistency.angle,
        )

    @property
    def moves_inputs(self) -> bool:
        return bool(self.dihedral or self.zoom or self.shift)


def _rotation(angle: Tensor) -> Tensor:
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def random_affine(batch: int, augment: Augment, generator: torch.Generator) -> Tensor:
    """B x 2 x 3 matrices: for each image, a flip of both axes (probability ``flip``), a quarter turn, one to three
    times (probability ``rot90``), and a rotation uniform in ``±angle`` (probability ``rotate``)."""
    draws = torch.rand(batch, 5, generator=generator, dtype=torch.float64)
    flip = torch.where(draws[:, 0] < augment.flip, -1.0, 1.0)
    turns = torch.where(draws[:, 1] < augment.rot90, 1 + (draws[:, 2] * 3).floor().clamp(max=2), 0.0)
    small = torch.where(draws[:, 3] < augment.rotate, (draws[:, 4] * 2 - 1) * augment.angle, 0.0)
    linear = _rotation(turns * math.pi / 2 + small) * flip[:, None, None]
    return torch.cat([linear, linear.new_zeros(batch, 2, 1)], dim=2).float()


def random_dihedral(batch: int, probability: float, generator: torch.Generator) -> Tensor:
    """B x 2 x 3 matrices: with ``probability``, one of the 7 flips and quarter turns of the square (uniformly),
    else the identity. They map pixel centres onto pixel centres, so a tight box stays tight (``warp_boxes``)."""
    draws = torch.rand(batch, 2, generator=generator, dtype=torch.float64)
    element = torch.where(draws[:, 0] < probability, 1 + (draws[:, 1] * 7).floor().clamp(max=6), 0.0).long()
    turns, mirror = element % 4, element >= 4
    linear = _rotation(turns.double() * math.pi / 2) @ torch.diag_embed(
        torch.stack([torch.where(mirror, -1.0, 1.0), torch.ones(batch, dtype=torch.float64)], -1)
    )
    return torch.cat([linear.round(), linear.new_zeros(batch, 2, 1)], dim=2).float()


def random_inputs(batch: int, augment: Augment, generator: torch.Generator) -> Tensor:
    """B x 2 x 3 matrices that move a training image before its box and pseudo-label losses: a flip or quarter turn
    (probability ``dihedral``), a zoom by a factor log-uniform in ``exp(±zoom)`` and a shift uniform in ``±shift``
    of the half side. Boxes move with them (``warp_boxes``): exactly for flips, turns, zooms and shifts."""
    matrices = random_dihedral(batch, augment.dihedral, generator)
    draws = torch.rand(batch, 3, generator=generator, dtype=torch.float64) * 2 - 1
    scale = torch.exp(draws[:, 0] * augment.zoom).float()
    matrices[:, :, :2] *= scale[:, None, None]
    matrices[:, :, 2] = (draws[:, 1:] * augment.shift).float()
    return matrices


@dataclass(frozen=True)
class Views:
    """The encoded views of N training images, K each: ``embeddings`` N x K x 256 x 64 x 64, ``boxes`` N x K x 4
    (label frame), ``pseudo`` N x K x S x S box-prompted masks or None."""

    embeddings: Tensor
    boxes: Tensor
    pseudo: Tensor | None = None

    def __post_init__(self) -> None:
        n, k = self.embeddings.shape[:2]
        assert self.boxes.shape == (n, k, 4), f"view boxes {tuple(self.boxes.shape)} for {n} x {k} views"
        assert self.pseudo is None or self.pseudo.shape[:2] == (n, k), f"view pseudo-labels {self.pseudo.shape}"


def pick_views(batch: int, count: int, probability: float, generator: torch.Generator) -> Tensor:
    """B view indices: with ``probability``, one of ``count`` views uniformly, else -1 (the image itself)."""
    draws = torch.rand(batch, 2, generator=generator, dtype=torch.float64)
    which = (draws[:, 1] * count).floor().clamp(max=count - 1).long()
    return torch.where(draws[:, 0] < probability, which, -1)


def consistency_loss(transformed_probs: Tensor, probs: Tensor, matrices: Tensor) -> Tensor:
    """Mean over images of the L2 norm of ``p(T x) - T p(x)`` where both are defined.

    ``transformed_probs``: B x h x w, the prediction on the transformed embeddings; ``probs``: B x h x w, the
    prediction on the embeddings, a target (no gradient flows through it).
    """
    target = warp(probs.detach()[:, None], matrices)[:, 0]
    valid = warp(torch.ones_like(probs)[:, None], matrices, mode="nearest")[:, 0]
    return ((transformed_probs - target) * valid).flatten(1).norm(dim=1).mean()
