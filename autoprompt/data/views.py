"""Augmented views of the few-shot training images, made in image space and encoded like any other image.

A cached embedding can only be moved as a 64 x 64 grid (``autoprompt.training.augment``), which is not what the encoder
makes of a moved image. A view is the prepared image itself flipped left-right, zoomed, shifted, and changed in gamma,
contrast and brightness, then encoded once (the ``augment`` stage). Every transform maps an axis-aligned box onto an
axis-aligned box, so a view's tight box follows exactly from the image's (``view_boxes``): views need boxes only. The
draws of an image depend on its id and the seed alone, so adding images never changes the others' views.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import Tensor

from autoprompt.geometry import warp, warp_boxes
from autoprompt.settings import AugmentSettings

SEPARATOR = "#view"


def source_sha256(prepared_sha256: str, settings: AugmentSettings) -> str:
    """The identity of a views store's inputs: the prepared images' hash and the ``augment`` settings."""
    return hashlib.sha256(f"{prepared_sha256}:{json.dumps(settings.model_dump(), sort_keys=True)}".encode()).hexdigest()


def view_ids(ids: list[str], count: int) -> tuple[str, ...]:
    """The ids of ``count`` views of each image, image by image: ``<id>#view<k>``."""
    return tuple(f"{i}{SEPARATOR}{k}" for i in ids for k in range(count))


def source_id(view: str) -> str:
    return view.rsplit(SEPARATOR, 1)[0]


def _generator(image_id: str, seed: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def draw(image_id: str, settings: AugmentSettings) -> tuple[Tensor, Tensor]:
    """The ``count`` views of one image: K x 2 x 3 affine matrices (``warp``'s convention, normalised coordinates)
    and K x 3 intensity changes (gamma, contrast factor, brightness)."""
    k = settings.count
    d = torch.rand(k, 6, generator=_generator(image_id, settings.seed), dtype=torch.float64)
    flip = torch.where(d[:, 0] < settings.hflip, -1.0, 1.0)
    scale = torch.exp((2 * d[:, 1] - 1) * settings.zoom)
    linear = torch.diag_embed(torch.stack([flip, torch.ones(k, dtype=torch.float64)], -1)) * scale[:, None, None]
    shift = (2 * d[:, 2:4] - 1) * settings.shift
    matrices = torch.cat([linear, shift[:, :, None]], dim=2).float()
    intensity = torch.stack(
        [
            torch.exp((2 * d[:, 4] - 1) * settings.gamma),
            1 + (2 * d[:, 5] - 1) * settings.contrast,
            (2 * torch.rand(k, generator=_generator(image_id, settings.seed + 1), dtype=torch.float64) - 1)
            * settings.brightness,
        ],
        dim=1,
    ).float()
    return matrices, intensity


def render(images: Tensor, matrices: Tensor, intensity: Tensor) -> Tensor:
    """N x S x S uint8 prepared images -> N x S x S uint8 views: moved by the N x 2 x 3 ``matrices`` (zero where
    nothing is brought in), then ``255 (x / 255) ** gamma * contrast + brightness``, rounded and clipped."""
    assert images.ndim == 3 and images.dtype == torch.uint8, f"expected N x S x S uint8, got {tuple(images.shape)}"
    assert matrices.shape == (len(images), 2, 3) and intensity.shape == (len(images), 3), "one transform per image"
    moved = warp(images[:, None].float(), matrices)[:, 0]
    gamma, contrast, brightness = (v[:, None, None] for v in intensity.unbind(1))
    out = 255 * (moved / 255).clamp(0, 1) ** gamma * contrast + brightness
    return out.round().clamp(0, 255).to(torch.uint8)


def view_boxes(boxes: Tensor, matrices: Tensor, size: int) -> Tensor:
    """N x 4 tight boxes (label frame) -> the tight boxes of the views; exact, since the views only flip, zoom and
    shift. A box moved partly outside the frame is clipped to it."""
    assert torch.allclose(matrices[:, 0, 1], torch.zeros(())) and torch.allclose(matrices[:, 1, 0], torch.zeros(())), (
        "views must not rotate: their boxes would not be tight"
    )
    return warp_boxes(boxes, matrices, size)


def usable(boxes: Tensor, min_side: int = 2) -> Tensor:
    """N booleans: the view keeps a box at least ``min_side`` pixels wide and high (a zoom and shift can push a
    structure out of the frame)."""
    return ((boxes[:, 2] - boxes[:, 0]) >= min_side) & ((boxes[:, 3] - boxes[:, 1]) >= min_side)


__all__ = ["draw", "render", "source_id", "source_sha256", "usable", "view_boxes", "view_ids"]
