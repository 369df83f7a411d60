"""AutoSAM (Shaharabany et al., BMVC 2023): a CNN on the image writes the dense prompt embedding of the frozen
mask decoder, in place of the prompt encoder; no sparse prompt. Trained with masks.

The paper's CNN is HarDNet-MSEG; here any timm CNN with multi-scale features (``baseline.autosam.encoder``): its
last three feature maps are projected to 256 channels, resized to the 64 x 64 grid and summed, then a 3 x 3
convolution gives the dense prompt, which starts at the prompt encoder's no-mask embedding.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoprompt.errors import InputError
from autoprompt.model.baselines.weights import read_state_dict
from autoprompt.model.decoding import PromptDecoder

EMBED_DIM, GRID = 256, 64
LEVELS = 3  # the deepest feature maps used


def load_weights(model: nn.Module, path: str | Path, param: str) -> None:
    """A local state dict (``weights.read_state_dict``) into a timm model; classifier keys and keys of another shape
    are left out. ``param`` names the setting that gave the path."""
    state = read_state_dict(path, param, "give a state dict saved from the timm model of baseline.autosam.encoder")
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(kept) < len(own) // 2:
        raise InputError(f"{path}: only {len(kept)} of {len(own)} tensors fit the model; check {param}")
    model.load_state_dict(kept, strict=False)


class AutoSamPrompt(nn.Module):
    """Images B x 1 x s x s -> dense prompt embeddings B x 256 x 64 x 64 for the frozen decoder."""

    def __init__(self, encoder: str, input_size: int, no_mask: Tensor, weights: str | Path | None = None) -> None:
        super().__init__()
        assert no_mask.shape == (EMBED_DIM,), f"expected the 256-d no-mask embedding, got {tuple(no_mask.shape)}"
        try:
            self.cnn = timm.create_model(encoder, pretrained=False, features_only=True)
        except (RuntimeError, TypeError) as error:
            raise InputError(
                f"baseline.autosam.encoder {encoder!r} is not a timm CNN with feature maps ({error})"
            ) from error
        self.pretrained = weights is not None
        if weights is not None:
            load_weights(self.cnn, weights, "baseline.autosam.weights")
        self.input_size = input_size
        channels = self.cnn.feature_info.channels()[-LEVELS:]
        self.project = nn.ModuleList(nn.Conv2d(c, EMBED_DIM, kernel_size=1) for c in channels)
        self.out = nn.Conv2d(EMBED_DIM, EMBED_DIM, kernel_size=3, padding=1)
        with torch.no_grad():
            self.out.weight.mul_(0.01)
            self.out.bias.copy_(no_mask)

    def forward(self, images: Tensor) -> Tensor:
        s = self.input_size
        assert images.shape[1:] == (1, s, s), f"expected B x 1 x {s} x {s} images, got {tuple(images.shape)}"
        features = self.cnn(images.expand(-1, 3, -1, -1))[-LEVELS:]
        summed = sum(
            F.interpolate(project(f), size=(GRID, GRID), mode="bilinear", align_corners=False)
            for project, f in zip(self.project, features, strict=True)
        )
        return self.out(F.relu(summed))


def autosam_logits(prompt: AutoSamPrompt, decoder: PromptDecoder, images: Tensor, embeddings: Tensor) -> Tensor:
    """Images B x 1 x s x s and their embeddings B x 256 x 64 x 64 -> low-resolution logits B x 1 x 256 x 256."""
    sparse = embeddings.new_zeros(len(embeddings), 0, EMBED_DIM)
    return decoder(embeddings, sparse, prompt(images))


def no_mask_embedding(decoder: PromptDecoder) -> Tensor:
    """The prompt encoder's dense embedding of "no mask prompt", 256."""
    return decoder.prompt_encoder.no_mask_embed.weight[0].detach().cpu().clone()
