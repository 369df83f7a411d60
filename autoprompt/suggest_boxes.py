"""Which images of a folder to box, before any box is drawn (``autoprompt suggest``).

``suggest_folder`` reads every image of ``DATA/images`` (2D files, NIfTI and other volumes, DICOM series: every slice
of a volume), prepares each slice exactly as ``autoprompt train`` does (``images.frame_slices`` under the folder
section's clip, spacing, crop and fit), encodes them all, and chooses ``n`` to box on their pooled
embeddings (``training.suggest.typical``: the central image of each of ``n`` k-means clusters, never two
near-duplicates, volume slices spread by their position in the volume; ``--method kcenter`` and ``cover`` choose
otherwise). It writes, in ``OUT``:

- ``boxes.csv``: a template listing the chosen images (and slices) in the order chosen, corners empty: the first rows
  stand for the largest shares of the folder, so a user who boxes fewer may delete the last rows;
- ``label-studio/``: ``tasks.json`` to import, ``config.xml`` (the labeling interface) and ``images/``, a PNG of each
  chosen slice on its own pixel grid; the export of the boxes drawn there is read by ``autoprompt train --boxes``
  (``data.box_templates``).

What is reused: the embeddings are kept in the work folder (``own_data.suggest_store``: ``WORK/suggest/``, by default
``DATA.work``, which is ``train``'s work folder for ``train DATA -o DATA.pt``). A second ``suggest`` encodes only the
slices whose prepared pixels changed or are new (the rest are copied, as ``train`` copies its own), and ``train``
copies from this store every boxed image whose pixels it holds (from its own work folder or from ``DATA.work``), so
no image is encoded twice by the same encoder (``suggest`` and ``train`` use the same one: ``own_data.encode_for``).
The images themselves are read again on each call (reading is cheap beside the encoder).

Where the model is unsure (``suggest_next``, ``autoprompt suggest --model MODEL``): once a model is trained, it
segments every unboxed image and slice as ``predict`` does, each judged as the second round judges it
(``inference.pseudo_boxes.doubts``): the slices whose runs disagree, or whose box breaks its volume's sequence, are in
doubt. ``n`` of them are listed, chosen by k-center from the boxed slices (``training.suggest.box_next``) so that two
never show one failure, and the rest of the folder fills the list where fewer are in doubt. The templates are the
same; ``OUT`` defaults to ``DATA/next``, since ``DATA/boxes.csv`` holds the boxes. The list is for review: on real
HC18, boxing what it lists did worse than boxing as many images at random (``bench/results/draws_next_authors.json``,
``draws_next.json``; docs/own-data.md).

Every output is written whole (a temporary, then renamed), and only over what ``suggest`` wrote: a ``boxes.csv``
with a box in it, or a ``label-studio`` folder without its mark, is the user's and is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import cv2
import numpy as np
import zarr

from autoprompt.data import embeddings
from autoprompt.data.box_templates import Wanted, csv_template, is_template, studio_config, studio_task
from autoprompt.data.boxes import read_boxes
from autoprompt.data.folder import BOXES, IMAGES
from autoprompt.data.images import as_stack, intensities, read_image, to_uint8
from autoprompt.data.records import preprocessing
from autoprompt.device import EXACT_NUMERICS, Numerics
from autoprompt.errors import InputError
from autoprompt.inference.model import load_model
from autoprompt.inference.pseudo_boxes import SAID, doubts
from autoprompt.io import atomic_path, write_text
from autoprompt.outputs import clear_stale, hold
from autoprompt.own_data import (
    embedding_reader,
    encode_folder,
    encode_for,
    folder_inputs,
    folder_section,
    judging_predictor,
    judging_rule,
    read_folder,
)
from autoprompt.settings import FolderPrepare, Settings
from autoprompt.training import suggest

log = logging.getLogger(__name__)

NEXT = "next"  # suggest --model's default OUT in DATA: DATA/boxes.csv holds the boxes drawn so far
STUDIO = "label-studio"  # OUT's folder of the Label Studio project
STUDIO_MARK = ".autoprompt-suggest"  # in STUDIO: the folder is suggest's own, and may be replaced
LOCAL_FILES = "/data/local-files/?d="  # Label Studio's URL of a file under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT


@dataclass(frozen=True)
class Suggestion:
    """What ``suggest_folder`` chose: the images (slices) to box in the order chosen, out of ``candidates``; the
    files it wrote."""

    picks: list[Wanted]
    candidates: int
    written: list[Path]
    doubtful: int | None = None  # suggest_next: the unboxed images and slices the model is unsure of


def pooled_features(store: Path) -> np.ndarray:
    """N x 256: the store's embeddings pooled (``embeddings.pooled``), kept beside it for the store's next reader."""
    group = zarr.open_group(store, mode="r")
    cache = store.with_name("pooled.npz")
    source = json.dumps([group.attrs.get(key) for key in embeddings.IDENTITY_KEYS])  # what the embeddings are
    if cache.exists():
        kept = np.load(cache)
        if str(kept["source"]) == source:
            return kept["features"]
    features = embeddings.pooled(group["embeddings"], np.arange(group["embeddings"].shape[0]))
    with atomic_path(cache) as tmp, tmp.open("wb") as handle:
        np.savez(handle, features=features, source=np.array(source))
    return features


def pick(
    features: np.ndarray,
    positions: np.ndarray,
    volumes: bool,
    n: int,
    min_distance: float = suggest.DUPLICATE,
    method: str = "typical",
) -> list[int]:
    """``n`` rows to box (fewer where the rest are near-duplicates): each k-means cluster's most central row of the
    pooled ``features``, greedy k-center, or greedy maximum coverage (``method``: ``training.suggest.METHODS``),
    with the slices' ``positions`` as a feature where the folder has ``volumes`` (``training.suggest``)."""
    spread = suggest.with_positions(features, positions) if volumes else features
    if method == "typical":
        return suggest.typical(spread, n, min_distance=min_distance, duplicates=features)
    if method == "cover":
        return suggest.cover(spread, n, min_distance=min_distance, duplicates=features)
    return suggest.choose(spread, n, min_distance=min_distance, duplicates=features)


