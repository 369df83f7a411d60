"""Synthetic data written in the official layouts, for the offline demo and the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from autoprompt.data.phantoms.acdc import write_acdc_phantoms
from autoprompt.data.phantoms.camus import write_camus_phantoms
from autoprompt.data.phantoms.hc18 import write_hc18_phantoms


def _hc18(root: Path, settings: dict) -> None:
    write_hc18_phantoms(
        root, int(settings["subjects"]), tuple(settings["size"]), int(settings["seed"]), float(settings["second_image"])
    )


def _camus(root: Path, settings: dict) -> None:
    write_camus_phantoms(
        root,
        int(settings["subjects"]),
        tuple(settings["size"]),
        int(settings["seed"]),
        str(settings.get("layout", "nifti")),
        bool(settings.get("split_files", False)),
    )


def _acdc(root: Path, settings: dict) -> None:
    write_acdc_phantoms(
        root,
        int(settings["training"]),
        int(settings["testing"]),
        tuple(settings["size"]),
        tuple(settings["slices"]),
        int(settings["seed"]),
    )


WRITERS: dict[str, Callable[[Path, dict], None]] = {"hc18": _hc18, "camus": _camus, "acdc": _acdc}
