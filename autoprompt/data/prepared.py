"""The prepared store of a dataset.

``data/prepared/<dataset>.zarr``: ``images`` and ``labels``, N x S x S uint8, one image per chunk.
``data/prepared/<dataset>.csv``: one row per image, in store order: id, subject, split and what decided it
(``split_by``), source, the prepared frame's pixel spacing in mm, the original size (``height``, ``width``), the
geometry that maps the original into the prepared frame (``scale``, ``offset_row``, ``offset_col``: prepared =
scale * original + offset, see ``preprocess``), and for each class its area in the prepared frame, its area in the
image as read (``<class>_area_raw``), the share of it the frame keeps (``<class>_kept``) and its tight box
(``<class>_x0, _y0, _x1, _y1``, inclusive, -1 when absent). The folder reader's rows (users' own data) also say
whether the image has a mask (``has_mask``, 1 or 0) and where the box came from (``box_from``: ``boxes.csv`` or
``mask``); without a mask, the areas are 0.
The CSV is kept in git, so splits, boxes and what the crop cut are versioned and reviewable.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from tqdm import tqdm

from autoprompt.data import CaseFiles, Reader, folder
from autoprompt.data.preprocess import FITS, fit_label, fit_to_frame, kept_fraction, tight_box
from autoprompt.data.splits import SPLITS, SplitLists, assign_splits, authors_lists, listed_subjects
from autoprompt.errors import InputError
from autoprompt.io import atomic_path

log = logging.getLogger(__name__)

BOX = ("x0", "y0", "x1", "y1")
LOST = 0.01  # an image "lost" a class when the prepared frame keeps less than 1 - LOST of its area
SPLIT_BY = {
    "lists": "from the lists",
    "data": "fixed by the data",
    "unlisted": "unlisted (the lists' rest)",
    "proportions": "dealt by proportions",
}


@dataclass
class Prepared:
    """``images``/``labels``: N x S x S uint8; ``table``: N rows in the same order."""

    images: np.ndarray
    labels: np.ndarray
    table: pd.DataFrame
    skipped: list[str]


def prepare_cases(
    reader: Reader, files: list[CaseFiles], settings: dict, crop: int, on_error: str = "stop", fit: str = "crop"
) -> Prepared:
    """Load every case, fit it into ``crop`` x ``crop`` (``fit``: ``crop`` or ``resize``, see ``preprocess``), and
    measure each class: its area before and after, the share kept, and its tight box. Warns, per class, about the
    images that lost more than 1% of it.

    A case's boxes drawn by hand (``Case.box_label``) are fitted with its label and give its tight boxes instead of
    the label; the folder reader's rows say where their boxes came from in ``box_from`` (``boxes.csv`` or ``mask``).

    ``on_error``: ``stop`` raises the first bad case's InputError; ``skip`` logs it, counts it and goes on.
    """
    assert on_error in ("stop", "skip"), f"on_error must be stop or skip, got {on_error!r}"
    if fit not in FITS:
        raise InputError(f"params.yaml: prepare.{reader.name}.fit is {fit!r}; use one of {', '.join(FITS)}")
    images, labels, rows, skipped = [], [], [], []
    for files_of_case in tqdm(files, desc=f"prepare {reader.name}", unit="case"):
        try:
            cases = reader.load(files_of_case, settings)
        except InputError as error:
            if on_error == "stop":
                raise
            log.warning("skipped: %s", error)
            skipped.append(str(error))
            continue
        for case in cases:
            image, label, geometry = fit_to_frame(case.image, case.label, crop, fit)
            row = {
                "id": case.id,
                "subject": case.subject,
                "split": case.split,
                "source": case.source,
                "spacing_row": case.spacing[0] / geometry.scale,
                "spacing_col": case.spacing[1] / geometry.scale,
                "height": case.image.shape[0],
                "width": case.image.shape[1],
                "scale": geometry.scale,
                "offset_row": geometry.offset_row,
                "offset_col": geometry.offset_col,
                **case.extra,
            }
            boxes = None if case.box_label is None else fit_label(case.box_label, crop, geometry)
            for name, value in reader.classes.items():
                mask = label == value
                area, area_raw = int(mask.sum()), int((case.label == value).sum())
                row[f"{name}_area"] = area
                row[f"{name}_area_raw"] = area_raw
                row[f"{name}_kept"] = kept_fraction(area, area_raw, geometry.scale)
                box = tight_box(mask if boxes is None else boxes == value)
                row.update(zip((f"{name}_{k}" for k in BOX), box or (-1, -1, -1, -1), strict=True))
            if "has_mask" in case.extra:  # the folder reader's rows
                row["box_from"] = folder.BOXES if boxes is not None else "mask"
            images.append(image)
            labels.append(label)
            rows.append(row)
    if not rows:
        raise InputError(f"{reader.name}: no usable case was read ({len(skipped)} skipped); see the log above")
    table = pd.DataFrame(rows)
    duplicates = table["id"][table["id"].duplicated()].tolist()
    assert not duplicates, f"{reader.name}: duplicate case ids {duplicates[:5]}"
    log_losses(table, reader.name, list(reader.classes), fit, crop)
    return Prepared(np.stack(images), np.stack(labels), table, skipped)


def log_losses(table: pd.DataFrame, dataset: str, classes: list[str], fit: str, crop: int) -> None:
    """Warn, per class, how many images the fit cut by more than ``LOST`` of the class's area, and the worst one."""
    for name in classes:
        lost = table[table[f"{name}_kept"] < 1 - LOST]
        if lost.empty:
            log.info("%s: every image keeps at least %.0f%% of %s (fit: %s)", dataset, 100 * (1 - LOST), name, fit)
            continue
        worst = lost.loc[lost[f"{name}_kept"].idxmin()]
        log.warning(
            "%s: %d of %d images lost more than %.0f%% of %s to the %s to %d (worst: %s keeps %.1f%%); "
            "see %s_kept in the index, or set fit: resize",
            dataset,
            len(lost),
            len(table),
            100 * LOST,
            name,
            fit,
            crop,
            worst["id"],
            100 * worst[f"{name}_kept"],
            name,
        )


