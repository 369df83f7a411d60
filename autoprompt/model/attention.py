"""SAM ViT attention through fused kernels, the same maths as segment-anything's ``Attention``.

``SdpaAttention`` (how ViT-B is built): ``F.scaled_dot_product_attention`` with the decomposed relative positions as
an additive bias, so that fused kernels (memory-efficient attention on a GPU, the flash kernel on a CPU) run it
without the eager softmax of a (B * heads) x N x N matrix. On a GPU, ``runtimes.build_encoder`` folds the relative
positions into wider queries and keys instead (``fold_positions``), so that no bias is ever materialised:
``CudnnFoldedAttention`` (cuDNN's attention, on Hopper and later) or ``FoldedAttention`` (the flash kernel). On an
H100 under bfloat16, compiled, batch 32 (bench/results/gpu/encode_h100.json): SDPA with the bias 252 images/s
(full run), folded through flash 283, through cuDNN 294; segment-anything's own attention, eager, 53.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel


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


def fold_positions(attention: Attention, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """B x H x W x C -> q', k' (B x heads x N x D', D' = C / heads + H + W padded to a multiple of 8) and v
    (B x heads x N x C / heads), with scale * q'.k' = scale * q.k + rel_h[key row] + rel_w[key column]:
    q' = [q, rel_h / scale, rel_w / scale] and k' = [k, onehot(key row), onehot(key column)]."""
    size = h, w = x.shape[1:3]
    q, k, v = split_heads(attention, x)
    batch, heads, n, dim = q.shape
    rel_h, rel_w = relative_tables(attention, q, size)
    index = torch.arange(n, device=x.device)
    rows = F.one_hot(index // w, h).to(q.dtype).expand(batch, heads, n, h)
    cols = F.one_hot(index % w, w).to(q.dtype).expand(batch, heads, n, w)
    pad = -(dim + h + w) % 8
    q2 = F.pad(torch.cat([q, rel_h / attention.scale, rel_w / attention.scale], -1), (0, pad))
    k2 = F.pad(torch.cat([k, rows, cols], -1), (0, pad))
    return q2, k2, v


class FoldedAttention(Attention):
    """segment-anything's ViT ``Attention`` with the relative positions folded into the queries and keys
    (``fold_positions``), so that the flash kernel (which takes no bias) computes it; v is zero-padded to the width
    of q' and k', since flash takes one head width.

    B x H x W x C -> B x H x W x C."""

    def value_width(self, qk_width: int, dim: int) -> int:
        """The width v is zero-padded to beside q' and k' of ``qk_width``."""
        return qk_width

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, scale=self.scale)

    def forward(self, x: Tensor) -> Tensor:
        q2, k2, v = fold_positions(self, x)
        dim = v.shape[-1]
        out = self.attend(q2, k2, F.pad(v, (0, self.value_width(q2.shape[-1], dim) - dim)))
        return merge_heads(self, out[..., :dim], x.shape[1:3])


def cudnn_value_width(qk_width: int, dim: int) -> int:
    """The width v is padded to beside q' and k' of ``qk_width`` for cuDNN's attention: its own (``dim``) up to 128;
    128 beside 192, the one wider pair that cuDNN 9.11 and later runs on sm90 (DeepSeek's head shape)."""
    return dim if qk_width <= 128 else max(dim, 128)


def cudnn_takes_folded(device: torch.device) -> bool:
    """Whether cuDNN's attention runs ``CudnnFoldedAttention`` on ``device``: a Hopper or Blackwell GPU (sm90, sm10x)
    and cuDNN 9.11 or later (PyTorch's own conditions for q' and k' of width 192 beside v of width 128)."""
    if device.type != "cuda" or not torch.backends.cudnn.is_available():
        return False
    major, minor = torch.cuda.get_device_capability(device)
    return ((major, minor) == (9, 0) or major == 10) and (torch.backends.cudnn.version() or 0) >= 91100


class CudnnFoldedAttention(FoldedAttention):
    """``FoldedAttention`` through cuDNN's attention, which takes values narrower than the queries and keys: v is
    padded only to ``cudnn_value_width`` (128 in ViT-B's global blocks, where flash needs 192), a sixth less
    attention arithmetic. Needs ``cudnn_takes_folded``; ``narrow_values`` (cuDNN with head widths up to 256)
    keeps v at its own width. ``backend``: the SDPA kernel it asks for (any takes the same maths).

    B x H x W x C -> B x H x W x C."""

    narrow_values = False
    backend = SDPBackend.CUDNN_ATTENTION

    def value_width(self, qk_width: int, dim: int) -> int:
        return dim if self.narrow_values else cudnn_value_width(qk_width, dim)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        with sdpa_kernel(self.backend):
            return super().attend(q, k, v)


def use_folded(encoder: nn.Module, cudnn: bool = False) -> int:
    """Turn every relative-position ``Attention`` of ``encoder`` into ``FoldedAttention`` (``CudnnFoldedAttention``
    with ``cudnn``) in place; the count."""
    swapped = 0
    for module in encoder.modules():
        if isinstance(module, Attention) and module.use_rel_pos:
            module.__class__ = CudnnFoldedAttention if cudnn else FoldedAttention
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
