"""SAM ViT attention through fused kernels, the same maths as segment-anything's ``Attention``.

``SdpaAttention`` (how ViT-B is built): ``F.scaled_dot_product_attention`` with the decomposed relative positions as
an additive bias, so that fused kernels (memory-efficient attention on a GPU, the flash kernel on a CPU) run it
without the eager softmax of a (B * heads) x N x N matrix. ``FoldedAttention`` (what ``runtimes.build_encoder`` uses
on a GPU): the relative positions folded into wider queries and keys, so that the flash kernel runs it and no bias is
ever materialised. On an H200 under bfloat16 (bench/results/gpu/encode.json): segment-anything's attention 58
images/s, SDPA with the bias 100, folded 160, folded and compiled 300.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import Tensor, nn


def split_heads(attention: Attention, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """B x H x W x C -> q, k, v, each B x heads x N x C / heads (N = H * W)."""
    batch, h, w, _ = x.shape
    qkv = attention.qkv(x).reshape(batch, h * w, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return q, k, v


def merge_heads(attention: Attention, out: Tensor, size: tuple[int, int]) -> Tensor:
    """B x heads x N x C / heads -> B x H x W x C, through the output projection."""
    batch = out.shape[0]
    return attention.proj(out.permute(0, 2, 1, 3).reshape(batch, *size, -1))


def relative_tables(attention: Attention, q: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """B x heads x N x c queries of an H x W grid -> rel_h (B x heads x N x H) and rel_w (B x heads x N x W).

    segment-anything's decomposed relative positions without the attention matrix: the bias of query q and key
    (k_h, k_w) is rel_h[q, k_h] + rel_w[q, k_w] = <q, Rh[q_h - k_h]> + <q, Rw[q_w - k_w]>, the unscaled queries."""
    h, w = size
    batch, heads, n, dim = q.shape
    assert n == h * w, f"{n} queries for a {h} x {w} grid"
    r_q = q.reshape(batch, heads, h, w, dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, get_rel_pos(h, h, attention.rel_pos_h).to(q.dtype))
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, get_rel_pos(w, w, attention.rel_pos_w).to(q.dtype))
    return rel_h.reshape(batch, heads, n, h), rel_w.reshape(batch, heads, n, w)


class SdpaAttention(Attention):
    """segment-anything's ViT ``Attention`` (same parameters and state dict), computed by SDPA with the relative
    positions as a B x heads x N x N bias.

    B x H x W x C -> B x H x W x C."""

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[1:3]
        q, k, v = split_heads(self, x)
        bias = None
        if self.use_rel_pos:
            rel_h, rel_w = relative_tables(self, q, size)
            bias = (rel_h[..., :, None] + rel_w[..., None, :]).flatten(-2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return merge_heads(self, out, size)


class FoldedAttention(Attention):
    """segment-anything's ViT ``Attention`` with the relative positions folded into the queries and keys, so that
    the flash kernel (which takes no bias) computes it: q' = [q, rel_h / scale, rel_w / scale] and
    k' = [k, onehot(key row), onehot(key column)] give scale * q'.k' = scale * q.k + rel_h[key row] + rel_w[key col];
    v is zero-padded to the same width, and the width to a multiple of 8.

    B x H x W x C -> B x H x W x C."""

    def forward(self, x: Tensor) -> Tensor:
        size = h, w = x.shape[1:3]
        q, k, v = split_heads(self, x)
        batch, heads, n, dim = q.shape
        rel_h, rel_w = relative_tables(self, q, size)
        index = torch.arange(n, device=x.device)
        rows = F.one_hot(index // w, h).to(q.dtype).expand(batch, heads, n, h)
        cols = F.one_hot(index % w, w).to(q.dtype).expand(batch, heads, n, w)
        pad = -(dim + h + w) % 8
        q2 = F.pad(torch.cat([q, rel_h / self.scale, rel_w / self.scale], -1), (0, pad))
        k2 = F.pad(torch.cat([k, rows, cols], -1), (0, pad))
        v2 = F.pad(v, (0, h + w + pad))
        out = F.scaled_dot_product_attention(q2, k2, v2, scale=self.scale)[..., :dim]
        return merge_heads(self, out, size)


def use_folded(encoder: nn.Module) -> int:
    """Turn every relative-position ``Attention`` of ``encoder`` into ``FoldedAttention`` in place; the count."""
    swapped = 0
    for module in encoder.modules():
        if isinstance(module, Attention) and module.use_rel_pos:
            module.__class__ = FoldedAttention
            swapped += 1
    return swapped


def use_sdpa(encoder: nn.Module) -> int:
    """Turn every segment-anything ``Attention`` in ``encoder`` into ``SdpaAttention`` in place; the count."""
    swapped = 0
    for module in encoder.modules():
        if type(module) is Attention:
            module.__class__ = SdpaAttention
            swapped += 1
    return swapped
