"""Encode throughput (images/s) of every backbone in ``backbones.BACKBONES``, through ``backbones.embed``.

Times the whole ``embed`` call: resize + /255 on the device, the encoder, and the float16 copy back to the CPU.
CPU: float32 at batch 1 and 2 for LiteMedSAM, float32 batch 1 for MedSAM ViT-B, and one bfloat16-autocast
LiteMedSAM image to document how slow bfloat16 is on a CPU without native bfloat16. GPU (when there is one): both
backbones, batch 16, bfloat16 autocast and float32.

MedSAM's ViT-B weights cannot be downloaded here: unless ``--vit-checkpoint`` names the real file, a seeded random
ViT-B is written in the same format and loaded through the same path (``backbones.build_image_encoder``); the
speed of a random model is the speed of the real one.

    python bench/encode.py [--hc18 /path/to/hc18-sample]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import common
import torch

from autoprompt.model import backbones

log = logging.getLogger("bench.encode")

DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


def random_vit_b_checkpoint(folder: Path) -> Path:
    """A MedSAM-format checkpoint (a plain SAM ViT-B state dict) of a seeded random model."""
    from segment_anything import sam_model_registry

    path = folder / "medsam_vit_b.pth"
    torch.manual_seed(0)
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    return path


def measure(
    encoder: torch.nn.Module,
    name: str,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int,
    dtype: str,
    repeats: int,
    warmup: int,
) -> tuple[dict, torch.Tensor]:
    """Time ``repeats`` calls of ``embed`` on all ``images``, after ``warmup`` calls on one batch."""
    autocast = DTYPES[dtype]
    for _ in range(warmup):
        backbones.embed(encoder, name, images[:batch_size], device, batch_size, autocast)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, output = [], None
    for _ in range(repeats):
        elapsed, output = common.time_call(
            lambda: backbones.embed(encoder, name, images, device, batch_size, autocast), device
        )
        seconds.append(elapsed)
    med = common.median(seconds)
    row = {
        "backbone": name,
        "device": device.type,
        "dtype": dtype if dtype == "float32" else f"{dtype} autocast",
        "batch_size": batch_size,
        "images_per_repeat": len(images),
        "warmup_calls": warmup,
        "repeats": repeats,
        "seconds": [round(s, 4) for s in seconds],
        "median_seconds": round(med, 4),
        "seconds_per_image": round(med / len(images), 4),
        "images_per_second": round(len(images) / med, 4),
    }
    if device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    log.info(
        "%s %s %s batch %d: %.3f images/s (%.3f s/image; runs %s s)",
        name,
        device.type,
        row["dtype"],
        batch_size,
        row["images_per_second"],
        row["seconds_per_image"],
        row["seconds"],
    )
    return row, output


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """||approx - exact|| / ||exact|| over float32 copies."""
    approx, exact = approx.float(), exact.float()
    return float((approx - exact).norm() / exact.norm())


def build(name: str, checkpoint: Path, device: torch.device) -> torch.nn.Module:
    return backbones.build_image_encoder(name, checkpoint).to(device)


def run_cpu(args: argparse.Namespace, images: torch.Tensor, checkpoints: dict[str, Path]) -> dict:
    cpu = torch.device("cpu")
    rows, out = [], {}
    lite = build("lite_medsam", checkpoints["lite_medsam"], cpu)
    lite_images = images[: args.lite_images]
    for batch_size in args.lite_batch_sizes:
        row, out[batch_size] = measure(lite, "lite_medsam", lite_images, cpu, batch_size, "float32", args.repeats, 1)
        rows.append(row)
    first = {r["batch_size"]: r for r in rows}
    result: dict = {"runs": rows}
    if len(first) > 1:
        b0, b1 = sorted(first)[:2]
        result[f"lite_float32_batch{b1}_over_batch{b0}_throughput"] = round(
            first[b1]["images_per_second"] / first[b0]["images_per_second"], 3
        )
    if not args.skip_bf16:
        fp32_row = first[min(first)]
        row, bf16 = measure(lite, "lite_medsam", images[:1], cpu, 1, "bfloat16", 1, 0)
        row["note"] = "one image, once, no warm-up: documents the slowdown only"
        rows.append(row)
        result["lite_bfloat16_over_float32_seconds_per_image"] = round(
            row["seconds_per_image"] / fp32_row["seconds_per_image"], 2
        )
        result["lite_bfloat16_relative_error"] = round(relative_error(bf16[0], out[min(first)][0]), 5)
    del lite
    if not args.skip_vit:
        vit = build("medsam_vit_b", checkpoints["medsam_vit_b"], cpu)
        row, _ = measure(vit, "medsam_vit_b", images[:1], cpu, 1, "float32", args.vit_repeats, 0)
        row["note"] = "one image per repeat, no warm-up (the median drops the first, slowest call)"
        rows.append(row)
        result["vit_b_over_lite_float32_seconds_per_image"] = round(
            row["seconds_per_image"] / first[min(first)]["seconds_per_image"], 2
        )
    return result


def run_gpu(args: argparse.Namespace, images: torch.Tensor, checkpoints: dict[str, Path]) -> dict | str:
    device = common.gpu_device()
    if device is None:
        log.info("GPU: %s", common.NO_GPU)
        return common.NO_GPU
    tiled = images.repeat(-(-args.gpu_images // len(images)), 1, 1)[: args.gpu_images]
    rows, result = [], {}
    for name in backbones.BACKBONES:
        encoder = build(name, checkpoints[name], device)
        outputs, by_dtype = {}, {}
        for dtype in ("bfloat16", "float32"):
            row, outputs[dtype] = measure(encoder, name, tiled, device, args.gpu_batch_size, dtype, args.repeats, 1)
            rows.append(row)
            by_dtype[dtype] = row
        result[f"{name}_bfloat16_speedup_over_float32"] = round(
            by_dtype["bfloat16"]["images_per_second"] / by_dtype["float32"]["images_per_second"], 3
        )
        result[f"{name}_bfloat16_relative_error"] = round(relative_error(outputs["bfloat16"], outputs["float32"]), 5)
        del encoder
        torch.cuda.empty_cache()
    result["runs"] = rows
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="HC18 sample, official layout")
    parser.add_argument("--lite-images", type=int, default=2, help="images per CPU LiteMedSAM repeat")
    parser.add_argument("--lite-batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (LiteMedSAM CPU, every GPU run)")
    parser.add_argument("--vit-repeats", type=int, default=3, help="CPU ViT-B repeats, one image each (~13 s)")
    parser.add_argument("--vit-checkpoint", type=Path, help="real medsam_vit_b.pth (default: seeded random ViT-B)")
    parser.add_argument("--skip-vit", action="store_true", help="no ViT-B on the CPU")
    parser.add_argument("--skip-bf16", action="store_true", help="no bfloat16 LiteMedSAM image on the CPU")
    parser.add_argument("--gpu-images", type=int, default=64, help="images per GPU repeat (the sample, tiled)")
    parser.add_argument("--gpu-batch-size", type=int, default=16)
    args, machine = common.parse_and_start(parser)

    with common.scratch_dir() as scratch:
        data = common.load_hc18(args.hc18, max(args.lite_images, 1), 640, Path(scratch))
        checkpoints = {"lite_medsam": backbones.resolve_checkpoint("lite_medsam", None)}
        if args.vit_checkpoint:
            checkpoints["medsam_vit_b"] = backbones.resolve_checkpoint("medsam_vit_b", str(args.vit_checkpoint))
            vit_weights = f"real checkpoint {args.vit_checkpoint}"
        else:
            checkpoints["medsam_vit_b"] = random_vit_b_checkpoint(Path(scratch))
            vit_weights = "seeded random ViT-B (torch.manual_seed(0)), saved and loaded as medsam_vit_b.pth"
        log.info("medsam_vit_b weights: %s", vit_weights)
        cpu = run_cpu(args, data["images"], checkpoints)
        gpu = run_gpu(args, data["images"], checkpoints)

    common.write_result(
        "encode",
        {
            "benchmark": "encode",
            "what": "images/s of backbones.embed (resize + encoder + float16 copy to CPU), prepared 640 x 640 uint8 "
            "HC18 images; median of the timed repeats",
            "machine": machine,
            "settings": {
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "vit_b_weights": vit_weights,
                "image_size": 640,
            },
            "data": {"source": data["source"], "ids": data["ids"]},
            "cpu": cpu,
            "gpu": gpu,
        },
    )


if __name__ == "__main__":
    main()
