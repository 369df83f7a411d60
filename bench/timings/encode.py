"""Encode speed of every backbone in every runtime, and how far each runtime's embeddings are from torch float32's.

CPU, each group in a child process of its own, its runtimes interleaved repeat by repeat on the same images:
- ``pipeline``: the CPU code paths pinned as the stages pin them (``autoprompt.cpu_paths``: AVX2, oneDNN off in
  torch): torch float32 and OpenVINO float32, what ``encode.runtime: torch | auto`` computes;
- ``native``: nothing pinned: torch float32, OpenVINO float32 and, where the CPU has bfloat16 instructions, OpenVINO
  bfloat16 (``encode.cpu_precision: bfloat16``, which lifts the pin).
Per backbone and runtime: ``seconds_per_image`` (median over the repeats), ``speedup_over_torch`` (torch float32
seconds / runtime seconds, same group) and ``max_relative_difference`` (||e - e_torch|| / ||e_torch|| per image, the
largest, on the encoders' outputs; ``..._float16_stored``: after the store's float16 rounding). The whole
``runtimes.embed`` call is timed (resize, encoder, float16 copy).

GPU (when there is one): MedSAM ViT-B under bfloat16 autocast with SDPA attention (relative positions as a bias) at
batch 16 and 32, eager and ``torch.compile``d; segment-anything's own attention at batch 16 (what SDPA gains); the
relative positions folded into the queries and keys, eager and compiled, through the flash kernel and through cuDNN's
attention; the encoder exactly as the encode stage builds it on this GPU (``runtimes.build_encoder``), compiled; float32
(the reference of the bfloat16 difference); LiteMedSAM bfloat16 and float32. Both the encoder alone (inputs already on
the GPU) and the whole ``embed`` call are timed.

On the GPU, the folded attention also runs through cuDNN (``CudnnFoldedAttention``, what the encode stage runs on an
H100 or H200 with cuDNN 9.11 or later: v padded to 128 in the global blocks), eager and compiled, compiled with v at
its own width 64, and the bias through cuDNN, compiled. Every compiled variant starts from ``torch._dynamo.reset()``:
the encoder's code objects are shared, and dynamo stops compiling a frame after 8 recompilations. ``--gpu-only
PART...`` runs the variants whose label holds one of the parts (float32, the reference, always runs); each repeat
encodes ``--gpu-images`` (the sample, tiled). OpenVINO's conversion (``build_seconds``, with compilation) happens once
per checkpoint, cached in ``bench/.work/runtimes/``.

MedSAM's ViT-B weights cannot be downloaded here: unless ``--vit-checkpoint`` names the real file, a seeded random
ViT-B is written in the same format and loaded through the same path; the speed of a random model is the real one's,
its embedding differences are not those of the real weights.

    python -m bench.timings encode [--hc18 /path/to/hc18-sample]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import subprocess
import time
from pathlib import Path

import torch
from segment_anything.modeling.image_encoder import Attention
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from autoprompt.cpu_paths import CPU_CODE_PATHS
from autoprompt.model import backbones, checkpoints, runtimes
from autoprompt.model.attention import (
    CudnnFoldedAttention,
    SdpaAttention,
    cudnn_takes_folded,
    use_folded,
)
from bench.lib import common

log = logging.getLogger("bench.encode")

CACHE = common.BENCH / ".work" / "runtimes"
REFERENCES = ("float32 sdpa", "float32 b32")  # what the GPU variants' differences are measured against
CPU = torch.device("cpu")


def cpu_encoders(name: str, checkpoint: Path, group: str) -> tuple[dict, dict]:
    """The CPU encoders of one group, and the seconds each took to build (OpenVINO: conversion + compile)."""
    encoders, build_seconds = {}, {}
    precisions = ["float32"]
    if group == "native" and runtimes.cpu_has_bfloat16():
        precisions.append("bfloat16")
    start = time.perf_counter()
    encoders["torch float32"] = runtimes.build_encoder(
        name, checkpoint, runtimes.Choice("torch", "float32"), CPU, CACHE
    )
    build_seconds["torch float32"] = time.perf_counter() - start
    for precision in precisions:
        start = time.perf_counter()
        choice = runtimes.Choice("openvino", precision)
        encoders[f"openvino {precision}"] = runtimes.build_encoder(name, checkpoint, choice, CPU, CACHE)
        build_seconds[f"openvino {precision}"] = time.perf_counter() - start
    return encoders, build_seconds


def run_cpu_group(group: str, images: torch.Tensor, checkpoints: dict[str, Path], counts: dict, repeats: int) -> dict:
    """Every backbone's runtimes of one group, interleaved repeat by repeat."""
    if group == "pipeline":
        from autoprompt.device import pin_cpu_numerics

        pin_cpu_numerics(torch.get_num_threads())
    out = {"environment": {k: os.environ.get(k) for k in CPU_CODE_PATHS}, "backbones": {}}
    for name in backbones.BACKBONES:
        subset = images[: counts[name]]
        encoders, build_seconds = cpu_encoders(name, checkpoints[name], group)
        for encoder in encoders.values():  # warm-up
            runtimes.embed(encoder, name, subset[:1], 1)
        seconds = {key: [] for key in encoders}
        outputs = {}
        for _ in range(repeats):
            for key, encoder in encoders.items():
                call = functools.partial(backbones.embed, encoder, name, subset, 1)
                elapsed, outputs[key] = common.time_call(call, CPU)
                seconds[key].append(elapsed / len(subset))
        torch_seconds = common.median(seconds["torch float32"])
        with torch.inference_mode():  # the differences of the float32 outputs, before the store's float16 rounding
            raw = {key: encoder(backbones.encoder_input(name, subset)).float() for key, encoder in encoders.items()}
        rows = {}
        for key in encoders:
            per_image = common.median(seconds[key])
            difference = max(runtimes.relative_differences(raw[key], raw["torch float32"]))
            stored = max(runtimes.relative_differences(outputs[key], outputs["torch float32"]))
            rows[key] = {
                "seconds_per_image": round(per_image, 4),
                "images_per_second": round(1 / per_image, 3),
                "speedup_over_torch": round(torch_seconds / per_image, 2),
                "max_relative_difference": float(f"{difference:.2e}"),
                "max_relative_difference_float16_stored": float(f"{stored:.2e}"),
                "build_seconds": round(build_seconds[key], 1),
                "seconds_per_image_each_repeat": [round(s, 4) for s in seconds[key]],
            }
            log.info("%s %s %s: %s", group, name, key, {k: v for k, v in rows[key].items() if "repeat" not in k})
        out["backbones"][name] = {"images": len(subset), "repeats": repeats, "runtimes": rows}
        del encoders
    return out


