"""Training the prompt head in front of the frozen mask decoder, from cached embeddings and tight boxes only.

No image encoder is built here: a batch is B x 256 x 64 x 64 embeddings and B x 4 boxes in the label frame (and,
for the follow-up recipe, the backbone's B x S x S box-prompted masks). The decoder's B x 1 x 256 x 256 logits are
resized to the label size S (the crop) and the losses are taken there, as the papers do; the consistency loss
compares predictions at the embedding's 64 x 64 grid.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from autoprompt.device import EXACT_NUMERICS, Numerics
from autoprompt.errors import InputError
from autoprompt.geometry import warp, warp_boxes
from autoprompt.model.decoding import PromptDecoder, head_logits, scale_boxes, to_label_size
from autoprompt.model.head import PromptHead
from autoprompt.model.losses import LossWeights, box_loss
from autoprompt.settings import Schedule, TrainSettings
from autoprompt.training.augment import Augment, Views, consistency_loss, pick_views, random_affine, random_inputs
from autoprompt.training.validation import ValidationSet, score

log = logging.getLogger(__name__)

SATURATED = 1e-4  # a probability closer than this to 0 or 1 gives the box losses almost no gradient
MIN_LIVE_FRACTION = 0.01  # the share of unsaturated pixels below which a start is refused
CONSISTENCY_GRID = 64  # predictions are compared at the embedding's grid, as the follow-up does


@dataclass(frozen=True)
class TrainConfig:
    """Everything one run's optimisation depends on: a recipe's settings for one regime, and the start.

    ``clip_grad_norm``: the largest gradient norm (0: no clipping). ``select``: keep the ``last`` epoch's head,
    or the ``best`` one by validation Dice against the box-prompted masks (needs a validation set).
    ``validate_every``: validate every so many epochs (and after the last); 0 never.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    milestones: tuple[int, ...]
    gamma: float
    loss: LossWeights
    clip_grad_norm: float = 0.0
    augment: Augment = field(default_factory=Augment)
    init_prompt: str = "mean_box"
    init_scale: float = 0.01
    select: str = "last"
    validate_every: int = 0

    @classmethod
    def from_settings(cls, train: TrainSettings, recipe: str, regime: str) -> TrainConfig:
        """The config of a ``regime`` (``fewshot`` or ``all``) of ``train.recipes.<recipe>``, with the start,
        selection and validation settings shared by every recipe."""
        settings = train.recipes[recipe]
        return cls(
            **schedule(settings, regime),
            loss=LossWeights.from_settings(settings.loss),
            clip_grad_norm=settings.clip_grad_norm,
            augment=Augment.from_settings(settings.augment),
            init_prompt=train.init.prompt,
            init_scale=train.init.scale,
            select=train.select,
            validate_every=train.validate_every,
        )


def schedule(section: Schedule, regime: str) -> dict:
    """A section's epochs, batch size, Adam settings and multi-step schedule for one regime (``fewshot`` or ``all``):
    what a recipe and a baseline's section share."""
    return {
        "epochs": getattr(section.epochs, regime),
        "batch_size": section.batch_size,
        "lr": section.lr,
        "weight_decay": section.weight_decay,
        "milestones": tuple(getattr(section.milestones, regime)),
        "gamma": section.gamma,
    }


@dataclass(frozen=True)
class PseudoBoxes:
    """A second round's extra images (``training.self_training``): M x 256 x 64 x 64 ``embeddings``, their M x 4
    pseudo-boxes (label frame) from the first round's masks, their M x S x S box-prompted ``masks`` (the pseudo-label
    loss's targets; None where the recipe has none), the ``weight`` each counts in the losses (the drawn boxes count
    1) and how many join each epoch (``per_epoch``, drawn in turn from a shuffled order): an epoch keeps its drawn
    boxes and schedule, and takes ``per_epoch`` pseudo-boxed images more. ``source``: how they were chosen (the
    rule and its counts), recorded with the runs that train on them."""

    embeddings: Tensor
    boxes: Tensor
    masks: Tensor | None
    weight: float
    per_epoch: int
    source: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = len(self.embeddings)
        assert self.boxes.shape == (m, 4), f"{m} pseudo-boxed images, boxes {tuple(self.boxes.shape)}"
        assert self.masks is None or len(self.masks) == m, f"{m} pseudo-boxed images, masks {tuple(self.masks.shape)}"
        assert self.per_epoch > 0, "per_epoch must be positive"


