"""Encoder runtimes: OpenVINO's float32 embeddings agree with torch's, the converted graph is cached once per
checkpoint, stores of another runtime are refused, and SDPA attention computes segment-anything's attention."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

from autoprompt.data import embeddings
from autoprompt.data.phantoms.hc18 import write_hc18_phantoms
from autoprompt.errors import InputError
from autoprompt.io import file_sha256
from autoprompt.model import backbones, runtimes
from autoprompt.model.attention import SdpaAttention, use_sdpa
from tests.helpers import RUNTIME_CACHE, SHARED

CPU = torch.device("cpu")
TOLERANCE = 1e-4  # the largest relative difference to torch float32 that a runtime may have and be the default


@pytest.fixture(scope="module")
def hc18_images(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    """Four prepared 640 x 640 HC18 images: real ones from the shared sample when present, phantoms otherwise."""
    from bench.lib import common

    root = SHARED / "data/hc18-sample"
    if not (root / "training_set").is_dir():
        root = tmp_path_factory.mktemp("hc18")
        write_hc18_phantoms(root, subjects=4, size=(800, 540), seed=0, second_image=0.0)
    return common.load_hc18(root, 4, 640, tmp_path_factory.mktemp("scratch"))["images"]


def test_auto_is_openvino_on_a_cpu_and_torch_on_a_gpu() -> None:
    assert runtimes.choose("auto", CPU) == runtimes.Choice("openvino", "float32")
    assert runtimes.choose("auto", torch.device("cuda"), gpu_autocast="bfloat16") == runtimes.Choice(
        "torch", "bfloat16"
    )


@pytest.mark.parametrize(
    ("runtime", "device", "precision", "message"),
    [
        ("tensorrt", "cpu", "float32", r"encode\.runtime is 'tensorrt'; use auto or one of"),
        ("openvino", "cuda", "float32", r"encode\.runtime is openvino, which runs on the CPU, not cuda"),
        ("torch", "cpu", "bfloat16", r"encode\.cpu_precision is 'bfloat16', which the torch runtime does not offer"),
        ("openvino", "cpu", "int4", r"encode\.cpu_precision is 'int4', which the openvino runtime does not offer"),
    ],
)
def test_bad_choices_are_refused(runtime: str, device: str, precision: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        runtimes.choose(runtime, torch.device(device), precision)


def test_openvino_float32_agrees_with_torch_and_is_converted_once(
    hc18_images: torch.Tensor, lite_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = runtimes.build_encoder("lite_medsam", lite_checkpoint, runtimes.Choice("torch", "float32"), CPU, Path())
    choice = runtimes.choose("auto", CPU)
    openvino = runtimes.build_encoder("lite_medsam", lite_checkpoint, choice, CPU, RUNTIME_CACHE)
    x = backbones.encoder_input("lite_medsam", hc18_images)
    with torch.inference_mode():
        exact, approx = reference(x).float(), openvino(x).float()
    assert approx.shape == exact.shape == (4, 256, 64, 64)
    assert max(runtimes.relative_differences(approx, exact)) < TOLERANCE  # float32, before the store's rounding
    stored = runtimes.embed(openvino, "lite_medsam", hc18_images, 3)
    assert stored.dtype == torch.float16 and torch.equal(stored, approx.half())

    folder = runtimes.ir_folder(RUNTIME_CACHE, "lite_medsam", file_sha256(lite_checkpoint))
    assert (folder / runtimes.IR_NAME).is_file() and (folder / "encoder.bin").stat().st_size > 20e6  # float32 weights

    def no_conversion(*args: object) -> None:
        raise AssertionError("the cached graph should have been used")

    monkeypatch.setattr(runtimes, "convert_to_openvino", no_conversion)
    again = runtimes.build_encoder("lite_medsam", lite_checkpoint, choice, CPU, RUNTIME_CACHE)
    assert torch.equal(runtimes.embed(again, "lite_medsam", hc18_images[:1], 1), stored[:1])


def test_bfloat16_is_an_explicit_mode_that_moves_the_embeddings(hc18_images: torch.Tensor, tmp_path: Path) -> None:
    """In a fresh process (the instruction-set cap is read once per process): bfloat16 where the CPU has it, a
    one-line refusal where it has not."""
    np.save(tmp_path / "images.npy", hc18_images[:2].numpy())
    script = f"""
