"""Local pretrained weights for the baselines' timm backbones: read as a state dict, weights only, never fetched."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from autoprompt.errors import InputError


def read_state_dict(path: str | Path, param: str, fix: str) -> dict[str, Tensor]:
    """The name -> tensor dict saved at ``path`` (bare, or under ``state_dict`` / ``model``), loaded with
    ``weights_only=True``. A missing, unreadable or foreign file raises one ``InputError`` naming it; ``param`` is the
    setting that gave the path and ``fix`` says what to give instead."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{param}: {path} not found; {fix}, or null for no pretraining")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: cannot be read as a torch state dict ({reason[:200]}); {fix}") from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path}: not a state dict (name -> tensor); {fix}")
    return state