def render(images: Path, picks: list[Wanted], section: FolderPrepare) -> dict[str, np.ndarray]:
    """Id -> H x W uint8 of each pick: its slice clipped and rescaled as prepared, on the file's own pixel grid
    (no resampling, no fit), so that a box drawn on it is in the file's pixels."""
    steps = dataclasses.replace(preprocessing(section), spacing=None)
    out: dict[str, np.ndarray] = {}
    for file in dict.fromkeys(w.file for w in picks):
        grid = to_uint8(intensities(as_stack(read_image(images / file)).stack, steps))
        out.update({w.id: grid[w.slice or 0] for w in picks if w.file == file})
    return out


def check_outputs(out: Path, studio_root: Path | None = None) -> None:
    """Refuse, before any work, to write over a ``boxes.csv`` that is not a template or a ``label-studio`` folder that
    ``suggest`` did not write, and a ``studio_root`` (Label Studio's document root) that does not hold ``out``."""
    if studio_root is not None and not (out.resolve() / STUDIO).is_relative_to(Path(studio_root).resolve()):
        raise InputError(
            f"--studio-root {studio_root}: Label Studio serves local files only below its root, and {out / STUDIO} "
            "is not below it; give a root that holds -o's folder"
        )
    boxes, studio = out / BOXES, out / STUDIO
    if boxes.is_dir() or (boxes.exists() and not is_template(boxes)):
        raise InputError(
            f"{boxes}: holds boxes (not an empty template), so it is not replaced; give another -o, or move it away"
        )
    if studio.exists() and not (studio / STUDIO_MARK).exists():
        raise InputError(f"{studio}: not written by autoprompt suggest, so it is not replaced; give another -o")


