"""Where the GPU time of ViT-B's encode goes, kernel by kernel (a GPU only; without one it writes "not run: no GPU").

The encoder exactly as the encode stage builds it on a GPU (``runtimes.build_encoder``: folded attention, through
cuDNN where ``cudnn_takes_folded``, ``torch.compile``, bfloat16 autocast), a seeded random ViT-B in MedSAM's
checkpoint format, random inputs of ``--batch`` images. After 3 warm-up calls (compilation), ``torch.profiler``
records ``--calls`` calls. Per kernel: calls and device milliseconds per image; per kind of kernel (matrix products,
attention, the compiler's fused Triton kernels, the rest): its share of the device time. The measured rate of the
matrix products and the attention (TFLOP/s) comes from the FLOPs counted in the docstring of ``vit_b_flops``.

    python -m bench.timings profile_encode [--batch 32] [--calls 3]
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from autoprompt.model import runtimes
from autoprompt.model.attention import cudnn_takes_folded
from bench.lib import common

log = logging.getLogger("bench.profile_encode")

KINDS = {  # substrings of kernel names, checked in this order (cuDNN's attention kernels name "sdpa")
    "fused (Triton)": ("triton",),
    "attention": ("sdpa", "flash", "fmha", "attention"),
    "matrix products": ("gemm", "xmma", "cutlass", "nvjet", "wgmma", "sm90"),
}


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, parts in KINDS.items():
        if any(part in lowered for part in parts):
            return kind
    return "other"


def vit_b_flops() -> dict[str, float]:
    """FLOPs per 1024 x 1024 image (a multiply-add counts 2). Linear layers: 12 blocks of qkv (768 -> 2304), proj and
    the MLP (768 -> 3072 -> 768), on 4096 tokens in the 4 global blocks and 4900 (the 14 x 14 windows of a grid padded
    to 70 x 70) in the others for qkv and proj; the patch embedding and the neck. Attention in the folded global
    blocks: 12 heads x 4096^2 scores, q'.k' at width 192 and p.v at 128 (cuDNN) or 192 (flash)."""
    token_linear = 2 * (768 * 2304 + 768 * 768)
    mlp = 2 * 2 * 768 * 3072
    linear = 4 * 4096 * (token_linear + mlp) + 8 * (4900 * token_linear + 4096 * mlp)
    linear += 2 * 4096 * 768 * 3 * 16 * 16 + 2 * 4096 * (768 * 256 + 256 * 256 * 9)
    scores = 4 * 12 * 4096**2
    windows = 8 * 25 * 12 * 196**2
    return {
        "linear": float(linear),
        "attention_cudnn": float(2 * scores * (192 + 128) + 2 * windows * (96 + 64)),
        "attention_flash": float(2 * scores * (192 + 192) + 2 * windows * (96 + 96)),
    }


def profile_gpu(args: argparse.Namespace, device: torch.device, checkpoint: Path) -> dict:
    choice = runtimes.Choice("torch", "bfloat16")  # the runtime cache (".") is for OpenVINO only
    encoder = runtimes.build_encoder("medsam_vit_b", checkpoint, choice, device, Path("."), compile=True)
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(args.batch, 3, 1024, 1024, device=device, generator=generator)
    for _ in range(3):
        encoder(x)
    common.sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.calls):
            encoder(x)
        common.sync(device)
    images = args.batch * args.calls
    kernels: dict[str, dict] = {}
    for event in prof.key_averages():
        if event.device_type == DeviceType.CUDA and event.self_device_time_total > 0:
            kernels[event.key] = {"calls": event.count, "ms_per_image": event.self_device_time_total / 1000 / images}
    total = sum(k["ms_per_image"] for k in kernels.values())
    by_kind: dict[str, float] = defaultdict(float)
    for name, row in kernels.items():
        row["kind"] = kind_of(name)
        by_kind[row["kind"]] += row["ms_per_image"]
    flops = vit_b_flops()
    modules = sorted({type(m).__name__ for m in encoder.module.modules() if "Attention" in type(m).__name__})
    attention_flops = flops["attention_cudnn" if cudnn_takes_folded(device) else "attention_flash"]  # as built
    work = {"matrix products": flops["linear"], "attention": attention_flops}
    rates = {kind: work[kind] / (by_kind[kind] / 1000) / 1e12 for kind in work if by_kind[kind] > 0}
    top = sorted(kernels.items(), key=lambda item: -item[1]["ms_per_image"])[: args.top]
    log.info("device ms per image %.3f (%.0f images/s of kernel time)", total, 1000 / total)
    for kind, ms in sorted(by_kind.items(), key=lambda item: -item[1]):
        log.info("%-16s %.3f ms per image (%.0f%%)", kind, ms, 100 * ms / total)
    for name, row in top:
        log.info("%7.3f ms %5d calls  %-16s %s", row["ms_per_image"], row["calls"], row["kind"], name[:100])
    return {
        "device_name": torch.cuda.get_device_name(device),
        "cudnn_version": torch.backends.cudnn.version(),
        "attention_modules": modules,
        "device_ms_per_image": round(total, 4),
        "images_per_second_of_device_time": round(1000 / total, 1),
        "ms_per_image_by_kind": {k: round(v, 4) for k, v in by_kind.items()},
        "share_by_kind": {k: round(v / total, 3) for k, v in by_kind.items()},
        "flops_per_image": flops,
        "tflops_per_second": {k: round(v, 1) for k, v in rates.items()},
        "top_kernels": [
            {"name": name, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}}
            for name, row in top
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--calls", type=int, default=3, help="profiled calls after 3 warm-up calls")
    parser.add_argument("--top", type=int, default=25, help="kernels listed, the longest first")
    args, machine = common.parse_and_start(parser)
    device = common.gpu_device()
    if device is None:
        log.info("GPU: %s", common.NO_GPU)
        gpu: dict | str = common.NO_GPU
    else:
        with common.scratch_dir() as scratch:
            gpu = profile_gpu(args, device, common.random_vit_b_checkpoint(Path(scratch)))
    common.write_result(
        "profile_encode",
        {
            "benchmark": "profile_encode",
            "what": "device time per image of ViT-B's encoder as the encode stage runs it on a GPU, per kernel and "
            "per kind of kernel (torch.profiler)",
            "machine": machine,
            "settings": {**vars(args), "vit_b_weights": "seeded random ViT-B (seed 0)", "inputs": "torch.rand"},
            "gpu": gpu,
        },
    )
