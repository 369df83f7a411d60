"""Training the prompt head in front of the frozen mask decoder, from cached embeddings and tight boxes only.

No image encoder is built here: a batch is B x 256 x 64 x 64 embeddings and B x 4 boxes in the label frame.
The decoder's B x 1 x 256 x 256 logits are resized to the label size (the crop) and the box losses are taken
on their sigmoid there, as the paper does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from autoprompt.decoding import PromptDecoder, to_label_size
from autoprompt.errors import InputError
from autoprompt.head import PromptHead
from autoprompt.losses import BoxLossWeights, box_loss

log = logging.getLogger(__name__)

SATURATED = 1e-4  # a probability closer than this to 0 or 1 gives the box losses almost no gradient
MIN_LIVE_FRACTION = 0.01  # the share of unsaturated pixels below which a start is refused
INIT_PROMPTS = ("mean_box", "whole_box", "random")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run (params.yaml ``train``)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    milestones: tuple[int, ...]
    gamma: float
    init_prompt: str
    init_scale: float
    loss: BoxLossWeights

    @classmethod
    def from_params(cls, train: dict) -> TrainConfig:
        init = train["init"]
        if init["prompt"] not in INIT_PROMPTS:
            raise InputError(f"params.yaml: train.init.prompt must be one of {INIT_PROMPTS}, got {init['prompt']!r}")
        return cls(
            epochs=int(train["epochs"]),
            batch_size=int(train["batch_size"]),
            lr=float(train["lr"]),
            weight_decay=float(train["weight_decay"]),
            milestones=tuple(int(m) for m in train["milestones"]),
            gamma=float(train["gamma"]),
            init_prompt=str(init["prompt"]),
            init_scale=float(init["scale"]),
            loss=BoxLossWeights.from_params(train["loss"]),
        )


def scale_boxes(boxes: Tensor, label_size: int, input_size: int) -> Tensor:
    """B x 4 boxes (x_min, y_min, x_max, y_max) in the label frame -> the encoder's input frame."""
    return boxes.float() * (input_size / label_size)


def make_head(decoder: PromptDecoder, config: TrainConfig, seed: int, boxes: Tensor | None = None) -> PromptHead:
    """A new head, seeded. Its outputs start at the prompt embedding of one box, whatever the image:

    ``mean_box``: the mean of the training ``boxes`` (N x 4, in the decoder's input frame), a prior of where the
    structure lies that needs no more than the box labels; ``whole_box``: a box around the whole image;
    ``random``: no prompt (PyTorch's initialisation, which can saturate the decoder: see ``check_start``).
    """
    torch.manual_seed(seed)
    head = PromptHead()
    if config.init_prompt == "random":
        return head
    side = decoder.input_size
    box = torch.tensor([[0.0, 0.0, side - 1.0, side - 1.0]])
    if config.init_prompt == "mean_box":
        assert boxes is not None and len(boxes), "mean_box needs the training boxes"
        box = boxes.float().mean(dim=0, keepdim=True).cpu()
    device = next(decoder.parameters()).device
    with torch.no_grad():
        sparse, dense = decoder.box_prompt(box.to(device))
    head.start_from_prompt(sparse[0].cpu(), dense[0, :, 0, 0].cpu(), config.init_scale)
    return head


def head_logits(head: PromptHead, decoder: PromptDecoder, embeddings: Tensor, label_size: int) -> Tensor:
    """B x 256 x 64 x 64 embeddings -> B x label_size x label_size logits of the head's prompt."""
    sparse, dense = head(embeddings)
    return to_label_size(decoder(embeddings, sparse, dense), label_size)


def live_fraction(probs: Tensor) -> float:
    """The share of pixels whose probability is not saturated at 0 or 1."""
    return float(((probs > SATURATED) & (probs < 1 - SATURATED)).float().mean())


def train_head(
    embeddings: Tensor,
    boxes: Tensor,
    label_size: int,
    decoder: PromptDecoder,
    config: TrainConfig,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> PromptHead:
    """Train a head on N embeddings (N x 256 x 64 x 64, any float dtype) and their N x 4 tight boxes (label frame).

    Adam with weight decay and a multi-step schedule; batches drawn by a generator seeded with ``seed``.
    ``on_epoch(epoch, terms)`` receives the epoch's mean loss terms and learning rate.
    """
    assert embeddings.ndim == 4 and boxes.shape == (len(embeddings), 4), (
        f"expected N x 256 x 64 x 64 embeddings and N x 4 boxes, got {tuple(embeddings.shape)}, {tuple(boxes.shape)}"
    )
    decoder = decoder.to(device).eval().requires_grad_(False)
    head = make_head(decoder, config, seed, scale_boxes(boxes, label_size, decoder.input_size)).to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    order = torch.Generator().manual_seed(seed)
    check_start(head, decoder, embeddings[: config.batch_size].to(device).float(), label_size)

    for epoch in range(config.epochs):
        totals: dict[str, float] = {}
        for batch in torch.randperm(len(embeddings), generator=order).split(config.batch_size):
            x = embeddings[batch].to(device).float()
            probs = torch.sigmoid(head_logits(head, decoder, x, label_size))
            terms = box_loss(probs, boxes[batch].to(device), config.loss)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) * len(batch) / len(embeddings)
        totals["lr"] = optimizer.param_groups[0]["lr"]
        schedule.step()
        if on_epoch is not None:
            on_epoch(epoch, totals)
    return head.eval()


@torch.no_grad()
def check_start(head: PromptHead, decoder: PromptDecoder, embeddings: Tensor, label_size: int) -> float:
    """Refuse a start whose predictions are saturated: the box losses would have no gradient (method-facts)."""
    live = live_fraction(torch.sigmoid(head_logits(head, decoder, embeddings, label_size)))
    log.debug("first predictions: %.1f%% of pixels unsaturated", 100 * live)
    if live < MIN_LIVE_FRACTION:
        raise InputError(
            f"params.yaml: the head's first predictions are saturated ({100 * live:.2f}% of pixels "
            "unsaturated), so training cannot move them; set train.init.prompt: whole_box"
        )
    return live


@torch.no_grad()
def predict(
    decoder: PromptDecoder,
    embeddings: Tensor,
    label_size: int,
    batch_size: int,
    device: torch.device,
    head: PromptHead | None = None,
    boxes: Tensor | None = None,
) -> Tensor:
    """Foreground probabilities N x label_size x label_size, from the head's prompts or, without a head, from
    the tight ``boxes`` (N x 4, label frame) as box prompts."""
    assert (head is None) != (boxes is None), "give either a head or boxes"
    decoder = decoder.to(device).eval()
    out = []
    for start in range(0, len(embeddings), batch_size):
        x = embeddings[start : start + batch_size].to(device).float()
        if head is not None:
            logits = head_logits(head.to(device).eval(), decoder, x, label_size)
        else:
            box = scale_boxes(boxes[start : start + batch_size].to(device), label_size, decoder.input_size)
            sparse, dense = decoder.box_prompt(box)
            logits = to_label_size(decoder(x, sparse, dense), label_size)
        out.append(torch.sigmoid(logits).cpu())
    return torch.cat(out)
