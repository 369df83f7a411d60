"""Encoder runtimes: one backbone's frozen image encoder, run by torch (CPU or GPU) or by OpenVINO (CPU).

``build_encoder`` returns an ``ImageEncoder``: B x 3 x S x S float32 inputs in [0, 1] (``backbones.encoder_input``,
computed on ``encoder.device``) -> B x 256 x 64 x 64 embeddings (torch: on its device, in its compute dtype;
OpenVINO: float32 on the CPU). OpenVINO runs a graph converted once per backbone, checkpoint sha256 and OpenVINO
release, and cached as ``<cache_dir>/<backbone>-<sha256[:16]>-openvino-<release>/`` (float32 weights); nothing is
fetched. Its float32 embeddings agree with torch's within 1e-4 relative (``bench/timings/encode.py`` measures it,
``tests/test_runtimes.py`` checks it); ``bfloat16`` is the reduced-precision mode, an explicit choice (README:
encoder runtimes).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from autoprompt.errors import InputError
from autoprompt.io import file_sha256
from autoprompt.model import backbones
from autoprompt.model.attention import cudnn_takes_folded, use_folded
from autoprompt.model.decoding import PromptDecoder
from autoprompt.model.patch_embed import use_matmul_patch_embed

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "openvino")
OPENVINO_PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}
IR_NAME = "encoder.xml"
DECODER_IR_NAME = "decoder.xml"


class ImageEncoder(Protocol):
    """B x 3 x S x S float32 on ``device`` -> B x 256 x 64 x 64 floats (on ``device`` or the CPU)."""

    device: torch.device
    runtime: str
    precision: str

    def __call__(self, x: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class Choice:
    """The runtime and compute precision of an encoder: both are part of an embedding store's identity."""

    runtime: str
    precision: str


def default_cache_dir() -> Path:
    """Where ``autoprompt predict`` keeps converted encoders: ``$XDG_CACHE_HOME/autoprompt`` (``~/.cache/autoprompt``).
    The pipeline's stages use ``encode.runtime_cache`` in params.yaml instead."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autoprompt"


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def cpu_has_bfloat16() -> bool:
    """Whether OpenVINO can run bfloat16 on this CPU. It starts OpenVINO's CPU plugin, which reads the instruction-set
    cap once: in a process that will compile bfloat16, call it only after ``_lift_isa_pin_for_bf16``."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose(
    runtime: str,
    device: torch.device,
    cpu_precision: str = "float32",
    gpu_autocast: str = "",
    key: Callable[[str], str] = "encode.{}".format,
) -> Choice:
    """Resolve ``runtime`` (``auto``: torch on a GPU, OpenVINO on a CPU when installed, else torch) and the
    precision it computes in: ``gpu_autocast`` on a GPU (empty: float32), ``cpu_precision`` on a CPU. ``key(name)``
    names a setting in messages (``EncodeSettings.key``, or a command's option)."""
    if runtime == "auto":
        runtime = "torch" if device.type != "cpu" or not openvino_available() else "openvino"
    if runtime not in RUNTIMES:
        raise InputError(f"{key('runtime')} is {runtime!r}; use auto or one of {list(RUNTIMES)}")
    if runtime == "openvino" and device.type != "cpu":
        raise InputError(f"{key('runtime')} is openvino, which runs on the CPU, not {device}; use auto or torch")
    if runtime == "openvino" and not openvino_available():
        raise InputError(
            f"{key('runtime')} is openvino, but the openvino package is not installed; pip install openvino"
        )
    if device.type != "cpu":
        return Choice(runtime, gpu_autocast or "float32")
    allowed = OPENVINO_PRECISIONS if runtime == "openvino" else ("float32",)
    if cpu_precision not in allowed:
        raise InputError(
            f"{key('cpu_precision')} is {cpu_precision!r}, which the {runtime} runtime does not offer on a CPU; "
            f"use one of {list(allowed)}"
        )
    return Choice(runtime, cpu_precision)


