"""The record every dataset reader yields, and the reader interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Case:
    """One 2D image and its label map, intensities already clipped and rescaled to uint8 [0, 255].

    ``image`` and ``label`` are H x W; ``label`` holds class indices. ``spacing`` is (row, column) in mm.
    ``split`` is set where the dataset fixes it (official test folders), else None.
    """

    id: str
    subject: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float]
    source: str
    split: str | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.image.shape == self.label.shape, (
            f"{self.source}: image {self.image.shape} and label {self.label.shape} differ"
        )
        assert self.image.dtype == np.uint8, f"{self.source}: image must be uint8, got {self.image.dtype}"


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case (an image and its annotation, or a volume), found without reading them."""

    id: str
    subject: str
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class Reader:
    """A dataset layout: ``find`` lists its cases cheaply, ``load`` reads one (a volume may give many slices).

    ``classes`` maps a class name to its label value in ``Case.label``.
    """

    name: str
    classes: dict[str, int]
    find: Callable[[Path, dict], list[CaseFiles]]
    load: Callable[[CaseFiles, dict], list[Case]]