class _Cycle:
    """Indices 0..m-1 in turn, reshuffled (by ``generator``) each time they run out."""

    def __init__(self, m: int, generator: torch.Generator) -> None:
        self.m, self.generator, self.queue = m, generator, torch.empty(0, dtype=torch.long)

    def take(self, k: int) -> Tensor:
        while len(self.queue) < k:
            self.queue = torch.cat([self.queue, torch.randperm(self.m, generator=self.generator)])
        out, self.queue = self.queue[:k], self.queue[k:]
        return out


@dataclass
class TrainResult:
    """The selected head, the epoch it comes from (1-based), the last head, and the validation history."""

    head: PromptHead
    epoch: int
    last: PromptHead
    history: list[dict[str, float]]


def make_head(decoder: PromptDecoder, prompt: str, scale: float, seed: int, boxes: Tensor | None = None) -> PromptHead:
    """A new head, seeded, its output layers scaled by ``scale``. Its outputs start at the ``prompt`` embedding of
    one box, whatever the image:

    ``mean_box``: the mean of the training ``boxes`` (N x 4, in the decoder's input frame), a prior of where the
    structure lies that needs no more than the box labels; ``whole_box``: a box around the whole image;
    ``random``: no prompt (PyTorch's initialisation, which can saturate the decoder: see ``check_start``).
    """
    torch.manual_seed(seed)
    head = PromptHead()
    if prompt == "random":
        return head
    side = decoder.input_size
    box = torch.tensor([[0.0, 0.0, side - 1.0, side - 1.0]])
    if prompt == "mean_box":
        assert boxes is not None and len(boxes), "mean_box needs the training boxes"
        box = boxes.float().mean(dim=0, keepdim=True).cpu()
    device = next(decoder.parameters()).device
    with torch.no_grad():
        sparse, dense = decoder.box_prompt(box.to(device))
    head.start_from_prompt(sparse[0].cpu(), dense[0, :, 0, 0].cpu(), scale)
    return head


_COMPILED: dict[tuple, Callable] = {}
# inductor's pattern matcher turns the decoder's attention (7 tokens against 4096) into the CPU flash-attention
# kernel, whose backward took a third of the compiled step; without it the step is faster (bench/timings/train_step.py)
COMPILE_OPTIONS = {"pattern_matcher": False}