class TorchEncoder:
    """The encoder module on ``device``, under ``torch.autocast`` when ``precision`` is not float32.

    ``compile`` (a GPU only): the module through ``torch.compile`` (ViT-B 1.9x faster on an H200 under bfloat16 with
    folded attention, about 35 s of compilation: bench/results/gpu/encode.json)."""

    runtime = "torch"

    def __init__(
        self, module: nn.Module, device: torch.device, precision: str = "float32", compile: bool = False
    ) -> None:
        module = module.to(device)
        if compile and device.type == "cuda":
            module = torch.compile(module)
        self.module, self.device, self.precision = module, device, precision
        self.autocast = None if precision == "float32" else getattr(torch, precision)

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> Tensor:
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            return self.module(x.to(self.device))


def ir_folder(cache_dir: Path, backbone: str, checkpoint_sha256: str) -> Path:
    """One converted graph per backbone, checkpoint and OpenVINO release."""
    from openvino import get_version

    release = get_version().split("-")[0]
    return Path(cache_dir) / f"{backbone}-{checkpoint_sha256[:16]}-openvino-{release}"


def convert_to_openvino(module: nn.Module, backbone: str, folder: Path) -> Path:
    """Convert the encoder for one 1 x 3 x S x S image into ``folder`` (``build_encoder`` calls it only when
    ``folder`` holds no converted graph)."""
    size = backbones.get_spec(backbone).input_size
    log.info("converting the %s encoder for OpenVINO into %s (once per checkpoint)", backbone, folder)
    return _convert(module, (torch.zeros(1, 3, size, size),), folder, IR_NAME)


