"""Time of one training step: PromptHead + the frozen LiteMedSAM decoder + box losses at 640, backward, Adam.

Two implementations of the decoder call, timed in the same run, steps interleaved:

- ``batched``: the project's path (``decoding.head_logits``: ``PromptDecoder.forward``, all B images at once);
- ``per_image``: segment-anything's ``MaskDecoder.forward`` called image by image (the PyPI decoder repeats the
  image embeddings once per prompt, so B images with one prompt each must be decoded one at a time).

Both give the same logits (checked before timing). Embeddings are random normal, stored as float16 and cast to
float32 in the step, as the training loop does with cached embeddings; boxes are tight boxes of real HC18 images
(640 x 640 crops). Also times the phases of each step (forward, losses, backward, optimiser).

    python bench/train_step.py [--hc18 /path/to/hc18-sample]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import common
import torch

from autoprompt.model import backbones, checkpoints, losses
from autoprompt.model.decoding import PromptDecoder, head_logits, to_label_size
from autoprompt.training import loop

log = logging.getLogger("bench.train_step")

LABEL_SIZE = 640


def per_image_logits(head: torch.nn.Module, decoder: PromptDecoder, x: torch.Tensor) -> torch.Tensor:
    """B x 640 x 640 logits through segment-anything's own ``MaskDecoder.forward``, one image at a time."""
    sparse, dense = head(x)
    pe = decoder.image_pe()
    masks = [
        decoder.mask_decoder(
            image_embeddings=x[i : i + 1],
            image_pe=pe,
            sparse_prompt_embeddings=sparse[i : i + 1],
            dense_prompt_embeddings=dense[i : i + 1],
            multimask_output=False,
        )[0]
        for i in range(len(x))
    ]
    return to_label_size(torch.cat(masks), LABEL_SIZE)


def batched_logits(head: torch.nn.Module, decoder: PromptDecoder, x: torch.Tensor) -> torch.Tensor:
    return to_label_size(head_logits(head, decoder, x), LABEL_SIZE)


IMPLEMENTATIONS = {"batched": batched_logits, "per_image": per_image_logits}


class Step:
    """One implementation's head, optimiser and step; ``phases`` records the last step's phase times."""

    def __init__(
        self,
        name: str,
        head: torch.nn.Module,
        decoder: PromptDecoder,
        config: loop.TrainConfig,
        device: torch.device,
    ) -> None:
        self.name, self.head, self.decoder, self.device = name, head, decoder, device
        self.logits = IMPLEMENTATIONS[name]
        self.weights = config.loss
        self.optimizer = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.phases: dict[str, float] = {}

    def _mark(self, label: str, since: float) -> float:
        common.sync(self.device)
        now = time.perf_counter()
        self.phases[label] = now - since
        return now

    def __call__(self, embeddings16: torch.Tensor, boxes: torch.Tensor) -> float:
        common.sync(self.device)
        t = start = time.perf_counter()
        x = embeddings16.to(self.device).float()
        logits = self.logits(self.head, self.decoder, x)
        t = self._mark("forward", t)
        total = losses.box_loss(logits, boxes, self.weights)["total"]
        t = self._mark("losses", t)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        t = self._mark("backward", t)
        self.optimizer.step()
        t = self._mark("optimizer", t)
        return t - start


def check_same(decoder: PromptDecoder, head: torch.nn.Module, x: torch.Tensor) -> float:
    """Max |difference| of the two implementations' logits, relative to the logits' max |value|."""
    with torch.no_grad():
        a, b = batched_logits(head, decoder, x), per_image_logits(head, decoder, x)
    diff = float((a - b).abs().max() / a.abs().max().clamp(min=1e-12))
    tolerance = 1e-4 if x.device.type == "cpu" else 2e-3  # cuDNN's convolutions run in TF32 on a GPU by default
    assert diff < tolerance, f"batched and per-image decoder logits differ (relative max diff {diff:.2e})"
    return diff