def step_logits(
    numerics: Numerics, options: dict | None = None, channels_last: bool = True
) -> Callable[[PromptHead, PromptDecoder, Tensor], Tensor]:
    """``head_logits`` as the training step runs it under ``numerics``: through ``torch.compile`` (once per process and
    ``options``, default ``COMPILE_OPTIONS``; the batch size dynamic, so the last short batch of an epoch and every run
    reuse one compiled graph; inductor keeps its kernels in its cache across processes), the embeddings in
    channels-last memory format when compiled (``channels_last``), and under bfloat16 autocast where ``numerics`` says
    so. The logits come back in float32, so the losses are always taken in float32.
    ``bench/timings/train_step.py`` times each of these levers alone and together."""
    forward = head_logits
    if numerics.compile:
        options = COMPILE_OPTIONS if options is None else options
        key = tuple(sorted(options.items()))
        if key not in _COMPILED:
            # a compiler that fails (a missing header, say) leaves the step eager, with inductor's error in the log
            torch._dynamo.config.suppress_errors = True
            _COMPILED[key] = torch.compile(head_logits, dynamic=True, options=dict(options))
        forward = _COMPILED[key]
    reformat = numerics.compile and channels_last

    def logits(head: PromptHead, decoder: PromptDecoder, x: Tensor) -> Tensor:
        if reformat:
            x = x.contiguous(memory_format=torch.channels_last)
        with numerics.autocast(x.device):
            out = forward(head, decoder, x)
        return out.float()

    return logits


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
    pseudo: Tensor | None = None,
    validation: ValidationSet | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    views: Views | None = None,
    numerics: Numerics = EXACT_NUMERICS,
    extra: PseudoBoxes | None = None,
) -> TrainResult:
    """Train a head on N embeddings (N x 256 x 64 x 64, any float dtype) and their N x 4 tight boxes (label frame).

    ``pseudo``: N x S x S box-prompted masks, needed by the pseudo-label loss. ``views``: the images' encoded views,
    drawn instead of an image with probability ``config.augment.views`` (none: the images only). ``validation``:
    scored every ``config.validate_every`` epochs; with ``select: best`` the head of the best epoch by Dice against the
    box-prompted masks is returned. Adam with weight decay, a multi-step schedule and optional gradient clipping;
    batches and transforms are drawn by generators seeded with ``seed``. ``on_epoch(epoch, terms)`` receives the
    epoch's mean loss terms, learning rate, barrier t and validation scores. ``numerics``: how the step computes on a
    CPU (``step_logits``; the default is the exact float32 path). ``extra``: pseudo-boxed images that join each
    epoch at their lower weight (``PseudoBoxes``; they draw no views).
    """
    assert embeddings.ndim == 4 and boxes.shape == (len(embeddings), 4), (
        f"expected N x 256 x 64 x 64 embeddings and N x 4 boxes, got {tuple(embeddings.shape)}, {tuple(boxes.shape)}"
    )
    assert pseudo is not None or not config.loss.pseudo_label, "the pseudo-label loss needs the box-prompted masks"
    if pseudo is not None:
        assert pseudo.shape == (len(embeddings), label_size, label_size), f"pseudo-labels {tuple(pseudo.shape)}"
    if views is not None:
        assert len(views.embeddings) == len(embeddings), (
            f"views of {len(views.embeddings)} images, not {len(embeddings)}"
        )
        assert pseudo is None or views.pseudo is not None, "the pseudo-label loss needs the views' pseudo-labels"
    if config.select == "best" and (validation is None or not config.validate_every):
        raise InputError("train.select is best, which needs validation images and train.validate_every > 0")
    decoder = decoder.to(device).eval().requires_grad_(False)
    boxes_in = scale_boxes(boxes, label_size, decoder.input_size)
    head = make_head(decoder, config.init_prompt, config.init_scale, seed, boxes_in).to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    order = torch.Generator().manual_seed(seed)
    transforms = torch.Generator().manual_seed(seed + 1_000_003)
    picks = torch.Generator().manual_seed(seed + 2_000_003)  # its own stream: without views, nothing changes
    check_start(head, decoder, embeddings[: config.batch_size].to(device).float(), label_size)
    logits = step_logits(numerics)
    drawn, weights, cycle = len(embeddings), None, None
    if extra is not None:
        assert (pseudo is None) == (extra.masks is None), "the pseudo-boxed images need box-prompted masks too"
        embeddings = torch.cat([embeddings, extra.embeddings.to(embeddings.dtype)])
        boxes = torch.cat([boxes, extra.boxes.to(boxes.dtype)])
        pseudo = torch.cat([pseudo, extra.masks.to(pseudo.dtype)]) if pseudo is not None else None
        weights = torch.cat([torch.ones(drawn), torch.full((len(extra.boxes),), float(extra.weight))])
        cycle = _Cycle(len(extra.boxes), torch.Generator().manual_seed(seed + 3_000_003))

    history: list[dict[str, float]] = []
    best: tuple[float, int, dict] | None = None
    for epoch in range(config.epochs):
        t = config.loss.barrier_t(epoch)
        totals: dict[str, float] = {}
        rows = torch.arange(drawn)
        if cycle is not None:
            rows = torch.cat([rows, drawn + cycle.take(min(extra.per_epoch, cycle.m))])
        for batch in rows[torch.randperm(len(rows), generator=order)].split(config.batch_size):
            x, b, target = embeddings[batch], boxes[batch], pseudo[batch] if pseudo is not None else None
            if views is not None and config.augment.views:
                x, b, target = _with_views(batch, x, b, target, views, config.augment.views, picks)
            target = target.to(device) if target is not None else None
            w = weights[batch].to(device) if weights is not None else None
            terms = _batch_terms(
                head, decoder, x.to(device).float(), b.to(device), target, label_size, config, t, transforms, logits, w
            )
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            if config.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(head.parameters(), config.clip_grad_norm)
            optimizer.step()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) * len(batch) / len(rows)
        totals["lr"], totals["t"] = optimizer.param_groups[0]["lr"], t
        schedule.step()
        last_epoch = epoch + 1 == config.epochs
        if (
            validation is not None
            and config.validate_every
            and ((epoch + 1) % config.validate_every == 0 or last_epoch)
        ):
            scores = score(head, decoder, validation, label_size, device)
            history.append({"epoch": epoch + 1, **scores})
            totals.update({f"val_{k}": v for k, v in scores.items()})
            if best is None or scores["dice_box"] > best[0]:
                best = (scores["dice_box"], epoch + 1, copy.deepcopy(head.state_dict()))
        if on_epoch is not None:
            on_epoch(epoch, totals)
    head = head.eval()
    if config.select == "best":
        chosen = copy.deepcopy(head)
        chosen.load_state_dict(best[2])
        return TrainResult(chosen.eval(), best[1], head, history)
    return TrainResult(head, config.epochs, head, history)


