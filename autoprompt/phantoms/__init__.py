"""Synthetic data written in the official layouts, for the offline demo and the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from autoprompt.phantoms.hc18 import write_hc18_phantoms


def _hc18(root: Path, settings: dict) -> None:
    write_hc18_phantoms(root, int(settings["subjects"]), tuple(settings["size"]), int(settings["seed"]),
                        float(settings["second_image"]))


WRITERS: dict[str, Callable[[Path, dict], None]] = {"hc18": _hc18}