def measure_gpu(encoder, name: str, images: torch.Tensor, batch: int, repeats: int) -> tuple[dict, torch.Tensor]:
    """Encoder alone (inputs resized on the GPU beforehand) and the whole ``embed`` call, medians of ``repeats``."""
    device = encoder.device
    x = backbones.encoder_input(name, images[:batch].to(device))
    with torch.inference_mode():
        for _ in range(2):  # warm-up (and compilation)
            encoder(x)
        common.sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        encoder_only = []
        for _ in range(repeats):
            elapsed, _ = common.time_call(lambda: encoder(x), device)
            encoder_only.append(batch / elapsed)
    whole, output = [], None
    for _ in range(repeats):
        elapsed, output = common.time_call(lambda: runtimes.embed(encoder, name, images, batch), device)
        whole.append(len(images) / elapsed)
    row = {
        "batch_size": batch,
        "encoder_images_per_second": round(common.median(encoder_only), 1),
        "embed_images_per_second": round(common.median(whole), 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
        "encoder_images_per_second_each_repeat": [round(v, 1) for v in encoder_only],
    }
    return row, output


def compiled(module: nn.Module, device: torch.device) -> runtimes.TorchEncoder:
    """``module`` compiled under bfloat16 from a fresh dynamo: the variants share the encoder's code objects, and
    dynamo stops compiling a frame after 8 recompilations."""
    torch._dynamo.reset()
    return runtimes.TorchEncoder(module, device, "bfloat16", compile=True)


class CudnnSdpaAttention(SdpaAttention):
    """``SdpaAttention`` (the relative positions as a B x heads x N x N bias) through cuDNN's attention kernel."""

    def forward(self, x: Tensor) -> Tensor:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return super().forward(x)


def run_cudnn_variants(args: argparse.Namespace, record, device: torch.device, checkpoint: Path) -> None:
    """ViT-B under bfloat16 with cuDNN's attention: the folded positions with v padded to 128 in the global blocks
    (``CudnnFoldedAttention``), eager and compiled; compiled with v at its own width 64 (cuDNN with head widths up
    to 256 only); and the bias of ``SdpaAttention``, compiled. A variant that cuDNN does not take is recorded with
    its error."""
    cudnn = backbones.build_image_encoder("medsam_vit_b", checkpoint).to(device)
    use_folded(cudnn, cudnn=True)
    record("bfloat16 folded-cudnn b32", runtimes.TorchEncoder(cudnn, device, "bfloat16"), "medsam_vit_b", 32)
    encoder = compiled(cudnn, device)
    for batch in args.gpu_batch_sizes:
        record(f"bfloat16 folded-cudnn compiled b{batch}", encoder, "medsam_vit_b", batch)
    del cudnn, encoder
    stage = runtimes.build_encoder(
        "medsam_vit_b", checkpoint, runtimes.Choice("torch", "bfloat16"), device, CACHE, compile=True
    )  # what the encode stage runs on this GPU (cuDNN's attention where it takes it, the patches as a product)
    torch._dynamo.reset()  # a fresh dynamo, as ``compiled`` gives the other variants
    record("bfloat16 encode stage compiled b32", stage, "medsam_vit_b", 32)
    del stage
    narrow = backbones.build_image_encoder("medsam_vit_b", checkpoint).to(device)
    use_folded(narrow, cudnn=True)
    for module in narrow.modules():
        if isinstance(module, CudnnFoldedAttention):
            module.narrow_values = True
    encoder = compiled(narrow, device)
    record("bfloat16 folded-cudnn-narrow compiled b32", encoder, "medsam_vit_b", 32)
    del narrow, encoder
    bias = backbones.build_image_encoder("medsam_vit_b", checkpoint).to(device)
    for module in bias.modules():
        if type(module) is SdpaAttention:
            module.__class__ = CudnnSdpaAttention
    encoder = compiled(bias, device)
    record("bfloat16 sdpa-cudnn compiled b32", encoder, "medsam_vit_b", 32)


def run_gpu(args: argparse.Namespace, images: torch.Tensor, checkpoints: dict[str, Path]) -> dict | str:
    device = common.gpu_device()
    if device is None:
        log.info("GPU: %s", common.NO_GPU)
        return common.NO_GPU
    tiled = images.repeat(-(-args.gpu_images // len(images)), 1, 1)[: args.gpu_images]
    rows, outputs = [], {}

    def record(label: str, encoder, name: str, batch: int) -> None:
        if args.gpu_only and label not in REFERENCES and not any(part in label for part in args.gpu_only):
            return
        start = time.perf_counter()
        try:
            row, outputs[label] = measure_gpu(encoder, name, tiled, batch, args.repeats)
        except Exception as error:  # a failed variant (a compile, memory) is recorded; the others still run
            log.exception("GPU %s %s failed", name, label)
            rows.append({"backbone": name, "variant": label, "error": f"{error.__class__.__name__}: {error}"[:300]})
            return
        row = {"backbone": name, "variant": label, **row, "seconds_with_warmup": round(time.perf_counter() - start, 1)}
        log.info("GPU %s", row)
        rows.append(row)

    vit = backbones.build_image_encoder("medsam_vit_b", checkpoints["medsam_vit_b"]).to(device)
    record("float32 sdpa", runtimes.TorchEncoder(vit, device, "float32"), "medsam_vit_b", 16)
    for batch in args.gpu_batch_sizes:
        record(f"bfloat16 sdpa b{batch}", runtimes.TorchEncoder(vit, device, "bfloat16"), "medsam_vit_b", batch)
    for module in vit.modules():  # segment-anything's own attention, to see what SDPA gains
        if type(module) is SdpaAttention:
            module.__class__ = Attention
    record("bfloat16 eager-attention b16", runtimes.TorchEncoder(vit, device, "bfloat16"), "medsam_vit_b", 16)
    for module in vit.modules():
        if type(module) is Attention:
            module.__class__ = SdpaAttention
    if not args.skip_compile:
        encoder = compiled(vit, device)
        for batch in args.gpu_batch_sizes:
            record(f"bfloat16 sdpa compiled b{batch}", encoder, "medsam_vit_b", batch)
    folded = backbones.build_image_encoder("medsam_vit_b", checkpoints["medsam_vit_b"]).to(device)
    use_folded(folded)  # relative positions folded into q and k: the flash kernel, no bias
    record("bfloat16 folded b32", runtimes.TorchEncoder(folded, device, "bfloat16"), "medsam_vit_b", 32)
    if not args.skip_compile:
        encoder = compiled(folded, device)
        for batch in args.gpu_batch_sizes:
            record(f"bfloat16 folded compiled b{batch}", encoder, "medsam_vit_b", batch)
    del folded
    if not args.skip_compile:
        run_cudnn_variants(args, record, device, checkpoints["medsam_vit_b"])
    del vit
    lite = backbones.build_image_encoder("lite_medsam", checkpoints["lite_medsam"]).to(device)
    for precision in ("float32", "bfloat16"):
        record(f"{precision} b32", runtimes.TorchEncoder(lite, device, precision), "lite_medsam", 32)
    for row in rows:  # every variant's embeddings against float32's of the same backbone
        reference = outputs.get("float32 sdpa" if row["backbone"] == "medsam_vit_b" else "float32 b32")
        if row["variant"] in outputs and reference is not None:
            difference = max(runtimes.relative_differences(outputs[row["variant"]], reference))
            row["max_relative_difference_to_float32"] = float(f"{difference:.2e}")
    result = {
        "runs": rows,
        "images_per_repeat": len(tiled),
        "device_name": torch.cuda.get_device_name(device),
        "cudnn_version": torch.backends.cudnn.version(),
        "cudnn_takes_folded": cudnn_takes_folded(device),
    }
    pairs = {"medsam_vit_b": (f"bfloat16 sdpa b{args.gpu_batch_sizes[0]}", "float32 sdpa")}
    pairs["lite_medsam"] = ("bfloat16 b32", "float32 b32")
    for name, (bf16, fp32) in pairs.items():
        if bf16 in outputs and fp32 in outputs:
            difference = max(runtimes.relative_differences(outputs[bf16], outputs[fp32]))
            result[f"{name}_bfloat16_max_relative_difference"] = float(f"{difference:.2e}")
    timed = [r for r in rows if r["backbone"] == "medsam_vit_b" and "error" not in r]
    best = max(timed, key=lambda r: r["encoder_images_per_second"])
    result["medsam_vit_b_best"] = {
        k: best[k] for k in ("variant", "encoder_images_per_second", "embed_images_per_second")
    }
    return result


def child(args: argparse.Namespace, data: dict, checkpoints: dict[str, Path]) -> None:
    counts = {"lite_medsam": args.lite_images, "medsam_vit_b": args.vit_images}
    result = run_cpu_group(args.cpu_group, data["images"], checkpoints, counts, args.repeats)
    Path(args.child_out).write_text(json.dumps(result))


def native_code_paths() -> dict[str, str]:
    """The pin variables set to this CPU's own best (``pin_code_paths`` keeps values that are already set)."""
    avx512 = common.machine_info()["cpu_flags"].get("avx512f", False)
    return {
        "ATEN_CPU_CAPABILITY": "avx512" if avx512 else "avx2",
        "MKL_CBWR": "AUTO",
        "ONEDNN_MAX_CPU_ISA": "ALL",
        "NPY_DISABLE_CPU_FEATURES": "",
    }


def run_cpu(args: argparse.Namespace, scratch: Path, vit_checkpoint: Path) -> dict:
    """Each group in a child process with its own environment (the pins are read once, when the libraries load)."""
    groups = {}
    for group in ("pipeline", "native"):
        env = {**os.environ, **(CPU_CODE_PATHS if group == "pipeline" else native_code_paths())}
        out = scratch / f"{group}.json"
        command = common.timing_command("encode", "--cpu-group", group, "--child-out", out, "--hc18", args.hc18)
        command += ["--vit-checkpoint", str(vit_checkpoint), "--repeats", str(args.repeats)]
        command += ["--lite-images", str(args.lite_images), "--vit-images", str(args.vit_images)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        log.info("CPU group %s: %s", group, " ".join(command[1:]))
        subprocess.run(command, env=env, check=True)
        groups[group] = json.loads(out.read_text())
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="HC18 sample (or a save_hc18 .npz)")
    parser.add_argument("--lite-images", type=int, default=4, help="images per CPU LiteMedSAM repeat")
    parser.add_argument("--vit-images", type=int, default=1, help="images per CPU ViT-B repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of every run")
    parser.add_argument("--vit-checkpoint", type=Path, help="real medsam_vit_b.pth (default: seeded random ViT-B)")
    parser.add_argument("--skip-cpu", action="store_true", help="GPU runs only")
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile on the GPU")
    parser.add_argument(
        "--gpu-only", nargs="+", metavar="PART", help="GPU variants whose label holds one of these (float32 kept)"
    )
    parser.add_argument("--gpu-images", type=int, default=128, help="images per GPU repeat (the sample, tiled)")
    parser.add_argument("--gpu-batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--cpu-group", choices=("pipeline", "native"), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args, machine = common.parse_and_start(parser)

    with common.scratch_dir() as scratch:
        scratch = Path(scratch)
        data = common.load_hc18(args.hc18, max(args.lite_images, args.vit_images, 8), 640, scratch)
        weights = {"lite_medsam": checkpoints.resolve_checkpoint("lite_medsam", None)}
        if args.vit_checkpoint:
            weights["medsam_vit_b"] = checkpoints.resolve_checkpoint("medsam_vit_b", str(args.vit_checkpoint))
        else:
            weights["medsam_vit_b"] = common.random_vit_b_checkpoint(scratch)
        if args.cpu_group:
            child(args, data, weights)
            return
        real_vit = args.vit_checkpoint and "random" not in str(args.vit_checkpoint)
        vit_weights = f"real checkpoint {args.vit_checkpoint}" if real_vit else "seeded random ViT-B (seed 0)"
        cpu = "not run: --skip-cpu" if args.skip_cpu else run_cpu(args, scratch, weights["medsam_vit_b"])
        gpu = run_gpu(args, data["images"], weights)

    common.write_result(
        "encode",
        {
            "benchmark": "encode",
            "what": "seconds per image of backbones.embed in each runtime (resize + encoder + float16 copy), "
            "prepared 640 x 640 HC18 images; medians of interleaved repeats",
            "machine": machine,
            "settings": {
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if "child" not in k},
                "vit_b_weights": vit_weights,
                "image_size": 640,
            },
            "data": {"source": data["source"], "ids": data["ids"]},
            "cpu": cpu,
            "gpu": gpu,
        },
    )