def split_table(table: pd.DataFrame, proportions: dict[str, float], seed: int) -> pd.Series:
    """The split of every row, by subject, dealt by ``proportions``; rows whose split the dataset fixes keep it."""
    sizes = table.groupby("subject").size().to_dict()
    fixed = table.dropna(subset=["split"]).groupby("subject")["split"].first().to_dict()
    by_subject = assign_splits(sizes, proportions, seed, fixed)
    return table["subject"].map(by_subject)


def check_proportions(value: object, where: str) -> dict[str, float]:
    """``value`` as split proportions: a mapping of train / val / test to weights >= 0 with a positive sum."""
    example = "{train: 7, val: 1, test: 2}"
    if not isinstance(value, dict) or not value or not set(value) <= set(SPLITS):
        raise InputError(f"params.yaml: {where} is {value!r}; give proportions of {'/'.join(SPLITS)}, e.g. {example}")
    if not all(isinstance(v, (int, float)) and v >= 0 for v in value.values()) or sum(value.values()) <= 0:
        raise InputError(f"params.yaml: {where} is {value!r}; proportions must be >= 0 with a positive sum")
    return {k: float(v) for k, v in value.items()}


def split_settings(dataset: str, settings: dict) -> tuple[SplitLists | None, dict[str, float] | None]:
    """``prepare.<dataset>.split`` and ``.proportions``, checked: the authors' lists (None for a proportional split)
    and the proportions that deal the subjects nothing else assigns (None where there are none to deal). ``split:
    boxes`` (the folder reader's default) gives neither: the reader fixes every split."""
    default = folder.BOX_SPLIT if settings.get("reader") == folder.NAME else None
    split, proportions = settings.get("split", default), settings.get("proportions")
    where = f"prepare.{dataset}"
    if split == folder.BOX_SPLIT:
        if proportions is not None:
            raise InputError(
                f"params.yaml: {where}.proportions is not used: split: boxes puts the images with boxes in train and "
                "the others in test; remove it, or give split: {train: .., val: .., test: ..}"
            )
        return None, None
    if isinstance(split, dict):
        if proportions is not None:
            raise InputError(
                f"params.yaml: {where} gives both split proportions and proportions; keep split: {{...}} alone, "
                "or set split: authors and keep proportions for the subjects the lists do not name"
            )
        return None, check_proportions(split, f"{where}.split")
    if split != "authors":
        raise InputError(
            f"params.yaml: {where}.split is {split!r}; use authors, boxes (reader: folder), or proportions such as "
            "{train: 7, val: 1, test: 2}"
        )
    lists = authors_lists(dataset)
    if lists.unlisted == "proportions":
        if proportions is None:
            raise InputError(
                f"params.yaml: {where}.split is authors but {where}.proportions is missing; add the proportions "
                "that deal the subjects no list names, e.g. proportions: {train: 7, val: 1, test: 2}"
            )
        return lists, check_proportions(proportions, f"{where}.proportions")
    if proportions is not None:
        raise InputError(
            f"params.yaml: {where}.proportions is not used: the authors' {dataset} lists put every subject they do "
            "not name in train; remove it"
        )
    return lists, None