def run(device: torch.device, embeddings16: torch.Tensor, boxes: torch.Tensor, args: argparse.Namespace) -> dict:
    checkpoint = checkpoints.resolve_checkpoint("lite_medsam", None)
    decoder = backbones.build_prompt_decoder("lite_medsam", checkpoint).to(device).eval().requires_grad_(False)
    config = loop.TrainConfig(
        epochs=1,
        batch_size=len(boxes),
        lr=1e-3,
        weight_decay=1e-4,
        milestones=(50,),
        gamma=0.1,
        loss=losses.LossWeights(),
        init_prompt="whole_box",
        init_scale=0.01,
    )
    boxes = boxes.to(device)
    heads = {name: loop.make_head(decoder, "whole_box", 0.01, seed=0).to(device) for name in IMPLEMENTATIONS}
    diff = check_same(decoder, heads["batched"], embeddings16.to(device).float())
    steps = {name: Step(name, heads[name], decoder, config, device) for name in IMPLEMENTATIONS}
    for _ in range(args.warmup):
        for step in steps.values():
            step(embeddings16, boxes)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    phases: dict[str, dict[str, list[float]]] = {name: {} for name in steps}
    for i in range(args.steps):
        order = list(steps) if i % 2 == 0 else list(reversed(steps))  # alternate who goes first
        for name in order:
            seconds[name].append(steps[name](embeddings16, boxes))
            for label, value in steps[name].phases.items():
                phases[name].setdefault(label, []).append(value)
    medians = {name: common.median(values) for name, values in seconds.items()}
    result = {
        "logits_relative_max_diff": diff,
        "seconds": {name: [round(s, 4) for s in values] for name, values in seconds.items()},
        "median_seconds": {name: round(m, 4) for name, m in medians.items()},
        "per_image_over_batched": round(medians["per_image"] / medians["batched"], 3),
        "phase_median_seconds": {
            name: {label: round(common.median(v), 4) for label, v in by_label.items()}
            for name, by_label in phases.items()
        },
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    log.info(
        "%s: step %.3f s batched, %.3f s per-image (ratio %.2f); phases %s",
        device.type,
        medians["batched"],
        medians["per_image"],
        result["per_image_over_batched"],
        result["phase_median_seconds"],
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="HC18 sample, official layout")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each implementation")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each implementation first")
    parser.add_argument("--skip-cpu", action="store_true", help="GPU steps only")
    args, machine = common.parse_and_start(parser)

    with common.scratch_dir() as scratch:
        data = common.load_hc18(args.hc18, args.batch_size, LABEL_SIZE, Path(scratch))
    boxes = data["boxes"]
    generator = torch.Generator().manual_seed(0)
    embeddings16 = torch.randn(len(boxes), 256, 64, 64, generator=generator).to(torch.float16)

    cpu = "not run: --skip-cpu" if args.skip_cpu else run(torch.device("cpu"), embeddings16, boxes, args)
    gpu_device = common.gpu_device()
    gpu = run(gpu_device, embeddings16, boxes, args) if gpu_device is not None else common.NO_GPU
    if gpu_device is None:
        log.info("GPU: %s", common.NO_GPU)

    common.write_result(
        "train_step",
        {
            "benchmark": "train_step",
            "what": "one training step (float16 -> float32 embeddings, PromptHead, frozen LiteMedSAM decoder, "
            "bilinear resize to 640, sigmoid, box_loss, backward, Adam step); median over timed steps, the "
            "two decoder implementations interleaved",
            "machine": machine,
            "settings": {
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "label_size": LABEL_SIZE,
                "backbone": "lite_medsam",
                "loss": "losses.LossWeights() (the workshop recipe)",
                "init": "loop.make_head(whole_box, scale 0.01, seed 0)",
                "embeddings": "torch.randn (seed 0) stored float16, cast to float32 in the step",
            },
            "data": {"source": data["source"], "ids": data["ids"], "boxes": boxes.tolist()},
            "cpu": cpu,
            "gpu": gpu,
        },
    )


if __name__ == "__main__":
    main()
