"""TransUNet on timm hybrid ViTs: shapes and skips, refused encoders, local weights, and that it learns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from monai.losses import DiceCELoss

from autoprompt.errors import InputError
from autoprompt.model.baselines.transunet import TransUNet


@pytest.mark.parametrize(
    ("encoder", "strides"), [("vit_tiny_r_s16_p8_224", (2, 4)), ("vit_small_r26_s32_224", (2, 4, 8, 16))]
)
def test_output_shape_and_skips(encoder: str, strides: tuple[int, ...]) -> None:
    """B x 1 x 64 x 64 in -> B x 1 x 64 x 64 logits; the CNN's maps below the token stride are skips."""
    torch.manual_seed(0)
    model = TransUNet(encoder, input_size=64)
    assert model.token_stride == 32 and model.grid == 2
    assert model.skip_strides == strides
    assert not model.pretrained
    out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    assert torch.isfinite(out).all()
    with pytest.raises(AssertionError, match=r"expected B x 1 x 64 x 64 images, got \(2, 3, 64, 64\)"):
        model(torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("encoder", ["vit_tiny_patch16_224", "resnet18", "no_such_model"])
def test_non_hybrid_encoder_is_refused(encoder: str) -> None:
    """Plain ViTs, CNNs and unknown names raise a one-line InputError naming the param and some hybrids."""
    with pytest.raises(InputError, match=r"baseline\.transunet\.encoder") as error:
        TransUNet(encoder, input_size=64)
    assert "vit_base_r50_s16_224" in str(error.value)
    assert "\n" not in str(error.value)


def test_local_weights_are_loaded(tmp_path: Path) -> None:
    """A timm state dict at 96 x 96 loads at 64 x 64: equal weights, position embedding resampled to 2 x 2."""
    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_r_s16_p8_224", pretrained=False, img_size=96, num_classes=0)
    state = source.state_dict()
    path = tmp_path / "encoder.pt"
    torch.save({"state_dict": state}, path)

    torch.manual_seed(2)
    model = TransUNet("vit_tiny_r_s16_p8_224", input_size=64, weights=path)
    assert model.pretrained
    loaded = model.encoder.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        if key != "pos_embed":
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    assert state["pos_embed"].shape == (1, 1 + 3 * 3, 192)
    assert loaded["pos_embed"].shape == (1, 1 + 2 * 2, 192)
    torch.testing.assert_close(loaded["pos_embed"][:, 0], state["pos_embed"][:, 0], rtol=0, atol=0)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_bad_weights_are_refused(tmp_path: Path) -> None:
    """A missing, unreadable or mismatched file raises InputError naming it."""
    missing = tmp_path / "absent.pt"
    with pytest.raises(InputError, match=re.escape(f"{missing} not found")):
        TransUNet("vit_tiny_r_s16_p8_224", input_size=64, weights=missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=re.escape(f"{garbage}: cannot be read")):
        TransUNet("vit_tiny_r_s16_p8_224", input_size=64, weights=garbage)
    other = tmp_path / "other.pt"
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).state_dict(), other)
    with pytest.raises(InputError, match=re.escape(f"{other}: does not match encoder vit_tiny_r_s16_p8_224")):
        TransUNet("vit_tiny_r_s16_p8_224", input_size=64, weights=other)


def _discs(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n standardised noisy images N x 1 x size x size with one bright ellipse each, and its mask (0/1)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    masks = []
    for _ in range(n):
        cy, cx = (torch.rand(2, generator=g) * 0.4 + 0.3) * size
        ry, rx = (torch.rand(2, generator=g) * 0.15 + 0.12) * size
        masks.append((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).float())
    mask = torch.stack(masks)[:, None]
    images = 0.3 * torch.rand(n, 1, size, size, generator=g) + 0.6 * mask
    images = (images - images.mean(dim=(1, 2, 3), keepdim=True)) / images.std(dim=(1, 2, 3), keepdim=True)
    return images, mask


def test_overfits_synthetic_discs() -> None:
    """Four 64 x 64 images with bright ellipses: Adam on Dice + BCE reaches a training Dice above 0.9."""
    torch.manual_seed(0)
    images, masks = _discs(4, 64, seed=3)
    model = TransUNet("vit_tiny_r_s16_p8_224", input_size=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(sigmoid=True)

    def dice() -> float:
        model.eval()
        with torch.no_grad():
            pred = (model(images) > 0).float()
        model.train()
        return float(2 * (pred * masks).sum() / (pred.sum() + masks.sum()))

    start = dice()
    for step in range(150):
        optimizer.zero_grad()
        loss = loss_fn(model(images), masks)
        loss.backward()
        optimizer.step()
        if step % 10 == 9 and dice() > 0.95:
            break
    final = dice()
    assert final > 0.9, f"training Dice {final:.3f} after {step + 1} steps (start {start:.3f})"