def write_outputs(
    out: Path, picks: list[Wanted], pictures: dict[str, np.ndarray], label: str, root: Path
) -> list[Path]:
    """``OUT/label-studio/`` and ``OUT/boxes.csv`` (see the module's docstring), each written whole; the tasks' URLs
    name the PNGs relative to ``root``, Label Studio's document root of local files."""
    studio, boxes = out / STUDIO, out / BOXES
    tasks = []
    with atomic_path(studio) as tmp:
        (tmp / "images").mkdir(parents=True)
        for w in picks:
            png = tmp / "images" / f"{w.id}.png"
            if not cv2.imwrite(str(png), pictures[w.id]):
                raise OSError(f"{png}: not written; is the disk full?")
            relative = os.path.relpath(studio / "images" / png.name, root)
            tasks.append(studio_task(LOCAL_FILES + quote(Path(relative).as_posix()), w))
        (tmp / "tasks.json").write_text(json.dumps(tasks, indent=1) + "\n")
        (tmp / "config.xml").write_text(studio_config(label))
        (tmp / STUDIO_MARK).write_text("written by autoprompt suggest; replaced by its next call\n")
    write_text(boxes, csv_template(picks))
    return [boxes, studio / "tasks.json", studio / "config.xml", studio / "images"]


class EncodedFolder(NamedTuple):
    """Every image (volume slice) of a folder, encoded: ``read_folder``'s list and positions, the embeddings' store
    and their pooled features (``N x 256``)."""

    wanted: list[Wanted]
    positions: np.ndarray
    store: Path
    features: np.ndarray


@contextmanager
def encoded_folder(
    data: Path,
    out: Path,
    work: Path,
    settings: Settings,
    studio_root: Path | None,
    check: Callable[[list[Wanted]], None] | None = None,
) -> Iterator[EncodedFolder]:
    """Check ``out`` (``check_outputs``), then read and encode every image (volume slice) of ``data`` into ``work``,
    under train's hold on ``work`` (one of them at a time), which lasts while the caller reads the store. ``check``
    sees the list of slices before the encoder runs, to refuse before minutes are spent."""
    check_outputs(out, studio_root)
    with hold(work, f"autoprompt suggest {data}", "autoprompt-train"):
        clear_stale(work)
        wanted, slices, positions = read_folder(data / IMAGES, folder_section(settings))
        if check is not None:
            check(wanted)
        store = encode_folder([w.id for w in wanted], slices, settings, work)
        yield EncodedFolder(wanted, positions, store, pooled_features(store))


def suggest_folder(
    data: Path,
    out: Path,
    work: Path,
    settings: Settings,
    n: int,
    numerics: Numerics = EXACT_NUMERICS,
    min_distance: float = suggest.DUPLICATE,
    label: str = "structure",
    studio_root: Path | None = None,
    method: str = "typical",
) -> Suggestion:
    """Choose ``n`` images (volume slices) of the folder ``data`` to box and write their templates into ``out`` (see
    the module's docstring); the embeddings are kept in ``work``. ``settings``: the params (``prepare``'s folder
    section, ``encode``); ``numerics``: the encoder's, as ``train`` would choose it; ``label``: the box's label in
    Label Studio; ``studio_root``: Label Studio's document root of local files (default ``out``); ``method``: how the
    images are chosen (``pick``)."""
    section = folder_section(settings)
    settings = settings.model_copy(update={"encode": encode_for(settings.encode, numerics)})
    with encoded_folder(data, out, work, settings, studio_root) as folder:
        wanted = folder.wanted
        volumes = any(w.slice is not None for w in wanted)
        chosen = [wanted[i] for i in pick(folder.features, folder.positions, volumes, n, min_distance, method)]
    if len(chosen) < min(n, len(wanted)):
        log.warning(
            "%d images and slices chosen, not %d: every other one lies within %g of a chosen one (a near-duplicate)",
            len(chosen), n, min_distance,
        )  # fmt: skip
    if len(wanted) < n:
        log.warning("%d images and slices in %s, fewer than -n %d: every one is listed", len(wanted), data, n)
    for rank, w in enumerate(chosen, 1):
        log.info("%2d. %s%s", rank, w.file, "" if w.slice is None else f" slice {w.slice}")
    pictures = render(data / IMAGES, chosen, section)
    written = write_outputs(out, chosen, pictures, label, out if studio_root is None else studio_root)
    return Suggestion(chosen, len(wanted), written)


def boxed_rows(wanted: list[Wanted], boxes: Path, images: Path, label: str | None) -> list[int]:
    """The rows of ``read_folder``'s list that the boxes file ``boxes`` boxes, matched as ``train`` matches them: a
    box without a slice is on slice 0, and a 2D image is its own slice 0 (a viewer's ROI on a picture names slice 0)."""
    keys = {(name, box.slice or 0) for name, found in read_boxes(boxes, images, label).items() for box in found}
    return [row for row, w in enumerate(wanted) if (w.file, w.slice or 0) in keys]


