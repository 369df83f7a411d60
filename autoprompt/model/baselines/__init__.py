"""The baselines of Table 1, built by name from their ``baseline.<method>`` section.

Every method maps a batch to low-resolution logits B x 1 x h x w (the pixel models at their input size, the
prompt-based ones at the decoder's 256 x 256), which are resized to the label size for losses and scores:

- ``unet``: MONAI's UNet on the image, from scratch.
- ``transunet``: R50 + ViT-B/16 hybrid (timm) with the cascaded upsampler, on the image.
- ``autosam``: a timm CNN on the image writes the frozen decoder's dense prompt.
- ``head_masks``: the prompt head on the cached embedding, trained on masks instead of boxes.
- ``persam``: training-free; one reference image's mask, the frozen decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from autoprompt.errors import InputError
from autoprompt.model.baselines.autosam import AutoSamPrompt, autosam_logits, no_mask_embedding
from autoprompt.model.baselines.persam import PerSamReference, segment
from autoprompt.model.baselines.transunet import TransUNet
from autoprompt.model.baselines.unet import SegmentationUNet
from autoprompt.model.decoding import PromptDecoder, head_logits
from autoprompt.model.head import PromptHead
from autoprompt.settings import AutoSamSettings, MethodSettings, TransUNetSettings, UNetSettings


@dataclass(frozen=True)
class Method:
    """``title``: the table's name of the method; ``images`` / ``embeddings``: what it reads (the prepared
    images, the cached embeddings and the frozen decoder); ``trained``: it has a training loop."""

    title: str
    images: bool
    embeddings: bool
    trained: bool = True


METHODS = {
    "unet": Method("UNet (MONAI)", images=True, embeddings=False),
    "transunet": Method("TransUNet", images=True, embeddings=False),
    "autosam": Method("AutoSAM", images=True, embeddings=True),
    "head_masks": Method("Prompt module trained with masks", images=False, embeddings=True),
    "persam": Method("PerSAM", images=False, embeddings=True, trained=False),
}


def title(name: str, section: MethodSettings) -> str:
    """The table's name of a baseline, with the backbone it was built on and whether it was pretrained."""
    base = METHODS[name].title
    if isinstance(section, TransUNetSettings | AutoSamSettings):
        return f"{base} ({section.encoder}{'' if section.weights else ', no pretraining'})"
    return base


def build(name: str, section: MethodSettings, decoder: PromptDecoder) -> nn.Module:
    """A new baseline model (seed torch first) from its ``baseline.<name>`` section."""
    if isinstance(section, UNetSettings):
        return SegmentationUNet(section.input_size, list(section.channels), list(section.strides), section.res_units)
    if isinstance(section, TransUNetSettings):
        return TransUNet(section.encoder, section.input_size, section.weights)
    if isinstance(section, AutoSamSettings):
        return AutoSamPrompt(section.encoder, section.input_size, no_mask_embedding(decoder), section.weights)
    if name == "head_masks":
        return PromptHead()
    if name == "persam":
        return PerSamReference()
    raise InputError(f"no baseline {name!r}; pick from {sorted(METHODS)}")


def logits(
    name: str, model: nn.Module, decoder: PromptDecoder, images: Tensor | None, embeddings: Tensor | None
) -> Tensor:
    """A batch's low-resolution logits B x 1 x h x w: ``images`` B x 1 x s x s (normalised, at the method's input
    size) and ``embeddings`` B x 256 x 64 x 64, each None where the method does not read it."""
    if name in ("unet", "transunet"):
        return model(images)
    if name == "autosam":
        return autosam_logits(model, decoder, images, embeddings)
    if name == "head_masks":
        return head_logits(model, decoder, embeddings)
    if name == "persam":
        return segment(decoder, embeddings, model.location, model.semantic)
    raise InputError(f"no baseline {name!r}; pick from {sorted(METHODS)}")


def image_inputs(images: Tensor, size: int) -> Tensor:
    """N x S x S uint8 (or float) images -> N x 1 x size x size float32, bilinear (antialiased when shrinking),
    each image standardised to zero mean and unit variance."""
    x = images[:, None].float()
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)
    return (x - mean) / std
