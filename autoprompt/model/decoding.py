"""The frozen SAM prompt encoder and mask decoder, called batched: one prompt per image.

The PyPI ``segment_anything.MaskDecoder.predict_masks`` repeats the image embeddings once per prompt, so B images
with one prompt each would become B x B decodings. ``PromptDecoder.forward`` writes the batched path out with the
decoder's own submodules, and keeps only the single-mask output (``multimask_output=False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder
from torch import Tensor, nn


class PromptDecoder(nn.Module):
    """Frozen prompt encoder and mask decoder; ``input_size`` is the encoder's square input side."""

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder, input_size: int) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.input_size = input_size

    def image_pe(self) -> Tensor:
        """The fixed positional encoding, 1 x 256 x 64 x 64."""
        return self.prompt_encoder.get_dense_pe()

    def box_prompt(self, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """B x 4 boxes (x_min, y_min, x_max, y_max, in the input_size frame) -> sparse B x 2 x 256, dense
        B x 256 x 64 x 64."""
        assert boxes.ndim == 2 and boxes.shape[1] == 4, f"expected B x 4 boxes, got {tuple(boxes.shape)}"
        return self.prompt_encoder(points=None, boxes=boxes.float(), masks=None)

    def forward(
        self, embeddings: Tensor, sparse: Tensor, dense: Tensor, semantic: Tensor | None = None, multimask: bool = False
    ) -> Tensor:
        """Image embeddings B x 256 x 64 x 64 and one prompt per image -> low-resolution logits B x 1 x 256 x 256.

        ``semantic`` (B x 256): added to every token, the output tokens and the prompt's (PerSAM's target-semantic
        prompting). ``multimask``: of the three ambiguity-aware masks, the one with the highest predicted IoU, as
        segment-anything's predictor picks for point prompts; else the single-mask output."""
        return self.scored(embeddings, sparse, dense, semantic, multimask)[0]

    def scored(
        self, embeddings: Tensor, sparse: Tensor, dense: Tensor, semantic: Tensor | None = None, multimask: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``forward``'s B x 1 x 256 x 256 logits and the decoder's own estimate of each mask's IoU with the
        structure (B, its IoU head's output for the mask returned), which says how sure it is of a mask."""
        decoder = self.mask_decoder
        batch, channels, height, width = embeddings.shape
        assert sparse.shape[0] == batch and sparse.shape[2] == channels, (
            f"sparse prompts {tuple(sparse.shape)} do not fit embeddings {tuple(embeddings.shape)}"
        )
        assert dense.shape == embeddings.shape, f"dense {tuple(dense.shape)} != embeddings {tuple(embeddings.shape)}"

        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens[None].expand(batch, -1, -1), sparse], dim=1)
        if semantic is not None:
            assert semantic.shape == (batch, channels), f"semantic prompts {tuple(semantic.shape)}"
            tokens = tokens + semantic[:, None, :]
        src = embeddings + dense
        pos = self.image_pe().expand(batch, -1, -1, -1)

        hs, src = decoder.transformer(src, pos, tokens)
        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(batch, channels, height, width))
        b, c, h, w = upscaled.shape
        iou = decoder.iou_prediction_head(hs[:, 0, :])  # B x 4: the single mask's, then the three others'
        if multimask:  # token 0 is the IoU token, mask tokens 1..3 the ambiguity-aware outputs
            best = iou[:, 1:].argmax(1) + 1  # B
            mask_token = hs[torch.arange(batch), 1 + best, :]
            hyper = torch.stack(
                [decoder.output_hypernetworks_mlps[int(k)](t) for k, t in zip(best, mask_token, strict=True)]
            )
            chosen = iou[torch.arange(batch), best]
        else:  # mask token 0 is the single-mask output
            hyper = decoder.output_hypernetworks_mlps[0](hs[:, 1, :])  # B x C'
            chosen = iou[:, 0]
        return torch.bmm(hyper[:, None, :], upscaled.reshape(b, c, h * w)).reshape(b, 1, h, w), chosen


def to_label_size(logits: Tensor, size: int) -> Tensor:
    """B x 1 x 256 x 256 low-resolution logits -> B x size x size, bilinear, ``align_corners=False``."""
    return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def scale_boxes(boxes: Tensor, label_size: int, input_size: int) -> Tensor:
    """B x 4 boxes (x_min, y_min, x_max, y_max) in the label frame -> the encoder's input frame."""
    return boxes.float() * (input_size / label_size)


def head_logits(head: nn.Module, decoder: PromptDecoder, embeddings: Tensor) -> Tensor:
    """B x 256 x 64 x 64 embeddings -> B x 1 x 256 x 256 low-resolution logits of the head's prompt."""
    sparse, dense = head(embeddings)
    return decoder(embeddings, sparse, dense)


@torch.no_grad()
def decode_scored(
    decoder: PromptDecoder,
    embeddings: Tensor,
    label_size: int,
    batch_size: int,
    device: torch.device,
    head: nn.Module | None = None,
    boxes: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``decode``'s N x label_size x label_size probabilities and the decoder's predicted IoU of each mask (N),
    its own estimate of how well the mask covers a structure."""
    assert (head is None) != (boxes is None), "give either a head or boxes"
    decoder = decoder.to(device).eval()
    if head is not None:
        head = head.to(device).eval()
    out, ious = [], []
    for start in range(0, len(embeddings), batch_size):
        x = embeddings[start : start + batch_size].to(device).float()
        if head is not None:
            sparse, dense = head(x)
        else:
            scaled = scale_boxes(boxes[start : start + batch_size].to(device), label_size, decoder.input_size)
            sparse, dense = decoder.box_prompt(scaled)
        logits, iou = decoder.scored(x, sparse, dense)
        out.append(torch.sigmoid(to_label_size(logits.float(), label_size)).cpu())  # float32 under autocast too
        ious.append(iou.float().cpu())
    return torch.cat(out), torch.cat(ious)


@torch.no_grad()
def decode(
    decoder: PromptDecoder,
    embeddings: Tensor,
    label_size: int,
    batch_size: int,
    device: torch.device,
    head: nn.Module | None = None,
    boxes: Tensor | None = None,
) -> Tensor:
    """Foreground probabilities N x label_size x label_size, from the head's prompts or, without a head, from
    the ``boxes`` (N x 4, label frame) as box prompts. ``embeddings`` may be float16; they are computed in float32."""
    return decode_scored(decoder, embeddings, label_size, batch_size, device, head, boxes)[0]