def suggest_next(
    data: Path,
    out: Path,
    work: Path,
    settings: Settings,
    model_path: Path,
    boxes: Path,
    n: int,
    numerics: Numerics = EXACT_NUMERICS,
    min_distance: float = suggest.DUPLICATE,
    label: str = "structure",
    studio_root: Path | None = None,
    box_label: str | None = None,
) -> Suggestion:
    """Choose ``n`` unboxed images (volume slices) of ``data`` to box next, those the model ``model_path`` is unsure
    of first (see the module's docstring), and write their templates into ``out``. ``boxes``: the boxes drawn so far
    (``box_label``: their label in a labelled export); the other arguments as ``suggest_folder``'s."""
    section = folder_section(settings)
    model = load_model(model_path)
    if model.backbone != settings.encode.backbone:
        raise InputError(
            f"--model {model_path}: trained on {model.backbone} embeddings, and suggest would encode with "
            f"{settings.encode.backbone}; give --backbone {model.backbone}"
        )
    if model.preprocessing != preprocessing(section):
        params = settings.source if Path(settings.source).is_file() else "the defaults (no --params)"
        raise InputError(
            f"--model {model_path}: trained on images prepared as {model.preprocessing.as_dict()}, {params} prepare "
            f"them as {preprocessing(section).as_dict()}; give --params the file train read"
        )
    if len(model.heads) < 2:
        log.warning("%s has one run, which cannot disagree with itself: only a box off its volume's sequence is in "
                    "doubt; train with --runs 2 or more", model_path)  # fmt: skip
    settings = settings.model_copy(update={"encode": encode_for(settings.encode, numerics)})
    boxed: list[int] = []

    def some_unboxed(wanted: list[Wanted]) -> None:
        boxed.extend(boxed_rows(wanted, boxes, data / IMAGES, section.label if box_label is None else box_label))
        if len(boxed) == len(wanted):
            raise InputError(f"{boxes}: every image and slice of {data / IMAGES} has a box; nothing to list")

    with encoded_folder(data, out, work, settings, studio_root, some_unboxed) as (wanted, positions, store, features):
        unsure = doubts(judging_predictor(model, settings, numerics), folder_inputs(wanted), embedding_reader(store),
                        set(boxed), judging_rule(settings.train.self_training))  # fmt: skip
    disagree, sequence, empty, found = (unsure.said[s] for s in SAID)
    log.info("the model is unsure of %d of the %d unboxed images and slices: its runs disagree on %d (under %g "
             "agreement) and %d break their volume's sequence; it is sure of the other %d (%d found, %d empty)",
             len(unsure.rows), unsure.looked, disagree, settings.train.self_training.min_agreement, sequence,
             found + empty, found, empty)  # fmt: skip
    log.info("listing %d: those in doubt first, each the farthest from the boxed and listed ones (k-center)", n)
    volumes = any(w.slice is not None for w in wanted)
    spread = suggest.with_positions(features, positions) if volumes else features
    rows = suggest.box_next(spread, n, boxed, unsure.rows, min_distance, duplicates=features)
    chosen = [wanted[i] for i in rows]
    if len(chosen) < min(n, unsure.looked):
        log.warning("%d images and slices chosen, not %d: every other one lies within %g of a chosen or boxed one",
                    len(chosen), n, min_distance)  # fmt: skip
    if unsure.looked < n:
        log.warning("%d unboxed images and slices in %s, fewer than -n %d: every one is listed", unsure.looked, data, n)
    doubtful = set(unsure.rows)
    for rank, (row, w) in enumerate(zip(rows, chosen, strict=True), 1):
        log.info("%2d. %s%s (run agreement %.2f%s)", rank, w.file, "" if w.slice is None else f" slice {w.slice}",
                 unsure.agreement[row], "" if row in doubtful else "; not in doubt, to cover the folder")  # fmt: skip
    pictures = render(data / IMAGES, chosen, section)
    written = write_outputs(out, chosen, pictures, label, out if studio_root is None else studio_root)
    return Suggestion(chosen, unsure.looked, written, len(unsure.rows))
