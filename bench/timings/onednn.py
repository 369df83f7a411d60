"""What turning oneDNN off costs on the CPU (``autoprompt.device.pin_cpu_numerics`` does, for reproducibility).

One LiteMedSAM encode (1 x 3 x 256 x 256, seeded random input) and one training step (PromptHead + the frozen
LiteMedSAM decoder, batch 8 of seeded random embeddings, backward, Adam) with ``torch.backends.mkldnn`` on and off,
interleaved (the order alternates each repeat), after one warm-up of each. Importing ``stages`` pins the CPU code
paths as the pipeline does. Writes ``bench/results/onednn.json``.

    python -m bench.timings onednn [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

import stages  # noqa: F401  (pins the CPU code paths before the model runs)
from autoprompt.model import backbones, checkpoints
from autoprompt.model.decoding import head_logits
from autoprompt.model.head import PromptHead
from bench.lib import common

log = logging.getLogger("bench.onednn")
BACKBONE = "lite_medsam"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args, machine = common.parse_and_start(parser)
    checkpoint = checkpoints.resolve_checkpoint(BACKBONE, None)
    encoder = backbones.build_image_encoder(BACKBONE, checkpoint).eval()
    decoder = backbones.build_prompt_decoder(BACKBONE, checkpoint)
    for parameter in decoder.parameters():
        parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 256, 256, generator=generator)
    embeddings = torch.randn(8, 256, 64, 64, generator=generator)
    torch.manual_seed(0)
    head = PromptHead()
    optimiser = torch.optim.Adam(head.parameters(), 1e-3)

    def encode() -> None:
        with torch.no_grad():
            encoder(image)

    def step() -> None:
        loss = head_logits(head, decoder, embeddings).sigmoid().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    times: dict[str, dict[str, list[float]]] = {w: {"on": [], "off": []} for w in ("encode", "train_step")}
    for repeat in range(args.repeats + 1):
        for setting in ("on", "off") if repeat % 2 == 0 else ("off", "on"):
            torch.backends.mkldnn.enabled = setting == "on"
            for work, fn in (("encode", encode), ("train_step", step)):
                start = time.perf_counter()
                fn()
                if repeat:  # repeat 0 is the warm-up
                    times[work][setting].append(time.perf_counter() - start)
    result = {"machine": machine, "settings": {"repeats": args.repeats, "batch": 8}, "seconds": times}
    for work, settings in times.items():
        on, off = common.median(settings["on"]), common.median(settings["off"])
        result[work] = {"median_on_s": round(on, 3), "median_off_s": round(off, 3), "off_over_on": round(off / on, 3)}
        log.info("%s: oneDNN on %.3f s, off %.3f s (x%.3f)", work, on, off, off / on)
    common.write_result("onednn", result)