def apply_split(table: pd.DataFrame, dataset: str, settings: dict, seed: int) -> pd.DataFrame:
    """``table`` with its ``split`` set for every row, by subject, and ``split_by`` (after ``split``) saying what
    decided it: ``lists`` (the authors' lists), ``data`` (the dataset fixes it: ACDC testing/, CAMUS split files),
    ``unlisted`` (the lists' rule for the subjects they leave out: train) or ``proportions`` (dealt with ``seed``).

    ``settings`` is ``prepare.<dataset>``: ``split: authors`` (with ``proportions`` where the lists leave subjects
    to deal, HC18), ``split: {train, val, test}`` proportions, or ``split: boxes`` (the reader fixes every split).
    Logs how many images each way gave each split.
    """
    lists, proportions = split_settings(dataset, settings)
    sizes = table.groupby("subject").size().to_dict()
    by_subject = table.dropna(subset=["split"]).groupby("subject")["split"].first().to_dict()
    how = dict.fromkeys(by_subject, "data")
    if lists is None and proportions is None and sizes.keys() - by_subject.keys():
        unfixed = sorted(sizes.keys() - by_subject.keys())
        raise InputError(
            f"params.yaml: prepare.{dataset}.split is boxes, but the reader fixes no split for {len(unfixed)} "
            f"subjects ({unfixed[0]}, ...); split: boxes needs reader: folder, or give split proportions"
        )
    if lists is not None:
        listed = listed_subjects(table, lists)
        for subject, split in listed.items():
            if by_subject.get(subject, split) != split:
                raise InputError(
                    f"{lists.sources[split]}: {subject} is listed for {split}, but the data fixes it to "
                    f"{by_subject[subject]} (an official test folder or split file); set "
                    f"prepare.{dataset}.official_split: false where the dataset has it, or split by proportions"
                )
            how.setdefault(subject, "lists")
            by_subject[subject] = split
        if lists.unlisted == "train":
            for subject in sizes.keys() - by_subject.keys():
                by_subject[subject], how[subject] = "train", "unlisted"
        log.info(
            "%s: the authors' lists (%s) name %d of the %d subjects",
            dataset,
            ", ".join(lists.sources.values()),
            len(listed),
            len(sizes),
        )
    if proportions is not None:
        dealt = assign_splits(sizes, proportions, seed, fixed=by_subject)
        how.update(dict.fromkeys(dealt.keys() - by_subject.keys(), "proportions"))
        by_subject = dealt
    out = table.copy()
    out["split"] = out["subject"].map(by_subject)
    out.insert(out.columns.get_loc("split") + 1, "split_by", out["subject"].map(how))
    assert out["split"].notna().all() and out["split_by"].notna().all(), f"{dataset}: rows left without a split"
    log_split_counts(out, dataset)
    return out


