"""augment@<dataset>: encode augmented views of the images the few-shot runs train on (README: Augmented views).

The few-shot subsets of every task of the dataset (``train.shots``, ``subsets``, ``subset_seed``) are drawn as the
train stage draws them, and each of their images gets ``augment.count`` views, flipped, zoomed, shifted and changed
in intensity (``autoprompt.data.views``), encoded like ``encode`` (same runtime, resumable shards). The store's ids
are ``<id>#view<k>``; its ``source_sha256`` covers the prepared images and the ``augment`` settings, so a store made
with other settings is refused by the train stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr

from autoprompt.data import embeddings, views
from autoprompt.data.prepared import read_index, task_table
from autoprompt.model import backbones
from autoprompt.stage import load_params, parser, pin_cpu_numerics, run
from autoprompt.training.fewshot import FEWSHOT, plan_runs
from stages.encode import encode_store, encoder_choice, part_from_env

log = logging.getLogger("augment")


def fewshot_ids(params: dict, dataset: str, table: pd.DataFrame) -> list[str]:
    """The ids, in index order, of every image that a few-shot run of a task of ``dataset`` trains on."""
    train, wanted = params["train"], set()
    for name, spec in params["tasks"].items():
        if spec["dataset"] != dataset:
            continue
        rows = task_table(table, spec["class"], int(params["prepare"]["min_foreground"]))
        train_ids = rows.loc[rows["split"] == "train", "id"].tolist()
        if not train_ids:
            continue
        plan = plan_runs(train_ids, train["shots"], int(train["subsets"]), [0], int(train["subset_seed"]), False, name)
        wanted.update(i for r in plan if r.regime == FEWSHOT for i in r.ids)
    return [i for i in table["id"] if i in wanted]


def read_views(
    images: zarr.Array, table: pd.DataFrame, ids: list[str], settings: views.ViewSettings
) -> Callable[[slice], np.ndarray]:
    """``read(rows)`` for ``encode_store``: the uint8 views of a slice of the store's rows (``count`` per image)."""
    row_of = {image_id: row for row, image_id in enumerate(table["id"])}

    def read(rows: slice) -> np.ndarray:
        wanted = range(len(ids) * settings.count)[rows]
        sources = [ids[j // settings.count] for j in wanted]
        drawn = {i: views.draw(i, settings) for i in dict.fromkeys(sources)}
        matrices = torch.stack([drawn[i][0][j % settings.count] for i, j in zip(sources, wanted, strict=True)])
        intensity = torch.stack([drawn[i][1][j % settings.count] for i, j in zip(sources, wanted, strict=True)])
        pixels = torch.from_numpy(np.stack([images[row_of[i]] for i in sources]))
        return views.render(pixels, matrices, intensity).numpy()

    return read


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--dataset", required=True)
    args.add_argument("--store", type=Path, required=True, help="prepared Zarr store")
    args.add_argument("--index", type=Path, required=True, help="prepared CSV index")
    args.add_argument("--out", type=Path, required=True, help="views embedding Zarr store to write")
    args.add_argument("--part-id", type=int, default=None)
    args.add_argument("--num-parts", type=int, default=None)
    args = args.parse_args(argv)
    params = load_params(args.params)
    encode, settings = params["encode"], views.ViewSettings.from_params(params.get("augment", {}))
    pin_cpu_numerics(encode)

    group, table = read_index(args.store, args.index)
    ids = fewshot_ids(params, args.dataset, table) if settings.count else []
    log.info("%s: %d views of each of %d few-shot training images", args.dataset, settings.count, len(ids))
    device, choice, checkpoint = encoder_choice(encode)
    identity = embeddings.Identity(
        encode["backbone"],
        backbones.file_sha256(checkpoint),
        views.source_sha256(group.attrs["source_sha256"], settings),
        views.view_ids(ids, settings.count),
        choice.precision,
        choice.runtime,
    )
    encode_store(
        args.out,
        identity,
        read_views(group["images"], table, ids, settings),
        encode,
        device,
        choice,
        f"{args.dataset} views",
        part_from_env(args.part_id, args.num_parts),
    )


if __name__ == "__main__":
    run(main)
