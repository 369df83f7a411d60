"""Synthetic data written in the official layouts, for the offline demo and the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from autoprompt.data.phantoms.acdc import write_acdc_phantoms
from autoprompt.data.phantoms.camus import write_camus_phantoms
from autoprompt.data.phantoms.hc18 import write_hc18_phantoms
from autoprompt.settings import AcdcPhantoms, CamusPhantoms, Hc18Phantoms


def _hc18(root: Path, section: Hc18Phantoms) -> None:
    write_hc18_phantoms(root, section.subjects, section.size, section.seed, section.second_image)


def _camus(root: Path, section: CamusPhantoms) -> None:
    write_camus_phantoms(root, section.subjects, section.size, section.seed, section.layout, section.split_files)


def _acdc(root: Path, section: AcdcPhantoms) -> None:
    write_acdc_phantoms(
        root,
        section.training,
        section.testing,
        section.size,
        section.slices,
        section.seed,
        section.anatomy,
        section.beyond,
    )


WRITERS: dict[str, Callable[[Path, object], None]] = {"hc18": _hc18, "camus": _camus, "acdc": _acdc}
