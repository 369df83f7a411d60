"""A task (one class of one dataset) as the train and evaluate stages see it: rows, boxes, embeddings, labels."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr
from torch import Tensor

from autoprompt.data import embeddings as store
from autoprompt.data.prepared import BOX, read_index, task_table
from autoprompt.errors import InputError
from autoprompt.settings import TaskSpec

SPACING = ("spacing_row", "spacing_col")


@dataclass(frozen=True)
class TaskFiles:
    """Where a task's data lies: its dataset's prepared store and index, and its embedding store."""

    prepared: Path
    index: Path
    embeddings: Path


@dataclass
class Task:
    """``table``: one row per image of the task (id, subject, split, row in the stores, x0, y0, x1, y1, has_mask,
    the prepared frame's pixel spacing in mm, spacing_row and spacing_col, and for volumes the slice's index in its
    volume, slice); ``files``: where its stores lie.
    ``volumes``: the images are slices of volumes (the index has a ``slice`` column), so a subject's slices stack into
    one volume; ``every_slice``: then, every slice of the dataset, the task's structure's or not (id, subject, split,
    row, has_mask, spacing_row, spacing_col, slice and the slices' spacing in mm, slice_mm), for whole volumes."""

    name: str
    class_name: str
    label_value: int
    label_size: int
    table: pd.DataFrame
    prepared: zarr.Group
    embeddings: zarr.Group
    files: TaskFiles
    volumes: bool = False
    preprocessing: dict | None = None
    every_slice: pd.DataFrame | None = None

    def identity(self) -> dict:
        """What a trained run's result depends on in the task's data: its class, label size, preprocessing, and the
        backbone, checkpoint, source images, runtime and precision its embeddings were made with."""
        attrs = self.embeddings.attrs
        return {
            "task": self.name,
            "class": self.class_name,
            "label_value": self.label_value,
            "label_size": self.label_size,
            "preprocessing": self.preprocessing,
            "backbone": attrs["backbone"],
            "checkpoint_sha256": attrs["checkpoint_sha256"],
            "source_sha256": attrs["source_sha256"],
            "runtime": attrs.get("runtime", "torch"),
            "precision": attrs.get("precision", "float32"),
        }

    def rows(self, split: str | None = None, ids: tuple[str, ...] | None = None) -> pd.DataFrame:
        """The task's rows of one split, or of the given ids in the given order."""
        if ids is not None:
            found = self.table.set_index("id").loc[list(ids)].reset_index()
            return found[self.table.columns]
        return self.table[self.table["split"] == split].reset_index(drop=True)

    def volume_rows(self, split: str) -> pd.DataFrame:
        """Every slice of the split's volumes that have masks, the slices without the task's structure too, in the
        stores' order (empty for a task of 2D images)."""
        if self.every_slice is None:
            return self.table.iloc[:0]
        rows = self.every_slice
        return rows[(rows["split"] == split) & rows["has_mask"]].reset_index(drop=True)

    def load_embeddings(self, rows: pd.DataFrame) -> Tensor:
        """N x 256 x 64 x 64 float16 embeddings of ``rows``."""
        return torch.from_numpy(_select(self.embeddings["embeddings"], rows["row"].to_numpy()))

    def load_images(self, rows: pd.DataFrame) -> Tensor:
        """N x S x S uint8 prepared images of ``rows``."""
        return torch.from_numpy(_select(self.prepared["images"], rows["row"].to_numpy()))

    def load_masks(self, rows: pd.DataFrame) -> Tensor:
        """N x S x S boolean masks of the task's class (all False for the rows without a mask)."""
        return torch.from_numpy(_select(self.prepared["labels"], rows["row"].to_numpy()) == self.label_value)

    def has_masks(self, rows: pd.DataFrame) -> Tensor:
        """N booleans: whether each row has a mask (users' own data may give only a box)."""
        return torch.from_numpy(rows["has_mask"].to_numpy(dtype=bool, copy=True))

    def spacing(self, rows: pd.DataFrame) -> Tensor:
        """N x 2 pixel spacings (row, column) in mm, in the prepared frame."""
        return torch.from_numpy(rows[list(SPACING)].to_numpy(dtype=np.float64))

    def boxes(self, rows: pd.DataFrame) -> Tensor:
        """N x 4 tight boxes (x_min, y_min, x_max, y_max, inclusive) in the label frame."""
        return torch.from_numpy(rows[list(BOX)].to_numpy(dtype=np.int64))


def _select(array: zarr.Array, index: np.ndarray) -> np.ndarray:
    """``array[index]`` along the first axis, in the order of ``index``, each run of consecutive rows read as one slice.

    On the sharded embedding store, zarr's orthogonal selection of 120 scattered rows of 240 took 41.5 times as long
    as these slices and 7.6 GiB more memory than a one-row read (``bench/timings/read_rows.py``)."""
    rows, inverse = np.unique(index, return_inverse=True)
    data = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    starts = [i for i in range(len(rows)) if i == 0 or rows[i] != rows[i - 1] + 1]  # where runs of rows begin
    for start, stop in itertools.pairwise([*starts, len(rows)]):
        data[start:stop] = array[int(rows[start]) : int(rows[stop - 1]) + 1]
    return data[inverse.reshape(-1)]


def load_task(name: str, spec: TaskSpec, files: TaskFiles, min_foreground: int, backbone: str) -> Task:
    """Open task ``name`` (``spec``: its ``tasks.<name>``): its prepared data and embeddings, checked to agree with
    each other and with ``backbone``; its rows are the images with ``min_foreground`` pixels of its class (or a box)."""
    group, table = read_index(files.prepared, files.index)
    classes = dict(group.attrs["classes"])
    if spec.class_name not in classes:
        raise InputError(
            f"{spec.key('class')}: {spec.class_name!r} is not a class of {files.prepared} ({sorted(classes)})"
        )
    rows = task_table(table, spec.class_name, min_foreground)
    carried = SPACING + (("slice",) if "slice" in table else ())  # a slice's position in its volume, for volumes
    rows = rows.assign(**{k: table.loc[rows["row"], k].to_numpy() for k in carried})
    every_slice = None
    if "slice" in table:
        has_mask = table["has_mask"].astype(bool) if "has_mask" in table else pd.Series(True, index=table.index)
        thickness = table["slice_mm"] if "slice_mm" in table else pd.Series(1.0, index=table.index)
        every_slice = table[["id", "subject", "split", *SPACING, "slice"]].assign(
            row=table.index.to_numpy(), has_mask=has_mask.to_numpy(), slice_mm=thickness.to_numpy()
        )
    encoded = store.open_embeddings(files.embeddings)
    store.check_source(encoded, files.embeddings, backbone, group.attrs["source_sha256"])
    return Task(
        name,
        spec.class_name,
        int(classes[spec.class_name]),
        int(group.attrs["crop"]),
        rows,
        group,
        encoded,
        files,
        "slice" in table,
        group.attrs.get("preprocessing"),
        every_slice,
    )
