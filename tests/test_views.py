"""Augmented views: their draws, images and boxes, and how the training loop takes them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from autoprompt.data import views
from autoprompt.errors import InputError
from autoprompt.model import backbones
from autoprompt.model.decoding import decode
from autoprompt.settings import AugmentSettings
from autoprompt.training.augment import Augment, Views, pick_views
from autoprompt.training.loop import train_head
from tests.helpers import settings
from tests.helpers import train_config as config

SETTINGS = AugmentSettings(count=6, hflip=0.5, zoom=0.25, shift=0.1, gamma=0.3, contrast=0.2, brightness=10.0)


def test_an_images_views_depend_on_its_id_and_the_seed_only():
    first, _ = views.draw("007_HC", SETTINGS)
    again, _ = views.draw("007_HC", SETTINGS)
    other, _ = views.draw("008_HC", SETTINGS)
    reseeded, _ = views.draw("007_HC", SETTINGS.model_copy(update={"seed": 1}))
    assert first.shape == (6, 2, 3) and torch.equal(first, again)
    assert not torch.equal(first, other) and not torch.equal(first, reseeded)
    assert views.view_ids(["a", "b"], 2) == ("a#view0", "a#view1", "b#view0", "b#view1")
    assert views.source_id("a#view1") == "a"


def test_views_flip_zoom_and_shift_within_their_bounds_and_never_rotate():
    matrices, intensity = views.draw("x", SETTINGS.model_copy(update={"count": 200}))
    scale = matrices[:, 1, 1]
    assert torch.all(matrices[:, 0, 1] == 0) and torch.all(matrices[:, 1, 0] == 0)
    assert torch.allclose(matrices[:, 0, 0].abs(), scale) and (matrices[:, 0, 0] < 0).any()
    assert scale.min() >= torch.exp(torch.tensor(-0.25)) - 1e-6 and scale.max() <= torch.exp(torch.tensor(0.25)) + 1e-6
    assert matrices[:, :, 2].abs().max() <= 0.1
    assert intensity[:, 2].abs().max() <= 10 and (intensity[:, 1] - 1).abs().max() <= 0.2


def test_a_views_box_is_the_tight_box_of_the_moved_structure():
    """Render a filled ellipse as an image, move it as a view, and compare the tight box of what is left with the
    box that ``view_boxes`` computes from the original box alone."""
    size = 160
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ellipse = (((xx - 70) / 30.0) ** 2 + ((yy - 85) / 22.0) ** 2) <= 1
    ys, xs = torch.nonzero(ellipse, as_tuple=True)
    box = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()])[None]
    matrices, _ = views.draw("ellipse", SETTINGS.model_copy(update={"count": 12}))
    identity = torch.tensor([[1.0, 1.0, 0.0]]).expand(12, -1)
    moved = views.render((ellipse.to(torch.uint8) * 255).expand(12, -1, -1).contiguous(), matrices, identity) > 127
    expected = views.view_boxes(box.expand(12, -1), matrices, size)
    for mask, predicted in zip(moved, expected, strict=True):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        actual = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()])
        assert (actual - predicted).abs().max() <= 1, (
            f"box {predicted.tolist()} vs the moved ellipse's {actual.tolist()}"
        )


def test_intensity_is_gamma_then_contrast_then_brightness():
    image = torch.full((1, 8, 8), 64, dtype=torch.uint8)
    still = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    out = views.render(image, still, torch.tensor([[2.0, 1.5, 10.0]]))
    expected = round(255 * (64 / 255) ** 2 * 1.5 + 10)
    assert torch.all(out[:, 2:-2, 2:-2] == expected)


def test_unknown_or_negative_settings_are_refused():
    with pytest.raises(InputError, match=r"test params: augment: unknown key 'rotate'; known keys: count, hflip"):
        settings(augment={"count": 2, "rotate": 0.5})
    with pytest.raises(InputError, match=r"test params: augment\.count is -1; it should be greater than or equal"):
        settings(augment={"count": -1})


def test_views_are_picked_with_their_probability():
    generator = torch.Generator().manual_seed(0)
    picks = torch.cat([pick_views(4, 3, 0.8, generator) for _ in range(500)])
    assert set(picks.tolist()) == {-1, 0, 1, 2}
    assert abs(float((picks >= 0).float().mean()) - 0.8) < 0.03
    assert torch.all(pick_views(16, 3, 0.0, generator) == -1)


@pytest.fixture(scope="module")
def lite_decoder(lite_checkpoint):
    return backbones.build_prompt_decoder("lite_medsam", lite_checkpoint)


def test_views_identical_to_their_images_train_the_same_head_and_other_views_another(lite_decoder):
    """The loop's plumbing: a view that is a copy of its image (embedding, box, pseudo-label) changes nothing, since
    views are picked by a generator of their own; real other views change the head."""
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(4, 256, 64, 64, generator=generator).half()
    boxes = torch.tensor([[20, 30, 90, 100], [10, 10, 60, 80], [40, 40, 120, 110], [5, 50, 70, 120]])
    pseudo = decode(lite_decoder, embeddings, 128, 4, torch.device("cpu"), boxes=boxes) > 0.5
    settings = dataclasses.replace(config("augmented"), augment=Augment(views=1.0))
    copies = Views(
        embeddings[:, None].expand(-1, 2, -1, -1, -1),
        boxes[:, None].expand(-1, 2, -1),
        pseudo[:, None].expand(-1, 2, -1, -1),
    )
    moved = Views(torch.randn(4, 2, 256, 64, 64, generator=generator).half(), copies.boxes, copies.pseudo)

    def trained(v):
        return train_head(embeddings, boxes, 128, lite_decoder, settings, 3, torch.device("cpu"), pseudo, views=v).head

    plain, same, other = trained(None), trained(copies), trained(moved)
    for name, value in plain.state_dict().items():
        assert torch.equal(value, same.state_dict()[name]), f"{name}: a copy as its view changed the head"
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in plain.state_dict().items()), "views unused"
