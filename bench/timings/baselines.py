"""Time of one training epoch of each baseline, with the paper configuration's settings (params.yaml) and the demo's
(demo/params.yaml), on 10 images (the 10-shot runs' epoch) at a 640 x 640 label size, HC18's crop.

Images are random uint8, masks random discs, embeddings random normal stored as float16: the cost of a step does
not depend on the values. The CPU numerics are pinned as the stages pin them (``pin_cpu_numerics``); on a GPU
(when there is one) the same epochs run there too. Medians of ``--repeats`` epochs after one warm-up epoch. PerSAM
has no training.

    python -m bench.timings baselines [--repeats 3] [--configs paper demo] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging

import torch

from autoprompt.device import pin_cpu_numerics
from autoprompt.model import backbones, checkpoints
from autoprompt.model.baselines import METHODS
from autoprompt.settings import Epochs, HeadInit, MethodSettings, Milestones, load_settings
from autoprompt.training.baselines import BaselineConfig, make_model, train_baseline
from bench.lib import common

log = logging.getLogger("bench.baselines")

IMAGES, LABEL_SIZE = 10, 640
CONFIGS = {"paper": common.REPO / "params.yaml", "demo": common.REPO / "demo" / "params.yaml"}


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """10 random images, disc masks, their tight boxes and float16 embeddings."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (IMAGES, LABEL_SIZE, LABEL_SIZE), generator=generator, dtype=torch.uint8)
    grid = torch.arange(LABEL_SIZE, dtype=torch.float32)
    centres = 200 + 240 * torch.rand(IMAGES, 2, generator=generator)
    radius = 60 + 100 * torch.rand(IMAGES, generator=generator)
    distance = (grid[None, :, None] - centres[:, 1, None, None]) ** 2 + (
        grid[None, None, :] - centres[:, 0, None, None]
    ) ** 2
    masks = distance < radius[:, None, None] ** 2
    boxes = torch.stack(
        [centres[:, 0] - radius, centres[:, 1] - radius, centres[:, 0] + radius, centres[:, 1] + radius], 1
    )
    embeddings = torch.randn(IMAGES, 256, 64, 64, generator=generator).half()
    return images, masks, boxes.round().long(), embeddings


def epoch_seconds(name: str, settings: MethodSettings, device: torch.device, repeats: int) -> dict:
    """Median wall seconds of one epoch over ``repeats`` epochs, after one warm-up epoch."""
    images, masks, boxes, embeddings = inputs()
    decoder = backbones.build_prompt_decoder("lite_medsam", checkpoints.resolve_checkpoint("lite_medsam", None))
    model = make_model(name, settings, decoder, 0, boxes, LABEL_SIZE, HeadInit())
    one_epoch = settings.model_copy(update={"epochs": Epochs(fewshot=1, all=1), "milestones": Milestones()})
    config = BaselineConfig.from_settings(one_epoch, "fewshot")
    times = []
    for _ in range(repeats + 1):  # train_baseline trains the model in place
        seconds, _ = common.time_call(
            lambda: train_baseline(name, model, decoder, images, embeddings, masks, config, 0, device),
            device,
        )
        times.append(seconds)
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"seconds_per_epoch": round(common.median(times[1:]), 3), "runs": [round(t, 3) for t in times[1:]],
            "parameters": parameters, "batch_size": config.batch_size, "input_size": config.input_size}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args, machine = common.parse_and_start(parser)
    devices = {"cpu": torch.device("cpu")}
    if common.gpu_device() is not None:
        devices["gpu"] = common.gpu_device()
    pin_cpu_numerics(args.threads)
    results: dict = {}
    for config in args.configs:
        section = load_settings(CONFIGS[config]).baseline
        for name in (n for n in section.methods if METHODS[n].trained):
            for device_name, device in devices.items():
                measured = epoch_seconds(name, section.method(name), device, args.repeats)
                log.info("%s %s on %s: %.2f s per epoch of %d images", config, name, device_name,
                         measured["seconds_per_epoch"], IMAGES)  # fmt: skip
                results.setdefault(config, {}).setdefault(name, {})[device_name] = measured
    common.write_result(
        "baselines",
        {
            "what": f"seconds per training epoch of {IMAGES} images (batches as configured), label size {LABEL_SIZE}, "
            "median of the repeats after a warm-up epoch; PerSAM has no training",
            "command": f"python -m bench.timings baselines --repeats {args.repeats} --configs {' '.join(args.configs)}"
            + (f" --threads {args.threads}" if args.threads else ""),
            "gpu": "measured" if "gpu" in devices else common.NO_GPU,
            "machine": machine,
            "results": results,
        },
    )
