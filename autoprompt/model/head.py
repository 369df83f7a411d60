"""The prompt module: a frozen image embedding in, SAM prompt embeddings out (2,433,984 parameters)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EMBED_DIM = 256
GRID = 64


class PromptHead(nn.Module):
    """Image embedding B x 256 x 64 x 64 -> (sparse B x 2 x 256, dense B x 256 x 64 x 64).

    A shared 1x1 conv (256 -> 128) feeds a 3x3 conv to the dense embedding, and a 1x1 conv (128 -> 64),
    8 x 8 max-pool and linear layer (4096 -> 512) to two sparse tokens. Every conv is followed by ReLU.
    """

    def __init__(self, hidden: int = 128, sparse_channels: int = 64, pool: int = 8, tokens: int = 2) -> None:
        super().__init__()
        self.tokens = tokens
        self.reduce = nn.Conv2d(EMBED_DIM, hidden, kernel_size=1)
        self.dense = nn.Conv2d(hidden, EMBED_DIM, kernel_size=3, padding=1)
        self.sparse_reduce = nn.Conv2d(hidden, sparse_channels, kernel_size=1)
        self.pool = nn.MaxPool2d(pool)
        self.sparse = nn.Linear(sparse_channels * (GRID // pool) ** 2, tokens * EMBED_DIM)

    def forward(self, embeddings: Tensor) -> tuple[Tensor, Tensor]:
        assert embeddings.shape[1:] == (EMBED_DIM, GRID, GRID), (
            f"expected B x {EMBED_DIM} x {GRID} x {GRID} embeddings, got {tuple(embeddings.shape)}"
        )
        shared = F.relu(self.reduce(embeddings))
        dense = F.relu(self.dense(shared))
        pooled = self.pool(F.relu(self.sparse_reduce(shared)))
        sparse = self.sparse(pooled.flatten(1)).view(-1, self.tokens, EMBED_DIM)
        return sparse, dense

    @torch.no_grad()
    def start_from_prompt(self, sparse: Tensor, dense: Tensor, scale: float) -> None:
        """Start near a given prompt: outputs ~= (``sparse`` 2 x 256, ``relu(dense)`` 256), whatever the image.

        The output layers' weights are scaled down by ``scale`` and their biases set to the prompt, so the
        first predictions of the frozen decoder are those of that prompt rather than saturated logits. The
        dense ReLU keeps only the non-negative part of ``dense``.
        """
        assert sparse.shape == (self.tokens, EMBED_DIM), f"sparse prompt {tuple(sparse.shape)}"
        assert dense.shape == (EMBED_DIM,), f"dense prompt {tuple(dense.shape)}"
        for layer in (self.sparse, self.dense):
            layer.weight.mul_(scale)
        self.sparse.bias.copy_(sparse.reshape(-1))
        self.dense.bias.copy_(dense.clamp(min=0.0))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
