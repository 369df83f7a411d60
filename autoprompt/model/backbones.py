"""Backbone registry: name -> image encoder module, frozen prompt decoder and input transform.

Every backbone maps a prepared S x S uint8 image to a 256 x 64 x 64 image embedding, and shares the SAM prompt
encoder and mask decoder design. Checkpoints are read with ``torch.load(..., weights_only=True)`` only. Running an
encoder (runtime, precision, device) is ``autoprompt.model.runtimes``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import Tensor, nn

from autoprompt.errors import InputError
from autoprompt.model.checkpoints import lite_tools
from autoprompt.model.decoding import PromptDecoder

log = logging.getLogger(__name__)

EMBED_DIM = 256
EMBED_GRID = 64


@dataclass(frozen=True)
class BackboneSpec:
    """How one backbone is built and fed.

    ``input_size``: the square side the encoder takes (boxes are prompted in this frame).
    ``interpolation``/``antialias``: how the prepared image is resized to it, before dividing by 255.
    """

    name: str
    input_size: int
    interpolation: str
    antialias: bool
    build_image_encoder: Callable[[], nn.Module]


def _build_vit_b_encoder() -> nn.Module:
    from segment_anything import sam_model_registry

    from autoprompt.model.attention import use_sdpa

    encoder = sam_model_registry["vit_b"]().image_encoder
    use_sdpa(encoder)  # the same maths, fused attention kernels (autoprompt/model/attention.py)
    return encoder


def _build_lite_encoder() -> nn.Module:
    return lite_tools().build_lite_medsam().image_encoder


BACKBONES: dict[str, BackboneSpec] = {
    "medsam_vit_b": BackboneSpec("medsam_vit_b", 1024, "bicubic", False, _build_vit_b_encoder),
    "lite_medsam": BackboneSpec("lite_medsam", 256, "bilinear", True, _build_lite_encoder),
}


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; use one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def load_state_dict(path: Path) -> dict[str, Tensor]:
    """A model state dict from ``path``, unwrapping ``{"model": ...}``; never unpickles arbitrary objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle refusals and truncated files alike
        raise InputError(
            f"{path}: not a readable weights-only checkpoint ({error.__class__.__name__}); download it again"
        ) from error
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict of tensors; download the checkpoint again")
    return state


def _subset(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _load_part(module: nn.Module, state: dict[str, Tensor], prefix: str, path: Path, name: str) -> nn.Module:
    part = _subset(state, prefix)
    try:
        module.load_state_dict(part, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise InputError(
            f"{path}: its {prefix.rstrip('.')} weights do not fit the {name} backbone ({first}); give a {name} "
            "checkpoint, or the backbone this one is for (encode.backbone, encode.checkpoint)"
        ) from error
    return module.eval().requires_grad_(False)


def build_image_encoder(name: str, checkpoint: Path, state: dict[str, Tensor] | None = None) -> nn.Module:
    """The frozen image encoder: B x 3 x input_size x input_size -> B x 256 x 64 x 64."""
    spec = get_spec(name)
    state = load_state_dict(checkpoint) if state is None else state
    return _load_part(spec.build_image_encoder(), state, "image_encoder.", checkpoint, name)


def build_prompt_decoder(name: str, checkpoint: Path, state: dict[str, Tensor] | None = None) -> PromptDecoder:
    """The frozen prompt encoder and mask decoder of a backbone, without its image encoder."""
    spec = get_spec(name)
    state = load_state_dict(checkpoint) if state is None else state
    prompt_encoder = PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(EMBED_GRID, EMBED_GRID),
        input_image_size=(spec.input_size, spec.input_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return PromptDecoder(
        _load_part(prompt_encoder, state, "prompt_encoder.", checkpoint, name),
        _load_part(mask_decoder, state, "mask_decoder.", checkpoint, name),
        spec.input_size,
    )


def encoder_input(name: str, images: Tensor) -> Tensor:
    """B x S x S uint8 prepared images -> B x 3 x input_size x input_size floats in [0, 1].

    Resize, then divide by 255: MedSAM and LiteMedSAM take no ImageNet mean/std normalisation.
    """
    assert images.ndim == 3, f"expected B x S x S images, got {tuple(images.shape)}"
    spec = get_spec(name)
    size = (spec.input_size, spec.input_size)
    x = images[:, None].float()
    x = F.interpolate(x, size=size, mode=spec.interpolation, align_corners=False, antialias=spec.antialias)
    return (x / 255.0).clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