import numpy as np, torch, stages
from autoprompt.errors import InputError
from autoprompt.model import checkpoints, runtimes
images = torch.from_numpy(np.load({str(tmp_path / "images.npy")!r}))
checkpoint = checkpoints.resolve_checkpoint("lite_medsam", None)
outs = {{}}
for precision in ("bfloat16", "float32"):
    choice = runtimes.choose("openvino", torch.device("cpu"), precision)
    try:
        encoder = runtimes.build_encoder("lite_medsam", checkpoint, choice, torch.device("cpu"), {str(RUNTIME_CACHE)!r})
    except InputError as error:
        print("refused:", error)
        raise SystemExit(0)
    outs[precision] = runtimes.embed(encoder, "lite_medsam", images, 2).float()
print("difference:", float((outs["bfloat16"] - outs["float32"]).norm() / outs["float32"].norm()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    line = [row for row in done.stdout.splitlines() if row.startswith(("refused", "difference"))][-1]
    if runtimes.cpu_has_bfloat16():
        difference = float(line.split(":")[1])
        assert 10 * TOLERANCE < difference < 0.2, line  # visibly reduced precision, still the same embeddings
    else:
        assert "no bfloat16 instructions" in line


def test_a_store_of_another_runtime_is_refused(tmp_path: Path) -> None:
    identity = embeddings.Identity("lite_medsam", "c" * 64, "s" * 64, ("a", "b"), "float32", "torch")
    path = tmp_path / "hc18.zarr"
    embeddings.open_for_writing(path, identity, 2)
    other = embeddings.Identity("lite_medsam", "c" * 64, "s" * 64, ("a", "b"), "float32", "openvino")
    with pytest.raises(InputError, match="runtime torch != openvino"):
        embeddings.open_for_writing(path, other, 2)


def test_sdpa_attention_computes_segment_anythings_attention() -> None:
    torch.manual_seed(0)
    attention = Attention(64, num_heads=4, use_rel_pos=True, input_size=(8, 8))
    torch.nn.init.normal_(attention.rel_pos_h)
    torch.nn.init.normal_(attention.rel_pos_w)
    x = torch.randn(2, 8, 8, 64)
    expected = attention(x)
    wrapper = torch.nn.Sequential(attention)
    assert use_sdpa(wrapper) == 1 and isinstance(attention, SdpaAttention)
    torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)
    assert use_sdpa(wrapper) == 0  # already swapped


def test_the_vit_b_encoder_is_built_with_sdpa_attention(vit_b_checkpoint: Path) -> None:
    encoder = backbones.build_image_encoder("medsam_vit_b", vit_b_checkpoint)
    kinds = {type(m) for m in encoder.modules() if isinstance(m, Attention)}
    assert kinds == {SdpaAttention}


def small_vit(img_size: int, embed_dim: int, num_heads: int) -> torch.nn.Module:
    """A seeded segment-anything ViT of two blocks (7 x 7 windows, then global attention) whose relative-position
    tables are random rather than zero, so that they weigh in the attention."""
    from segment_anything.modeling import ImageEncoderViT

    torch.manual_seed(0)
    encoder = ImageEncoderViT(
        img_size=img_size,
        embed_dim=embed_dim,
        depth=2,
        num_heads=num_heads,
        use_rel_pos=True,
        global_attn_indexes=(1,),
        window_size=7,
    ).eval()
    for module in encoder.modules():
        if isinstance(module, Attention):
            torch.nn.init.normal_(module.rel_pos_h, std=0.1)
            torch.nn.init.normal_(module.rel_pos_w, std=0.1)
    return encoder


def test_folded_attention_computes_the_same_encoder() -> None:
    """The relative positions folded into queries and keys (ViT-B's attention on a GPU) keep the encoder's maths,
    in the windowed blocks (7 x 7, widths padded to a multiple of 8) and in the global one (32 x 32)."""
    from autoprompt.model.attention import FoldedAttention, use_folded

    encoder = small_vit(img_size=512, embed_dim=32, num_heads=2)
    x = torch.rand(2, 3, 512, 512)
    with torch.no_grad():
        expected = encoder(x)
        assert use_sdpa(encoder) == 2
        torch.testing.assert_close(encoder(x), expected, rtol=1e-4, atol=1e-4)
        assert use_folded(encoder) == 2
        assert {type(m) for m in encoder.modules() if isinstance(m, Attention)} == {FoldedAttention}
        torch.testing.assert_close(encoder(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("narrow_values", [False, True])
def test_cudnn_folded_attention_computes_the_same_encoder(monkeypatch, narrow_values: bool) -> None:
    """The folding with values narrower than the queries and keys (cuDNN's attention on a Hopper GPU; here the math
    kernel, which takes the same shapes) keeps the encoder's maths, in windowed and global blocks."""
    from torch.nn.attention import SDPBackend

    from autoprompt.model.attention import CudnnFoldedAttention, cudnn_takes_folded, cudnn_value_width, use_folded

    monkeypatch.setattr(CudnnFoldedAttention, "backend", SDPBackend.MATH)
    monkeypatch.setattr(CudnnFoldedAttention, "narrow_values", narrow_values)
    encoder = small_vit(img_size=1024, embed_dim=64, num_heads=1)  # ViT-B's head width and 64 x 64 grid
    x = torch.rand(1, 3, 1024, 1024)
    with torch.no_grad():
        expected = encoder(x)
        assert use_folded(encoder, cudnn=True) == 2
        assert {type(m) for m in encoder.modules() if isinstance(m, Attention)} == {CudnnFoldedAttention}
        torch.testing.assert_close(encoder(x), expected, rtol=1e-4, atol=1e-4)
    assert cudnn_value_width(192, 64) == 128  # ViT-B's global blocks: 64 + 64 + 64 beside cuDNN's 192 / 128 pair
    assert cudnn_value_width(96, 64) == 64  # its 14 x 14 windows
    assert not cudnn_takes_folded(torch.device("cpu"))


def test_matmul_patch_embed_computes_the_same_encoder() -> None:
    """The patch embedding as one matrix product (ViT-B on a GPU) keeps the encoder's maths; a patch embedding whose
    patches overlap is left as a convolution."""
    from segment_anything.modeling import ImageEncoderViT
    from segment_anything.modeling.image_encoder import PatchEmbed

    from autoprompt.model.patch_embed import MatmulPatchEmbed, use_matmul_patch_embed

    torch.manual_seed(0)
    encoder = ImageEncoderViT(img_size=128, embed_dim=32, depth=1, num_heads=2, use_rel_pos=True).eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected = encoder(x)
        assert use_matmul_patch_embed(encoder) == 1
        assert type(encoder.patch_embed) is MatmulPatchEmbed
        torch.testing.assert_close(encoder(x), expected, rtol=1e-4, atol=1e-4)
    overlapping = PatchEmbed(kernel_size=(16, 16), stride=(8, 8), embed_dim=32)
    assert use_matmul_patch_embed(overlapping) == 0
    assert type(overlapping) is PatchEmbed


def test_the_openvino_decoder_computes_the_torch_decoders_masks_and_is_converted_once(
    hc18_images: torch.Tensor, lite_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Float32 through OpenVINO gives torch's logits and IoU for a head's prompts and for box prompts (``predict``'s
    two kinds of call); a second build uses the cached graph."""
    from autoprompt.model.decoding import decode_scored
    from autoprompt.model.head import PromptHead

    encoder = runtimes.build_encoder("lite_medsam", lite_checkpoint, runtimes.choose("auto", CPU), CPU, RUNTIME_CACHE)
    embeddings = runtimes.embed(encoder, "lite_medsam", hc18_images[:3], 3)
    choice = runtimes.Choice("openvino", "float32")
    torch_decoder = runtimes.build_decoder("lite_medsam", lite_checkpoint, runtimes.Choice("torch", "float32"), Path())
    openvino = runtimes.build_decoder("lite_medsam", lite_checkpoint, choice, RUNTIME_CACHE)
    assert isinstance(openvino, runtimes.OpenVinoDecoder) and not isinstance(torch_decoder, runtimes.OpenVinoDecoder)
    torch.manual_seed(0)
    head = PromptHead()
    boxes = torch.tensor([[200, 180, 420, 400], [150, 150, 500, 450], [0, 0, 639, 639]])
    for prompt in ({"head": head}, {"boxes": boxes}):
        exact, exact_iou = decode_scored(torch_decoder, embeddings, 640, 2, CPU, **prompt)
        approx, approx_iou = decode_scored(openvino, embeddings, 640, 2, CPU, **prompt)
        assert approx.shape == exact.shape == (3, 640, 640)
        assert float((approx - exact).abs().max()) < 1e-3, prompt.keys()
        torch.testing.assert_close(approx_iou, exact_iou, atol=1e-4, rtol=1e-4)

    def no_conversion(*args: object) -> None:
        raise AssertionError("the cached graph should have been used")

    monkeypatch.setattr(runtimes, "_convert", no_conversion)
    again = runtimes.build_decoder("lite_medsam", lite_checkpoint, choice, RUNTIME_CACHE)
    torch.testing.assert_close(decode_scored(again, embeddings[:1], 640, 1, CPU, boxes=boxes[:1])[0], approx[:1])