def log_split_counts(table: pd.DataFrame, dataset: str) -> None:
    """One line: for each way a split was decided, the images it gave train, val and test."""
    counts = table.groupby(["split_by", "split"]).size()
    parts = []
    for key, words in SPLIT_BY.items():
        if key in counts.index.get_level_values(0):
            shown = ", ".join(f"{split} {counts[key].get(split, 0)}" for split in SPLITS)
            parts.append(f"{words}: {shown}")
        else:
            parts.append(f"{words}: 0")
    log.info("%s: images per split %s", dataset, "; ".join(parts))


def images_sha256(images: np.ndarray, ids: list[str]) -> str:
    """Fingerprint of what an encoder sees: the image bytes, their shape and their ids, in order."""
    digest = hashlib.sha256(repr((images.shape, ids)).encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def write_prepared(store: Path, index: Path, prepared: Prepared, attrs: dict) -> None:
    """Write the Zarr store and the CSV index, each whole or not at all."""
    n, size, _ = prepared.images.shape
    ids = prepared.table["id"].tolist()
    with atomic_path(store) as tmp:
        group = zarr.open_group(tmp, mode="w")
        for name in ("images", "labels"):
            array = group.create_array(name, shape=(n, size, size), chunks=(1, size, size), dtype="uint8")
            array[:] = getattr(prepared, name)
        group.attrs.update(
            {
                **attrs,
                "ids": ids,
                "skipped": len(prepared.skipped),
                "source_sha256": images_sha256(prepared.images, ids),
            }
        )
    with atomic_path(index) as tmp:
        prepared.table.to_csv(tmp, index=False, float_format="%.6g")


def read_index(store: Path, index: Path) -> tuple[zarr.Group, pd.DataFrame]:
    """The store's group and its index table, checked to describe the same images in the same order."""
    for path in (store, index):
        if not Path(path).exists():
            raise InputError(f"{path}: prepared data not found; run `dvc repro` (the prepare stage) first")
    group = zarr.open_group(store, mode="r")
    table = pd.read_csv(index, dtype={"id": str, "subject": str})
    if list(group.attrs["ids"]) != table["id"].tolist():
        raise InputError(f"{index}: rows do not match {store}; run the prepare stage again")
    return group, table


def task_table(table: pd.DataFrame, class_name: str, min_foreground: int) -> pd.DataFrame:
    """The rows of one task: images with at least ``min_foreground`` pixels of its class, and images without a mask
    (``has_mask`` 0 in the index) that have a box, with their store row in column ``row``, their tight box in ``x0,
    y0, x1, y1`` and ``has_mask`` (True where the index has no such column)."""
    if f"{class_name}_area" not in table:
        raise InputError(f"params.yaml: class {class_name!r} is not in this dataset's index; check tasks")
    has_mask = table["has_mask"].astype(bool) if "has_mask" in table else pd.Series(True, index=table.index)
    boxed_only = ~has_mask & (table[f"{class_name}_x0"] >= 0)
    rows = table[(table[f"{class_name}_area"] >= min_foreground) | boxed_only]
    boxes = rows[[f"{class_name}_{k}" for k in BOX]].to_numpy()
    out = rows[["id", "subject", "split"]].assign(row=rows.index.to_numpy())
    out = out.assign(**{k: boxes[:, i] for i, k in enumerate(BOX)}, has_mask=has_mask[rows.index].to_numpy())
    return out.reset_index(drop=True)
