"""segment-anything's ViT patch embedding as one matrix product, the same maths as its strided convolution.

On an H100 under bfloat16, cuDNN ran ViT-B's 16 x 16 convolution of stride 16 with a generic implicit-GEMM kernel at
0.27 ms per image, 8% of the encoder's device time (bench/results/gpu/profile_h100.json). Over non-overlapping
patches the convolution is a product of the flattened patches with the flattened filters, which cuBLAS runs as any
other linear layer. ``runtimes.build_encoder`` uses it on a GPU.
"""

from __future__ import annotations

import torch.nn.functional as F
from segment_anything.modeling.image_encoder import PatchEmbed
from torch import Tensor, nn


class MatmulPatchEmbed(PatchEmbed):
    """``PatchEmbed`` (same parameters and state dict) through ``F.linear`` on the image's k x k patches.

    B x C_in x H x W -> B x H/k x W/k x C."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.proj.weight  # C x C_in x k x k
        channels, in_channels, k, _ = weight.shape
        batch, _, h, w = x.shape
        assert h % k == 0 and w % k == 0, f"a {h} x {w} image is not tiled by {k} x {k} patches"
        patches = x.reshape(batch, in_channels, h // k, k, w // k, k).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(batch, h // k, w // k, in_channels * k * k)
        return F.linear(patches, weight.reshape(channels, -1), self.proj.bias)


def tiles_the_image(embed: PatchEmbed) -> bool:
    """Whether the patches of ``embed`` tile the image: stride equal to the kernel, no padding."""
    return embed.proj.stride == embed.proj.kernel_size and embed.proj.padding == (0, 0)


def use_matmul_patch_embed(encoder: nn.Module) -> int:
    """Turn every ``PatchEmbed`` of ``encoder`` whose patches tile the image into ``MatmulPatchEmbed`` in place; the
    count."""
    swapped = 0
    for module in encoder.modules():
        if type(module) is PatchEmbed and tiles_the_image(module):
            module.__class__ = MatmulPatchEmbed
            swapped += 1
    return swapped
