"""PerSAM (Zhang et al., ICLR 2024), training-free: one reference image and its mask segment the same structure in
every test image through the frozen decoder, from the cached embeddings.

- Target feature: the mean of the reference embedding's locations inside the mask (resized to the 64 x 64 grid);
  normalised, it locates the structure; as it is, it is the semantic prompt.
- Location confidence: the cosine similarity of the target feature with every location of a test embedding,
  resized to the label size; the most similar pixel is the positive point, the least similar the negative one.
- Target-semantic prompting: the semantic prompt is added to every decoder token.
- Cascaded post-refinement: the first mask is fed back as a mask prompt, then with its bounding box; each
  refinement keeps the ambiguity-aware mask with the highest predicted IoU, as PerSAM does.
Simplified: target-guided attention (the similarity map modulating the decoder's token-to-image attention) is left
out, since it needs a change inside segment-anything's transformer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoprompt.model.decoding import PromptDecoder

GRID = 64


def target_features(embedding: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """A reference embedding 256 x 64 x 64 and its S x S mask -> (location feature 256, unit norm; semantic
    prompt 256): the mean of the embedding's locations inside the mask, normalised and as it is."""
    assert embedding.shape[1:] == (GRID, GRID), f"expected a 256 x 64 x 64 embedding, got {tuple(embedding.shape)}"
    small = F.interpolate(mask[None, None].float(), size=(GRID, GRID), mode="bilinear", align_corners=False)[0, 0]
    inside = small > 0.5 if (small > 0.5).any() else small == small.max()  # a tiny mask keeps its strongest cell
    semantic = embedding.float()[:, inside].mean(1)
    return F.normalize(semantic, dim=0), semantic


def confidence(location: Tensor, embeddings: Tensor, size: int) -> Tensor:
    """Cosine similarity of the location feature (256) with B x 256 x 64 x 64 embeddings -> B x size x size."""
    sim = torch.einsum("c,bchw->bhw", location, F.normalize(embeddings.float(), dim=1))
    return F.interpolate(sim[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def points(similarity: Tensor, input_size: int) -> tuple[Tensor, Tensor]:
    """B x S x S confidence -> point prompts: coordinates B x 2 x 2 (x, y; the most similar pixel, then the least)
    in the decoder's input frame, and labels B x 2 (1 positive, 0 negative)."""
    batch, size, _ = similarity.shape
    flat = similarity.reshape(batch, -1)
    picked = torch.stack([flat.argmax(1), flat.argmin(1)], dim=1)  # B x 2
    coords = torch.stack([picked % size, picked // size], dim=-1).float() * (input_size / size)
    labels = torch.tensor([1, 0], device=similarity.device).expand(batch, -1)
    return coords, labels


def mask_boxes(logits: Tensor, input_size: int) -> tuple[Tensor, Tensor]:
    """B x 1 x 256 x 256 low-resolution logits -> the B x 4 bounding boxes of their masks in the input frame, and
    B booleans: whether each mask has any pixel (an empty mask's box is the whole frame, and is not used)."""
    masks = logits[:, 0] > 0
    found = masks.flatten(1).any(1)
    masks = masks | ~found[:, None, None]
    rows, cols = masks.any(2).float(), masks.any(1).float()
    side = masks.shape[-1]
    boxes = torch.stack(
        [cols.argmax(1), rows.argmax(1), side - 1 - cols.flip(1).argmax(1), side - 1 - rows.flip(1).argmax(1)], dim=1
    )
    return boxes.float() * (input_size / side), found


def segment(decoder: PromptDecoder, embeddings: Tensor, location: Tensor, semantic: Tensor) -> Tensor:
    """B x 256 x 64 x 64 test embeddings -> low-resolution logits B x 1 x 256 x 256: points from the confidence
    map, target-semantic prompting, then two refinements (mask prompt; mask and box prompts)."""
    size = decoder.input_size
    embeddings = embeddings.float()
    coords, labels = points(confidence(location, embeddings, size), size)
    prompt = semantic[None].expand(len(embeddings), -1)
    encode = decoder.prompt_encoder
    sparse, dense = encode(points=(coords, labels), boxes=None, masks=None)
    logits = decoder(embeddings, sparse, dense, semantic=prompt)
    sparse, dense = encode(points=(coords, labels), boxes=None, masks=logits)
    logits = decoder(embeddings, sparse, dense, semantic=prompt, multimask=True)
    boxes, found = mask_boxes(logits, size)
    sparse, dense = encode(points=(coords, labels), boxes=boxes, masks=logits)
    refined = decoder(embeddings, sparse, dense, semantic=prompt, multimask=True)
    return torch.where(found[:, None, None, None], refined, logits)  # an empty mask has no box to refine with


class PerSamReference(nn.Module):
    """What PerSAM keeps of its reference image: the location feature and the semantic prompt (256 each)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("location", torch.zeros(256))
        self.register_buffer("semantic", torch.zeros(256))

    @torch.no_grad()
    def fit(self, embedding: Tensor, mask: Tensor) -> PerSamReference:
        """Take the target feature of one reference embedding 256 x 64 x 64 and its S x S mask."""
        location, semantic = target_features(embedding, mask)
        self.location.copy_(location)
        self.semantic.copy_(semantic)
        return self