def _with_views(
    batch: Tensor, x: Tensor, boxes: Tensor, pseudo: Tensor | None, views: Views, probability: float, generator
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The batch's embeddings, boxes and pseudo-labels, each image replaced by one of its views with
    ``probability``; rows past the views' (a second round's pseudo-boxed images) have none and stay as they are."""
    which = pick_views(len(batch), views.embeddings.shape[1], probability, generator)
    which[batch >= len(views.embeddings)] = -1
    chosen = which >= 0
    if not chosen.any():
        return x, boxes, pseudo
    rows, picked = batch[chosen], which[chosen]
    x, boxes = x.clone(), boxes.clone()
    x[chosen] = views.embeddings[rows, picked].to(x.dtype)
    boxes[chosen] = views.boxes[rows, picked].to(boxes.dtype)
    if pseudo is not None:
        pseudo = pseudo.clone()
        pseudo[chosen] = views.pseudo[rows, picked].to(pseudo.dtype)
    return x, boxes, pseudo


def _batch_terms(
    head: PromptHead,
    decoder: PromptDecoder,
    x: Tensor,
    boxes: Tensor,
    pseudo: Tensor | None,
    label_size: int,
    config: TrainConfig,
    t: float,
    generator: torch.Generator,
    logits: Callable[[PromptHead, PromptDecoder, Tensor], Tensor] = head_logits,
    weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """The loss terms of one batch: box losses (and the pseudo-label loss) at the label size, and the consistency
    of the prediction on transformed embeddings with the transformed prediction, at 64 x 64. ``logits``: the
    decoder's forward (``step_logits``); ``weights``: B, how much each image counts in the box losses (None: 1)."""
    if config.augment.moves_inputs:
        moves = random_inputs(len(x), config.augment, generator).to(x.device)
        x, boxes = warp(x, moves), warp_boxes(boxes, moves, label_size)
        if pseudo is not None:
            pseudo = warp(pseudo[:, None].float(), moves, mode="nearest")[:, 0] > 0.5
    low_res = logits(head, decoder, x)
    terms = box_loss(to_label_size(low_res, label_size), boxes, config.loss, t, pseudo, weights)
    if config.loss.consistency:
        matrices = random_affine(len(x), config.augment, generator).to(x.device)
        probs = _grid_probs(low_res)
        moved = _grid_probs(logits(head, decoder, warp(x, matrices)))
        terms["consistency"] = consistency_loss(moved, probs, matrices)
        terms["total"] = terms["total"] + config.loss.consistency * terms["consistency"]
    return terms


def _grid_probs(low_res: Tensor) -> Tensor:
    """B x 1 x 256 x 256 logits -> B x 64 x 64 probabilities."""
    grid = (CONSISTENCY_GRID, CONSISTENCY_GRID)
    return torch.sigmoid(F.interpolate(low_res, size=grid, mode="bilinear", align_corners=False))[:, 0]


@torch.no_grad()
def check_start(head: PromptHead, decoder: PromptDecoder, embeddings: Tensor, label_size: int) -> float:
    """Refuse a start whose predictions are saturated: the box losses would have no gradient (method-facts)."""
    live = live_fraction(torch.sigmoid(to_label_size(head_logits(head, decoder, embeddings), label_size)))
    log.debug("first predictions: %.1f%% of pixels unsaturated", 100 * live)
    if live < MIN_LIVE_FRACTION:
        raise InputError(
            f"the head's first predictions are saturated ({100 * live:.2f}% of pixels unsaturated), so training "
            "cannot move them; set train.init.prompt: whole_box"
        )
    return live


__all__ = [
    "PseudoBoxes",
    "TrainConfig",
    "TrainResult",
    "check_start",
    "live_fraction",
    "make_head",
    "schedule",
    "step_logits",
    "train_head",
]
