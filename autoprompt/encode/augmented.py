"""The augment step: the augmented views of the few-shot training images (``autoprompt.data.views``), encoded.

The store's ids are ``<id>#view<k>``; its ``source_sha256`` covers the prepared images and the ``augment`` settings,
so a store made with other settings is refused by the train stage.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr

from autoprompt.data import embeddings, views
from autoprompt.encode.store import encode_store, identity, pixels_sha256
from autoprompt.settings import AugmentSettings, EncodeSettings


def read_views(
    images: zarr.Array, table: pd.DataFrame, ids: list[str], augment: AugmentSettings
) -> Callable[[slice], np.ndarray]:
    """``read(rows)`` for ``encode_store``: the uint8 views of a slice of the store's rows (``count`` per image)."""
    row_of = {image_id: row for row, image_id in enumerate(table["id"])}

    def read(rows: slice) -> np.ndarray:
        wanted = range(len(ids) * augment.count)[rows]
        sources = [ids[j // augment.count] for j in wanted]
        drawn = {i: views.draw(i, augment) for i in dict.fromkeys(sources)}
        matrices = torch.stack([drawn[i][0][j % augment.count] for i, j in zip(sources, wanted, strict=True)])
        intensity = torch.stack([drawn[i][1][j % augment.count] for i, j in zip(sources, wanted, strict=True)])
        pixels = torch.from_numpy(np.stack([images[row_of[i]] for i in sources]))
        return views.render(pixels, matrices, intensity).numpy()

    return read


def encode_views(
    group: zarr.Group,
    table: pd.DataFrame,
    ids: list[str],
    out: Path,
    encode: EncodeSettings,
    augment: AugmentSettings,
    label: str,
    part: tuple[int, int],
    reuse: bool = False,
) -> None:
    """``augment.count`` views of each of ``ids`` (images of the prepared store ``group``, indexed by ``table``),
    encoded into ``out``. ``reuse``: as ``store.encode_prepared``'s; a view is the same where its image's pixels,
    its id and the ``augment`` settings are."""
    view_ids = views.view_ids(ids, augment.count)
    keys: tuple[str, ...] = ()
    if reuse:
        row_of = {image_id: row for row, image_id in enumerate(table["id"])}
        pixels = {i: pixels_sha256(group["images"][row_of[i]]) for i in ids}
        settings = views.source_sha256("", augment)
        keys = tuple(f"{pixels[views.source_id(v)]}:{settings}:{v}" for v in view_ids)
    found = identity(encode, views.source_sha256(group.attrs["source_sha256"], augment), view_ids, keys)
    previous = embeddings.set_aside(out, found) if reuse else None
    read = read_views(group["images"], table, ids, augment)
    encode_store(out, found, read, encode, label, part, embeddings.Donor(previous, found))
    if previous is not None and out.exists():
        shutil.rmtree(previous)
