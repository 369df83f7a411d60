"""The record every dataset reader yields, and the reader interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autoprompt.data.preprocess import Preprocessing
from autoprompt.errors import InputError


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


def picture_preprocessing(settings: dict) -> Preprocessing:
    """2D images: clipped, rescaled and fitted to the frame, never resampled."""
    return Preprocessing(int(settings["crop"]), str(settings.get("fit", "crop")))


def volume_preprocessing(settings: dict) -> Preprocessing:
    """Slices of volumes resampled in-plane to ``spacing`` mm (1 by default) before the fit."""
    return Preprocessing(int(settings["crop"]), str(settings.get("fit", "crop")), float(settings.get("spacing", 1.0)))


def folder_preprocessing(settings: dict) -> Preprocessing:
    """Users' own images and volumes: resampled in-plane to ``spacing`` mm where it is set, else kept on their grid."""
    spacing = settings.get("spacing")
    if spacing is not None and (not isinstance(spacing, (int, float)) or spacing <= 0):
        raise InputError(f"params.yaml: spacing is {spacing!r}; give in-plane mm > 0, or null to keep the grid")
    return Preprocessing(
        int(settings["crop"]), str(settings.get("fit", "crop")), None if spacing is None else float(spacing)
    )


@dataclass(frozen=True)
class Reader:
    """A dataset layout: ``find`` lists its cases cheaply, ``load`` reads one (a volume may give many slices).

    ``classes`` maps a class name to its label value in ``Case.label``. ``preprocessing`` gives, from the dataset's
    settings, the steps ``load`` and ``prepare`` apply, which ``predict`` replays on new images.
    """

    name: str
    classes: dict[str, int]
    find: Callable[[Path, dict], list[CaseFiles]]
    load: Callable[[CaseFiles, dict], list[Case]]
    preprocessing: Callable[[dict], Preprocessing] = picture_preprocessing
