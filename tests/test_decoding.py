"""The batched frozen decoder equals segment-anything's own MaskDecoder called image by image."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoprompt.model import backbones
from autoprompt.model.decoding import PromptDecoder, to_label_size


@pytest.fixture(scope="module")
def lite_decoder(lite_checkpoint: Path) -> PromptDecoder:
    return backbones.build_prompt_decoder("lite_medsam", lite_checkpoint)


@pytest.fixture(scope="module")
def vit_b_decoder(vit_b_checkpoint: Path) -> PromptDecoder:
    return backbones.build_prompt_decoder("medsam_vit_b", vit_b_checkpoint)


def _check_against_reference(decoder: PromptDecoder) -> None:
    generator = torch.Generator().manual_seed(0)
    side = decoder.input_size
    embeddings = torch.randn(3, 256, 64, 64, generator=generator)
    boxes = torch.tensor([[0.1, 0.2, 0.6, 0.7], [0.3, 0.1, 0.9, 0.5], [0.0, 0.0, 1.0, 1.0]]) * (side - 1)
    with torch.no_grad():
        sparse, dense = decoder.box_prompt(boxes)
        got = decoder(embeddings, sparse, dense)
        reference = [
            decoder.mask_decoder(
                image_embeddings=embeddings[i : i + 1],
                image_pe=decoder.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse[i : i + 1],
                dense_prompt_embeddings=dense[i : i + 1],
                multimask_output=False,
            )[0]
            for i in range(3)
        ]
    expected = torch.cat(reference)
    assert got.shape == expected.shape == (3, 1, 256, 256)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got[0] - got[1]).abs().max() > 1e-2, "different prompts and images gave the same logits"


def test_batched_decoder_matches_segment_anything_lite(lite_decoder: PromptDecoder) -> None:
    """LiteMedSAM's decoder, 3 images with one box each."""
    assert lite_decoder.input_size == 256
    _check_against_reference(lite_decoder)


def test_batched_decoder_matches_segment_anything_vit_b(vit_b_decoder: PromptDecoder) -> None:
    """A random MedSAM ViT-B checkpoint's decoder, 3 images with one box each."""
    assert vit_b_decoder.input_size == 1024
    _check_against_reference(vit_b_decoder)


def test_decoder_is_frozen(lite_decoder: PromptDecoder) -> None:
    assert not any(p.requires_grad for p in lite_decoder.parameters())
    assert not lite_decoder.mask_decoder.training and not lite_decoder.prompt_encoder.training


def test_box_prompt_shapes(lite_decoder: PromptDecoder) -> None:
    """B x 4 boxes -> sparse B x 2 x 256 (two corners), dense B x 256 x 64 x 64; other shapes are refused."""
    boxes = torch.tensor([[10, 20, 100, 200], [0, 0, 255, 255]])  # integer boxes are taken as floats
    sparse, dense = lite_decoder.box_prompt(boxes)
    assert sparse.shape == (2, 2, 256)
    assert dense.shape == (2, 256, 64, 64)
    assert not torch.allclose(sparse[0], sparse[1])
    with pytest.raises(AssertionError, match="B x 4 boxes"):
        lite_decoder.box_prompt(torch.zeros(4))
    with pytest.raises(AssertionError, match="B x 4 boxes"):
        lite_decoder.box_prompt(torch.zeros(2, 2, 2))


def test_image_pe_shape(lite_decoder: PromptDecoder) -> None:
    assert lite_decoder.image_pe().shape == (1, 256, 64, 64)


def test_forward_refuses_mismatched_prompts(lite_decoder: PromptDecoder) -> None:
    embeddings = torch.zeros(2, 256, 64, 64)
    with pytest.raises(AssertionError, match="do not fit"):
        lite_decoder(embeddings, torch.zeros(3, 2, 256), torch.zeros(2, 256, 64, 64))
    with pytest.raises(AssertionError, match="dense"):
        lite_decoder(embeddings, torch.zeros(2, 2, 256), torch.zeros(1, 256, 64, 64))


@pytest.mark.parametrize("size", [640, 512, 256, 100])
def test_to_label_size(size: int) -> None:
    """B x 1 x 256 x 256 -> B x size x size, bilinear without corner alignment."""
    logits = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(size))
    out = to_label_size(logits, size)
    assert out.shape == (2, size, size)
    constant = to_label_size(torch.full((1, 1, 256, 256), 3.0), size)
    torch.testing.assert_close(constant, torch.full((1, size, size), 3.0))
    if size == 512:  # an exact 2x upsampling without corner alignment: pixel 1 is 3/4 of input 0, 1/4 of 1
        expected = 0.75 * logits[:, 0, 0, 0] + 0.25 * logits[:, 0, 0, 1]
        torch.testing.assert_close(out[:, 0, 1], expected, rtol=1e-5, atol=1e-6)
