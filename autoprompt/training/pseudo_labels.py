"""The follow-up's pseudo-labels: the frozen backbone's own mask when prompted with an image's tight box.

They need only the boxes and the cached embeddings (no encoder). A run keeps its inputs beside its weights
(``inputs.npz``: ids, boxes and, when its recipe uses them, the pseudo-label masks), and their hashes are part of
the run's fingerprint, so corrected boxes train the run again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from autoprompt.model.decoding import PromptDecoder, decode

INPUTS = "inputs.npz"
THRESHOLD = 0.5


def box_prompted_masks(
    decoder: PromptDecoder, embeddings: Tensor, boxes: Tensor, label_size: int, batch_size: int, device: torch.device
) -> Tensor:
    """N x 256 x 64 x 64 embeddings and N x 4 tight boxes (label frame) -> N x S x S boolean masks."""
    return decode(decoder, embeddings, label_size, batch_size, device, boxes=boxes) > THRESHOLD


def array_sha256(array: np.ndarray | Tensor) -> str:
    """Hash of an array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array.numpy() if isinstance(array, Tensor) else array)
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.data)
    return digest.hexdigest()


def save_inputs(folder: Path, ids: list[str], boxes: Tensor, pseudo: Tensor | None) -> None:
    """``inputs.npz`` in a run folder: its ids, N x 4 boxes and N x S x S pseudo-labels (bit-packed) if any."""
    arrays = {"ids": np.asarray(ids), "boxes": boxes.numpy()}
    if pseudo is not None:
        arrays["pseudo_labels"] = np.packbits(pseudo.numpy(), axis=-1)
        arrays["pseudo_shape"] = np.asarray(pseudo.shape)
    np.savez_compressed(Path(folder) / INPUTS, **arrays)
