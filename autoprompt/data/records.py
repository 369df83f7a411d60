"""The record every dataset reader yields, and the reader interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autoprompt.data.preprocess import Preprocessing
from autoprompt.settings import DatasetPrepare


@dataclass
class Case:
    """One 2D image and its label map, intensities already clipped and rescaled to uint8 [0, 255].

    ``image`` and ``label`` are H x W; ``label`` holds class indices. ``spacing`` is (row, column) in mm.
    ``split`` is set where the dataset fixes it (official test folders), else None. ``box_label``, H x W on the grid
    of ``image``, holds boxes drawn by hand as filled rectangles of their class's value (``label``'s values): where
    given, the index's boxes are those rectangles' tight boxes in the frame, not the label's.
    """

    id: str
    subject: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float]
    source: str
    split: str | None = None
    extra: dict[str, float] = field(default_factory=dict)
    box_label: np.ndarray | None = None

    def __post_init__(self) -> None:
        assert self.image.shape == self.label.shape, (
            f"{self.source}: image {self.image.shape} and label {self.label.shape} differ"
        )
        assert self.box_label is None or self.box_label.shape == self.image.shape, (
            f"{self.source}: image {self.image.shape} and box label {self.box_label.shape} differ"
        )
        assert self.image.dtype == np.uint8, f"{self.source}: image must be uint8, got {self.image.dtype}"


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case (an image and its annotation, or a volume), found without reading them."""

    id: str
    subject: str
    paths: tuple[Path, ...]


def preprocessing(section: DatasetPrepare) -> Preprocessing:
    """The steps of a dataset's ``prepare`` section: clip and rescale, resample volumes in-plane where it sets a
    spacing (ACDC: 1 mm; a user's folder: its ``spacing``, or its own grid), fit to the ``crop`` frame."""
    return Preprocessing(section.crop, section.fit, section.spacing_mm)


@dataclass(frozen=True)
class Reader:
    """A dataset layout: ``find`` lists its cases cheaply, ``load`` reads one (a volume may give many slices); both
    take the dataset's ``prepare`` section. ``classes`` maps a class name to its label value in ``Case.label``."""

    name: str
    classes: dict[str, int]
    find: Callable[[Path, DatasetPrepare], list[CaseFiles]]
    load: Callable[[CaseFiles, DatasetPrepare], list[Case]]
