"""The prepared store of a dataset.

``data/prepared/<dataset>.zarr``: ``images`` and ``labels``, N x S x S uint8, one image per chunk.
``data/prepared/<dataset>.csv``: one row per image, in store order: id, subject, split, source, spacing, original
size, and for each class its area and tight box (``<class>_x0, _y0, _x1, _y1``, inclusive, -1 when absent).
The CSV is kept in git, so splits and boxes are versioned and reviewable.
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

from autoprompt.datasets import CaseFiles, Reader
from autoprompt.datasets.preprocess import crop_or_pad, tight_box
from autoprompt.datasets.splits import assign_splits
from autoprompt.errors import InputError
from autoprompt.io import atomic_path

log = logging.getLogger(__name__)

BOX = ("x0", "y0", "x1", "y1")


@dataclass
class Prepared:
    """``images``/``labels``: N x S x S uint8; ``table``: N rows in the same order."""

    images: np.ndarray
    labels: np.ndarray
    table: pd.DataFrame
    skipped: list[str]


def prepare_cases(
    reader: Reader, files: list[CaseFiles], settings: dict, crop: int, on_error: str = "stop"
) -> Prepared:
    """Load every case, centre crop/pad it to ``crop`` x ``crop`` and measure each class's tight box.

    ``on_error``: ``stop`` raises the first bad case's InputError; ``skip`` logs it, counts it and goes on.
    """
    assert on_error in ("stop", "skip"), f"on_error must be stop or skip, got {on_error!r}"
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
            image, label = crop_or_pad(case.image, crop), crop_or_pad(case.label, crop)
            row = {
                "id": case.id,
                "subject": case.subject,
                "split": case.split,
                "source": case.source,
                "spacing_row": case.spacing[0],
                "spacing_col": case.spacing[1],
                "height": case.image.shape[0],
                "width": case.image.shape[1],
                **case.extra,
            }
            for name, value in reader.classes.items():
                mask = label == value
                row[f"{name}_area"] = int(mask.sum())
                row.update(zip((f"{name}_{k}" for k in BOX), tight_box(mask) or (-1, -1, -1, -1), strict=True))
            images.append(image)
            labels.append(label)
            rows.append(row)
    if not rows:
        raise InputError(f"{reader.name}: no usable case was read ({len(skipped)} skipped); see the log above")
    table = pd.DataFrame(rows)
    duplicates = table["id"][table["id"].duplicated()].tolist()
    assert not duplicates, f"{reader.name}: duplicate case ids {duplicates[:5]}"
    return Prepared(np.stack(images), np.stack(labels), table, skipped)


def split_table(table: pd.DataFrame, proportions: dict[str, float], seed: int) -> pd.Series:
    """The split of every row, by subject; rows whose split the dataset fixes keep it."""
    sizes = table.groupby("subject").size().to_dict()
    fixed = table.dropna(subset=["split"]).groupby("subject")["split"].first().to_dict()
    by_subject = assign_splits(sizes, proportions, seed, fixed)
    return table["subject"].map(by_subject)


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
    """The rows of one task: images with at least ``min_foreground`` pixels of its class, with their store
    row in column ``row`` and their tight box in ``x0, y0, x1, y1``."""
    if f"{class_name}_area" not in table:
        raise InputError(f"params.yaml: class {class_name!r} is not in this dataset's index; check tasks")
    rows = table[table[f"{class_name}_area"] >= min_foreground]
    boxes = rows[[f"{class_name}_{k}" for k in BOX]].to_numpy()
    out = rows[["id", "subject", "split"]].assign(row=rows.index.to_numpy())
    return out.assign(**{k: boxes[:, i] for i, k in enumerate(BOX)}).reset_index(drop=True)
