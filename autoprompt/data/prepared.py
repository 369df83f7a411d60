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
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from autoprompt.errors import InputError
from autoprompt.io import atomic_path

BOX = ("x0", "y0", "x1", "y1")


@dataclass
class Prepared:
    """``images``/``labels``: N x S x S uint8; ``table``: N rows in the same order."""

    images: np.ndarray
    labels: np.ndarray
    table: pd.DataFrame
    skipped: list[str]


def images_sha256(images: np.ndarray, ids: list[str]) -> str:
    """Fingerprint of what an encoder sees: the image bytes, their shape and their ids, in order."""
    digest = hashlib.sha256(repr((images.shape, ids)).encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def write_prepared(store: Path, index: Path, prepared: Prepared, attrs: dict) -> None:
    """Write the Zarr store and the CSV index, each whole or not at all. Both are written aside first, then moved into
    place, the index last; the earlier store is kept (``.<store>.old``) until the new index is in place, so a process
    killed between the moves leaves both versions of the store on disk (``read_index`` names it)."""
    n, size, _ = prepared.images.shape
    ids = prepared.table["id"].tolist()
    store, index = Path(store), Path(index)
    new_store, old_store, new_index = (store.with_name(f".{store.name}.{k}") for k in ("new", "old", "csv.new"))
    with atomic_path(new_store) as tmp:
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
    with atomic_path(new_index) as tmp:
        prepared.table.to_csv(tmp, index=False, float_format="%.6g")
    shutil.rmtree(old_store, ignore_errors=True)
    if store.exists():
        store.rename(old_store)
    new_store.rename(store)
    os.replace(new_index, index)
    shutil.rmtree(old_store, ignore_errors=True)


def read_index(store: Path, index: Path) -> tuple[zarr.Group, pd.DataFrame]:
    """The store's group and its index table, checked to describe the same images in the same order."""
    for path in (store, index):
        if not Path(path).exists():
            raise InputError(f"{path}: prepared data not found; run `dvc repro` (the prepare stage) first")
    group = zarr.open_group(store, mode="r")
    table = pd.read_csv(index, dtype={"id": str, "subject": str})
    if list(group.attrs["ids"]) != table["id"].tolist():
        old = Path(store).with_name(f".{Path(store).name}.old")
        kept = f" (the store before it is kept as {old})" if old.exists() else ""
        raise InputError(f"{index}: rows do not match {store}{kept}; run the prepare stage again")
    return group, table


def task_table(table: pd.DataFrame, class_name: str, min_foreground: int) -> pd.DataFrame:
    """The rows of one task: images with at least ``min_foreground`` pixels of its class, and images without a mask
    (``has_mask`` 0 in the index) that have a box, with their store row in column ``row``, their tight box in ``x0,
    y0, x1, y1`` and ``has_mask`` (True where the index has no such column)."""
    if f"{class_name}_area" not in table:
        raise InputError(f"class {class_name!r} is not in this dataset's index; check the task's class")
    has_mask = table["has_mask"].astype(bool) if "has_mask" in table else pd.Series(True, index=table.index)
    boxed_only = ~has_mask & (table[f"{class_name}_x0"] >= 0)
    rows = table[(table[f"{class_name}_area"] >= min_foreground) | boxed_only]
    boxes = rows[[f"{class_name}_{k}" for k in BOX]].to_numpy()
    out = rows[["id", "subject", "split"]].assign(row=rows.index.to_numpy())
    out = out.assign(**{k: boxes[:, i] for i, k in enumerate(BOX)}, has_mask=has_mask[rows.index].to_numpy())
    return out.reset_index(drop=True)
