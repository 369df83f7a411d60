"""What a reduced-precision encoder costs in test Dice, on real HC18 images with LiteMedSAM.

On a CPU: OpenVINO bfloat16 (``encode.cpu_precision: bfloat16``) against OpenVINO float32; on a GPU (when there is
one): torch under bfloat16 autocast against float32. For each precision, from the same images: the embeddings'
relative difference to float32 (per image, median and largest); the tight-box prompt's test Dice; a head trained on
``--shots`` training images' embeddings of that precision (params.yaml's ``--recipe``, few-shot settings, seed 0) and
its test Dice; and the float32 head applied to the reduced-precision embeddings (trained at one precision, deployed at
the other). The images are the sample's first ``--images`` prepared as the paper configuration prepares HC18 (crop
640); the first ``--shots`` train, the rest test. On a CPU both precisions run with the code paths unpinned (bfloat16
needs that). A machine with neither bfloat16 instructions nor a GPU has nothing to compare: the study stops there and
writes nothing. ``--save-npz`` writes the prepared images to one file (``common.save_hc18``) that ``--hc18`` of the
benchmarks also reads: that is how the images travel to a GPU machine without SimpleITK.

    python -m bench.studies.precision [--hc18 PATH] [--images 100]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from autoprompt.model import backbones, checkpoints, runtimes
from autoprompt.model.decoding import decode
from autoprompt.settings import load_settings
from autoprompt.training.loop import TrainConfig, train_head
from autoprompt.training.pseudo_labels import box_prompted_masks
from bench.lib import common

log = logging.getLogger("bench.precision")

NAME = "lite_medsam"
CACHE = common.BENCH / ".work" / "runtimes"


def encode(choice: runtimes.Choice, device: torch.device, images: torch.Tensor) -> tuple[torch.Tensor, float]:
    checkpoint = checkpoints.resolve_checkpoint(NAME, None)
    encoder = runtimes.build_encoder(NAME, checkpoint, choice, device, CACHE)
    start = time.perf_counter()
    out = runtimes.embed(encoder, NAME, images, 16 if device.type == "cuda" else 1)
    return out, time.perf_counter() - start


def compare(device: torch.device, choices: dict[str, runtimes.Choice], data: dict, args: argparse.Namespace) -> dict:
    """Every measure of the module's docstring, for the float32 choice and the reduced one."""
    config = TrainConfig.from_settings(load_settings(args.params).train, args.recipe, "fewshot")
    decoder = backbones.build_prompt_decoder(NAME, checkpoints.resolve_checkpoint(NAME, None)).to(device)
    images, masks, boxes = data["images"], data["masks"], data["boxes"]
    train, test = slice(0, args.shots), slice(args.shots, None)
    size = images.shape[-1]
    result, heads, embedded = {"config": args.recipe, "train_images": args.shots}, {}, {}
    for label, choice in choices.items():
        embedded[label], seconds = encode(choice, device, images)
        log.info("%s: encoded %d images in %.1f s", label, len(images), seconds)
        pseudo = box_prompted_masks(decoder, embedded[label][train], boxes[train], size, 8, device)
        start = time.perf_counter()
        trained = train_head(embedded[label][train], boxes[train], size, decoder, config, 0, device, pseudo)
        heads[label] = trained.last
        box_probs = decode(decoder, embedded[label][test], size, 8, device, boxes=boxes[test])
        head_probs = decode(decoder, embedded[label][test], size, 8, device, head=trained.last)
        result[label] = {
            "encode_seconds": round(seconds, 1),
            "train_seconds": round(time.perf_counter() - start, 1),
            "tight_box_dice": common.dice_percent(box_probs, masks[test]),
            "head_dice": common.dice_percent(head_probs, masks[test]),
        }
        log.info("%s: %s", label, result[label])
    reference, reduced = choices
    differences = runtimes.relative_differences(embedded[reduced], embedded[reference])
    result["relative_difference"] = {
        "median": float(f"{common.median(differences):.2e}"),
        "max": float(f"{max(differences):.2e}"),
    }
    crossed = decode(decoder, embedded[reduced][test], size, 8, device, head=heads[reference])
    result[f"{reference} head on {reduced} embeddings"] = {"head_dice": common.dice_percent(crossed, masks[test])}
    result["effect"] = {
        "tight_box_dice": round(result[reduced]["tight_box_dice"] - result[reference]["tight_box_dice"], 2),
        "head_dice": round(result[reduced]["head_dice"] - result[reference]["head_dice"], 2),
        "deployed_head_dice": round(
            result[f"{reference} head on {reduced} embeddings"]["head_dice"] - result[reference]["head_dice"], 2
        ),
    }
    log.info("effect of %s: %s", reduced, result["effect"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="HC18 sample (or a save_hc18 .npz)")
    parser.add_argument("--images", type=int, default=100, help="prepared images: the first --shots train")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml")
    parser.add_argument("--recipe", default="augmented", help="a recipe of train.recipes in --params")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--save-npz", type=Path, help="also write the prepared images to this .npz and stop")
    args, machine = common.parse_and_start(parser)

    with common.scratch_dir() as scratch:
        data = common.load_hc18(args.hc18, args.images, 640, Path(scratch))
    if args.save_npz:
        common.save_hc18(data, args.save_npz)
        log.info("wrote %s (%.1f MB)", args.save_npz, args.save_npz.stat().st_size / 1e6)
        return
    if "real HC18" not in data["source"]:
        raise SystemExit(f"{args.hc18}: the real HC18 sample is needed (a Dice effect on phantoms says nothing)")
    cpu = "not run: --skip-cpu"
    if not args.skip_cpu:
        choices = {"openvino float32": runtimes.Choice("openvino", "float32")}
        if runtimes.cpu_has_bfloat16():
            choices["openvino bfloat16"] = runtimes.Choice("openvino", "bfloat16")
            cpu = compare(torch.device("cpu"), choices, data, args)
        else:
            cpu = "not run: this CPU has no bfloat16 instructions"
    device = common.gpu_device()
    gpu = common.NO_GPU
    if device is not None:
        choices = {f"torch {p}": runtimes.Choice("torch", p) for p in ("float32", "bfloat16")}
        gpu = compare(device, choices, data, args)
    if isinstance(cpu, str) and isinstance(gpu, str):  # two "not run"s would replace a measured result
        raise SystemExit(f"precision: nothing to compare on this machine (CPU: {cpu}; GPU: {gpu})")
    common.write_result(
        "precision",
        {
            "benchmark": "precision",
            "what": "test Dice with reduced-precision embeddings vs float32 ones (LiteMedSAM, real HC18)",
            "machine": machine,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "data": {"source": data["source"], "ids": data["ids"]},
            "cpu": cpu,
            "gpu": gpu,
        },
    )


if __name__ == "__main__":
    main()
