"""Backbones: checkpoints loaded weights-only and checked, encoder inputs without mean/std normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoprompt.errors import InputError
from autoprompt.model import backbones, checkpoints, runtimes


class Payload:
    """An arbitrary object: a weights-only load must refuse to unpickle it."""

    def __init__(self) -> None:
        self.command = "anything"


@pytest.fixture(scope="module")
def vit_b_encoder(vit_b_checkpoint: Path) -> torch.nn.Module:
    return backbones.build_image_encoder("medsam_vit_b", vit_b_checkpoint)


def test_vit_b_encoder_loads_the_checkpoint(vit_b_encoder: torch.nn.Module, vit_b_checkpoint: Path) -> None:
    """The MedSAM-format state dict goes into the ViT-B encoder: same weights, frozen, in eval mode."""
    state = torch.load(vit_b_checkpoint, map_location="cpu", weights_only=True)
    encoder_state = vit_b_encoder.state_dict()
    for key in ("patch_embed.proj.weight", "blocks.11.mlp.lin2.bias", "neck.3.weight"):
        torch.testing.assert_close(encoder_state[key], state[f"image_encoder.{key}"], rtol=0, atol=0)
    assert not vit_b_encoder.training
    assert not any(p.requires_grad for p in vit_b_encoder.parameters())


def test_vit_b_embed_one_image(vit_b_encoder: torch.nn.Module) -> None:
    """One small prepared image -> 1 x 256 x 64 x 64 float16 embedding on the CPU."""
    image = torch.randint(0, 256, (1, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    encoder = runtimes.TorchEncoder(vit_b_encoder, torch.device("cpu"))
    out = runtimes.embed(encoder, "medsam_vit_b", image, batch_size=1)
    assert out.shape == (1, 256, 64, 64)
    assert out.dtype == torch.float16
    assert out.device.type == "cpu"
    assert torch.isfinite(out).all()
    assert out.float().std() > 0


@pytest.mark.parametrize(("name", "side"), [("medsam_vit_b", 1024), ("lite_medsam", 256)])
def test_encoder_input_scales_to_unit_range_without_normalisation(name: str, side: int) -> None:
    """Uint8 B x S x S -> B x 3 x side x side in [0, 1]: 255 -> 1, 0 -> 0, 51 -> 0.2; no ImageNet mean/std."""
    images = torch.stack(
        [
            torch.full((40, 40), 255, dtype=torch.uint8),
            torch.zeros(40, 40, dtype=torch.uint8),
            torch.full((40, 40), 51, dtype=torch.uint8),
        ]
    )
    x = backbones.encoder_input(name, images)
    assert x.shape == (3, 3, side, side)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x[0], torch.ones(3, side, side), rtol=0, atol=1e-5)
    torch.testing.assert_close(x[1], torch.zeros(3, side, side), rtol=0, atol=1e-6)
    torch.testing.assert_close(x[2], torch.full((3, side, side), 0.2), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["medsam_vit_b", "lite_medsam"])
def test_encoder_input_keeps_range_and_channels(name: str) -> None:
    """A speckled image (bicubic overshoot at sharp edges) stays in [0, 1]; the three channels are equal."""
    images = torch.randint(0, 256, (1, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    x = backbones.encoder_input(name, images)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    with pytest.raises(AssertionError, match="B x S x S"):
        backbones.encoder_input(name, images[0])


def test_unknown_backbone() -> None:
    with pytest.raises(InputError, match="lite_medsam"):
        backbones.get_spec("vit_h")


def test_missing_checkpoint_names_path_address_and_alternative(tmp_path: Path) -> None:
    """One line naming the missing file, where to download it, and the packaged LiteMedSAM alternative."""
    missing = tmp_path / "models" / "medsam_vit_b.pth"
    with pytest.raises(InputError) as error:
        checkpoints.resolve_checkpoint("medsam_vit_b", str(missing))
    message = str(error.value)
    assert "\n" not in message
    assert str(missing) in message
    assert checkpoints.MEDSAM_URL in message and message.count("https://") == 1
    assert "encode.checkpoint" in message, "the setting that names the file"
    assert "lite_medsam" in message
    with pytest.raises(InputError, match="lite_medsam"):
        checkpoints.resolve_checkpoint("medsam_vit_b", None)


def test_configured_checkpoint_and_packaged_weights(vit_b_checkpoint: Path, lite_checkpoint: Path) -> None:
    assert checkpoints.resolve_checkpoint("medsam_vit_b", str(vit_b_checkpoint)) == vit_b_checkpoint
    assert lite_checkpoint.is_file()
    assert checkpoints.resolve_checkpoint("lite_medsam", "ignored/path.pth") == lite_checkpoint


def test_pickled_object_is_refused(tmp_path: Path) -> None:
    """A checkpoint that needs arbitrary unpickling is refused, and the object is never built."""
    path = tmp_path / "evil.pth"
    torch.save({"model": {"image_encoder.w": torch.zeros(1)}, "payload": Payload()}, path)
    for build in (backbones.build_image_encoder, backbones.build_prompt_decoder):
        with pytest.raises(InputError) as error:
            build("lite_medsam", path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_truncated_checkpoint_is_refused(tmp_path: Path, lite_checkpoint: Path) -> None:
    path = tmp_path / "truncated.pth"
    path.write_bytes(lite_checkpoint.read_bytes()[:1000])
    with pytest.raises(InputError, match="download it again") as error:
        backbones.load_state_dict(path)
    assert str(path) in str(error.value)


def test_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(InputError, match="state dict") as error:
        backbones.load_state_dict(path)
    assert str(path) in str(error.value)


def test_wrapped_state_dict_is_unwrapped(tmp_path: Path, lite_checkpoint: Path) -> None:
    """``{"model": state}`` loads like the bare state dict."""
    state = backbones.load_state_dict(lite_checkpoint)
    path = tmp_path / "wrapped.pth"
    torch.save({"model": state, "epoch": 3}, path)
    assert backbones.load_state_dict(path).keys() == state.keys()
    decoder = backbones.build_prompt_decoder("lite_medsam", path)
    torch.testing.assert_close(decoder.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"])


def test_wrong_shapes_are_refused(tmp_path: Path, lite_checkpoint: Path) -> None:
    """A state dict whose tensors do not fit: InputError naming the file and the settings to check."""
    state = backbones.load_state_dict(lite_checkpoint)
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    path = tmp_path / "wrong_shapes.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as error:
        backbones.build_prompt_decoder("lite_medsam", path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    assert "mask_decoder" in message and "encode.checkpoint" in message


def test_checkpoint_of_another_backbone_is_refused(lite_checkpoint: Path) -> None:
    """LiteMedSAM weights given as the ViT-B checkpoint: refused, naming the file."""
    with pytest.raises(InputError) as error:
        backbones.build_image_encoder("medsam_vit_b", lite_checkpoint)
    assert str(lite_checkpoint) in str(error.value) and "\n" not in str(error.value)
