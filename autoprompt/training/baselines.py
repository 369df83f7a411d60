"""Training the baselines on masks, and their predictions.

One loop for every trained baseline: Adam, a multi-step schedule, Dice + cross-entropy (MONAI's ``DiceCELoss``,
sigmoid) between the logits resized to the label size S and the masks, as the paper trains its baselines. The
training images, their embeddings and masks move together under the same random flips, turns, zooms and shifts.
PerSAM is not trained: its reference's target feature is taken once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from monai.losses import DiceCELoss
from torch import Tensor, nn

from autoprompt.geometry import warp
from autoprompt.model import baselines
from autoprompt.model.baselines import METHODS, image_inputs
from autoprompt.model.decoding import PromptDecoder, scale_boxes, to_label_size
from autoprompt.settings import HeadInit, MethodSchedule, MethodSettings
from autoprompt.training.augment import Augment, random_inputs
from autoprompt.training.loop import make_head, schedule


@dataclass(frozen=True)
class BaselineConfig:
    """A ``baseline.<method>`` section's optimisation for one regime (``fewshot`` or ``all``)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    milestones: tuple[int, ...]
    gamma: float
    augment: Augment = field(default_factory=Augment)
    input_size: int | None = None

    @classmethod
    def from_settings(cls, section: MethodSchedule, regime: str) -> BaselineConfig:
        return cls(
            **schedule(section, regime),
            augment=Augment.from_settings(section.augment),
            input_size=getattr(section, "input_size", None),
        )


def make_model(
    name: str,
    section: MethodSettings,
    decoder: PromptDecoder,
    seed: int,
    boxes: Tensor | None,
    label_size: int,
    init: HeadInit,
) -> nn.Module:
    """A new, seeded baseline from its ``baseline.<name>`` section. The prompt head starts as the box-trained heads
    do (``init``: ``train.init``, from the N x 4 training boxes in the label frame), so that its first predictions
    are not saturated."""
    torch.manual_seed(seed)
    if name == "head_masks":
        boxes_in = scale_boxes(boxes, label_size, decoder.input_size)
        return make_head(decoder, init.prompt, init.scale, seed, boxes_in)
    return baselines.build(name, section, decoder)


def _batch(
    images: Tensor | None, embeddings: Tensor | None, masks: Tensor, moves: Tensor | None, size: int | None
) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """A batch moved by ``moves`` (B x 2 x 3, or None): normalised images B x 1 x size x size, embeddings, masks
    (images and embeddings None where the method does not read them)."""
    if moves is not None:
        masks = warp(masks[:, None].float(), moves, mode="nearest")[:, 0] > 0.5
        embeddings = warp(embeddings, moves) if embeddings is not None else None
        images = warp(images[:, None].float(), moves)[:, 0] if images is not None else None
    return (image_inputs(images, size) if images is not None else None), embeddings, masks


def _needed(
    method: baselines.Method, images: Tensor | None, embeddings: Tensor | None, count: int | None = None
) -> tuple[Tensor | None, Tensor | None]:
    """The inputs the method reads (the others None), checked to be there and, given ``count``, that many."""
    images, embeddings = (images if method.images else None), (embeddings if method.embeddings else None)
    for what, wanted, given in (("images", method.images, images), ("embeddings", method.embeddings, embeddings)):
        assert not wanted or given is not None, f"{method.title} needs the {what}"
        assert given is None or count is None or len(given) == count, f"{count} masks but {len(given)} {what}"
    return images, embeddings


def train_baseline(
    name: str,
    model: nn.Module,
    decoder: PromptDecoder | None,
    images: Tensor | None,
    embeddings: Tensor,
    masks: Tensor,
    config: BaselineConfig,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> nn.Module:
    """Train a baseline on N images (N x S x S uint8), their embeddings (N x 256 x 64 x 64, any float dtype) and
    masks (N x S x S bool); images or embeddings may be None where the method does not read them. PerSAM takes the
    first image's target feature. ``on_epoch(epoch, terms)`` receives the epoch's mean loss and learning rate."""
    method = METHODS[name]
    images, embeddings = _needed(method, images, embeddings, len(masks))
    if decoder is not None:  # the frozen decoder of the methods that read the embeddings
        decoder = decoder.to(device).eval().requires_grad_(False)
    model = model.to(device)
    if not method.trained:
        return model.fit(embeddings[0].to(device), masks[0].to(device)).eval()
    label_size = masks.shape[-1]
    loss_fn = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    order = torch.Generator().manual_seed(seed)
    transforms = torch.Generator().manual_seed(seed + 1_000_003)
    model.train()
    for epoch in range(config.epochs):
        total = 0.0
        for index in torch.randperm(len(masks), generator=order).split(config.batch_size):
            moves = random_inputs(len(index), config.augment, transforms) if config.augment.moves_inputs else None
            x, e, y = _batch(
                images[index].to(device) if images is not None else None,
                embeddings[index].to(device).float() if embeddings is not None else None,
                masks[index].to(device),
                moves.to(device) if moves is not None else None,
                config.input_size,
            )
            out = baselines.logits(name, model, decoder, x, e)
            loss = loss_fn(to_label_size(out, label_size)[:, None], y[:, None].float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index) / len(masks)
        if on_epoch is not None:
            on_epoch(epoch, {"total": total, "lr": optimizer.param_groups[0]["lr"]})
        schedule.step()
    return model.eval()


@torch.no_grad()
def predict_baseline(
    name: str,
    model: nn.Module,
    decoder: PromptDecoder | None,
    images: Tensor | None,
    embeddings: Tensor | None,
    label_size: int,
    input_size: int | None,
    batch_size: int,
    device: torch.device,
) -> Tensor:
    """Foreground probabilities N x S x S of a trained baseline (``images`` N x S x S uint8; ``embeddings``
    N x 256 x 64 x 64, may be float16; either None where the method does not read it)."""
    images, embeddings = _needed(METHODS[name], images, embeddings)
    count = len(images if images is not None else embeddings)
    decoder = decoder.to(device).eval() if decoder is not None else None
    model = model.to(device).eval()
    out = []
    for start in range(0, count, batch_size):
        window = slice(start, start + batch_size)
        x = image_inputs(images[window].to(device), input_size) if images is not None else None
        e = embeddings[window].to(device).float() if embeddings is not None else None
        logits = baselines.logits(name, model, decoder, x, e)
        out.append(torch.sigmoid(to_label_size(logits, label_size)).cpu())
    return torch.cat(out)