def _convert(module: nn.Module, example: tuple[Tensor, ...], folder: Path, name: str) -> Path:
    """``module`` traced on ``example`` (one image per request: the traced shapes are kept) and saved as
    ``folder/name``, written whole: a temporary folder renamed."""
    import openvino as ov

    tmp = folder.with_name(f".{folder.name}.new-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with warnings.catch_warnings():  # the tracer's notes on shapes it fixes (one image per request, by design), and
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # torch's on its own tracing API, which OpenVINO uses
        warnings.simplefilter("ignore", FutureWarning)
        graph = ov.convert_model(module.eval(), example_input=example[0] if len(example) == 1 else example)
    graph.reshape({graph.inputs[k]: ov.PartialShape(list(x.shape)) for k, x in enumerate(example)})
    ov.save_model(graph, tmp / name, compress_to_fp16=False)
    try:
        tmp.rename(folder)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / name


def _lift_isa_pin_for_bf16() -> None:
    """bfloat16 needs the CPU's own instructions: OpenVINO's oneDNN honours the AVX2 cap of ``stages/__init__.py``,
    read at its first compile, so the cap is lifted here, before it (float32 keeps it, for reproducible numbers)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2":
        log.info("bfloat16: OpenVINO may use every instruction set of this CPU (ONEDNN_MAX_CPU_ISA lifted)")
        os.environ["ONEDNN_MAX_CPU_ISA"] = "ALL"


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip() and not line.startswith("Exception from")]
    return (lines[0] if lines else error.__class__.__name__)[:160]


def _compile(ir: Path, precision: str, threads: int, what: str):
    """The converted graph ``ir`` compiled for the CPU at ``precision`` on ``threads`` threads, latency first."""
    import openvino as ov

    if precision == "bfloat16":
        _lift_isa_pin_for_bf16()  # before the CPU plugin's first use
    core = ov.Core()
    if precision == "bfloat16" and not cpu_has_bfloat16():
        raise InputError("cpu_precision is bfloat16, but this CPU has no bfloat16 instructions; use float32")
    config = {
        "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],  # the CPU's default may be bf16: never implicit
        "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": "LATENCY",
    }
    try:
        return core.compile_model(core.read_model(ir), "CPU", config)
    except RuntimeError as error:
        raise InputError(
            f"{ir}: OpenVINO could not compile the {what} at {precision} ({_first_line(error)}); "
            "delete that folder to convert it again, or use the torch runtime"
        ) from error


class OpenVinoEncoder:
    """The converted encoder compiled for the CPU at ``precision``, one image per inference request."""

    runtime = "openvino"
    device = torch.device("cpu")

    def __init__(self, ir: Path, precision: str, threads: int) -> None:
        self.compiled = _compile(ir, precision, threads, "encoder")
        self.request = self.compiled.create_infer_request()
        self.precision = precision

    def __call__(self, x: Tensor) -> Tensor:
        images = x.detach().cpu().numpy().astype(np.float32, copy=False)
        out = [self.request.infer({0: images[i : i + 1]})[0].copy() for i in range(len(images))]
        return torch.from_numpy(np.concatenate(out))


class _Scored(nn.Module):
    """``PromptDecoder.scored`` as a module's forward, for tracing: (embeddings, sparse, dense) -> (logits, IoU)."""

    def __init__(self, decoder: PromptDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, embeddings: Tensor, sparse: Tensor, dense: Tensor) -> tuple[Tensor, Tensor]:
        return self.decoder.scored(embeddings, sparse, dense)


class OpenVinoDecoder(PromptDecoder):
    """The frozen decoder with its two-way transformer, upscaling and mask and IoU heads run by OpenVINO at
    ``precision``, one image per inference request; the prompt encoder (boxes to tokens) stays torch's.

    ``scored`` takes 1 x 2 x 256 sparse prompts per image (a head's two tokens, or a box's two corners), the single
    mask, no semantic prompt: ``predict``'s calls. Any other call runs the torch decoder it was built from.
    ``bench/timings/predict.py`` measures it against torch's decoder under bfloat16 autocast."""

    runtime = "openvino"

    def __init__(self, decoder: PromptDecoder, ir: Path, precision: str, threads: int) -> None:
        super().__init__(decoder.prompt_encoder, decoder.mask_decoder, decoder.input_size)
        self.compiled = _compile(ir, precision, threads, "decoder")
        self.request = self.compiled.create_infer_request()
        self.precision = precision

    def scored(
        self, embeddings: Tensor, sparse: Tensor, dense: Tensor, semantic: Tensor | None = None, multimask: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``PromptDecoder.scored``: B x 1 x 256 x 256 float32 logits and B predicted IoUs."""
        if semantic is not None or multimask or sparse.shape[1:] != (2, backbones.EMBED_DIM):
            return super().scored(embeddings, sparse, dense, semantic, multimask)
        assert dense.shape == embeddings.shape, f"dense {tuple(dense.shape)} != embeddings {tuple(embeddings.shape)}"
        inputs = [x.detach().float().cpu().numpy() for x in (embeddings, sparse, dense)]
        logits, ious = [], []
        for i in range(len(embeddings)):
            out = self.request.infer({k: x[i : i + 1] for k, x in enumerate(inputs)})
            logits.append(out[0].copy())
            ious.append(out[1].copy())
        return torch.from_numpy(np.concatenate(logits)), torch.from_numpy(np.concatenate(ious))


def relative_differences(approx: Tensor, exact: Tensor) -> list[float]:
    """||approx - exact|| / ||exact|| per image (N x ... tensors, compared in float32)."""
    approx, exact = approx.float().flatten(1), exact.float().flatten(1)
    return ((approx - exact).norm(dim=1) / exact.norm(dim=1)).tolist()


def build_encoder(
    backbone: str,
    checkpoint: Path,
    choice: Choice,
    device: torch.device,
    cache_dir: Path,
    state: dict[str, Tensor] | None = None,
    compile: bool = False,
) -> ImageEncoder:
    """The image encoder of ``backbone`` with ``checkpoint``'s weights, run as ``choice`` says (``compile``: see
    ``TorchEncoder``). On a GPU, ViT-B's relative positions are folded into its queries and keys: through cuDNN's
    attention where it takes them (``cudnn_takes_folded``: an H100 or H200 with cuDNN 9.11 or later), through the
    flash kernel otherwise; and its patch embedding is one matrix product. Compiled on an H100, batch 32
    (bench/results/gpu/encode_h100_stage.json): 316 images/s, against 296 with cuDNN's patch convolution."""
    if choice.runtime == "torch":
        module = backbones.build_image_encoder(backbone, checkpoint, state)
        if device.type == "cuda":
            use_folded(module, cudnn=cudnn_takes_folded(device))
            use_matmul_patch_embed(module)  # the patch convolution as a product: cuDNN's kernel for it is slow
        return TorchEncoder(module, device, choice.precision, compile)
    folder = ir_folder(cache_dir, backbone, file_sha256(checkpoint))
    ir = folder / IR_NAME
    if not ir.is_file():
        ir = convert_to_openvino(backbones.build_image_encoder(backbone, checkpoint, state), backbone, folder)
    return OpenVinoEncoder(ir, choice.precision, torch.get_num_threads())


def build_decoder(
    backbone: str,
    checkpoint: Path,
    choice: Choice,
    cache_dir: Path,
    state: dict[str, Tensor] | None = None,
) -> PromptDecoder:
    """The frozen prompt decoder of ``backbone`` on the CPU: torch's module, or where ``choice`` is OpenVINO its
    transformer and heads through OpenVINO at ``choice.precision`` (``OpenVinoDecoder``; ``predict`` asks for it on
    the fast path), converted once per backbone, checkpoint and OpenVINO release beside the encoder
    (``<encoder's folder>-decoder/``)."""
    decoder = backbones.build_prompt_decoder(backbone, checkpoint, state)
    if choice.runtime != "openvino":
        return decoder
    folder = ir_folder(cache_dir, backbone, file_sha256(checkpoint))
    folder = folder.with_name(folder.name + "-decoder")
    ir = folder / DECODER_IR_NAME
    if not ir.is_file():
        log.info("converting the %s decoder for OpenVINO into %s (once per checkpoint)", backbone, folder)
        grid, dim = backbones.EMBED_GRID, backbones.EMBED_DIM
        example = (torch.zeros(1, dim, grid, grid), torch.zeros(1, 2, dim), torch.zeros(1, dim, grid, grid))
        ir = _convert(_Scored(decoder), example, folder, DECODER_IR_NAME)
    return OpenVinoDecoder(decoder, ir, choice.precision, torch.get_num_threads())


@torch.inference_mode()
def embed(encoder: ImageEncoder, name: str, images: Tensor, batch_size: int) -> Tensor:
    """N x S x S uint8 prepared images -> N x 256 x 64 x 64 float16 embeddings, on the CPU.

    ``encoder`` (``build_encoder``) runs on its own device, at its own precision, in its own runtime; ``name`` is its
    backbone, whose input transform (``backbones.encoder_input``) the images go through first."""
    out = []
    for start in range(0, len(images), batch_size):
        y = encoder(backbones.encoder_input(name, images[start : start + batch_size].to(encoder.device)))
        assert y.shape[1:] == (backbones.EMBED_DIM, backbones.EMBED_GRID, backbones.EMBED_GRID), (
            f"{name} gave embeddings {tuple(y.shape)}"
        )
        y = y.to(torch.float16)  # rounded on the device: half the bytes to copy
        if y.is_cuda:  # into pinned memory without waiting: the next batch is queued meanwhile
            host = torch.empty(y.shape, dtype=y.dtype, pin_memory=True)
            out.append(host.copy_(y, non_blocking=True))
        else:
            out.append(y)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize(encoder.device)
    return torch.cat(out)
