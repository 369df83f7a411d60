"""augment@<dataset>: encode augmented views of the images the few-shot runs train on (docs/paper.md: Augmented views).

The few-shot subsets of every task of the dataset (``train.shots``, ``subsets``, ``subset_seed``, ``draw``) are drawn as
the train stage draws them (``draw: suggest`` and ``kcenter`` read the dataset's embeddings, ``--embeddings``), and each
of their images gets ``augment.count`` views, flipped, zoomed, shifted and changed in intensity
(``autoprompt.data.views``), encoded like ``encode`` (same runtime, resumable shards). The store's ``source_sha256``
covers the prepared images and the ``augment`` settings, so a store made with other settings is refused by the train
stage.
"""

from __future__ import annotations

import logging
from pathlib import Path

from autoprompt.console import run
from autoprompt.data.embeddings import check_source, open_embeddings
from autoprompt.data.prepared import read_index
from autoprompt.device import pin_cpu_numerics
from autoprompt.encode.augmented import encode_views
from autoprompt.encode.store import part_from_env
from autoprompt.errors import InputError
from autoprompt.settings import load_settings
from autoprompt.training.fewshot import SPREAD_RULES, fewshot_ids
from stages import parser

log = logging.getLogger("augment")


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--dataset", required=True)
    args.add_argument("--store", type=Path, required=True, help="prepared Zarr store")
    args.add_argument("--index", type=Path, required=True, help="prepared CSV index")
    args.add_argument("--out", type=Path, required=True, help="views embedding Zarr store to write")
    args.add_argument(
        "--embeddings", type=Path, help="the dataset's embedding store, read by train.draw: suggest and kcenter"
    )
    args.add_argument("--part-id", type=int, default=None)
    args.add_argument("--num-parts", type=int, default=None)
    args = args.parse_args(argv)
    settings = load_settings(args.params)
    augment = settings.augment
    pin_cpu_numerics(settings.encode.threads)

    group, table = read_index(args.store, args.index)
    tasks = {name: spec.class_name for name, spec in settings.tasks.items() if spec.dataset == args.dataset}
    store = None
    if augment.count and settings.train.draw in SPREAD_RULES:
        if args.embeddings is None:
            raise InputError(
                f"{settings.train.key('draw')} is {settings.train.draw}, which reads the embeddings; pass --embeddings"
            )
        store = open_embeddings(args.embeddings)
        check_source(store, args.embeddings, settings.encode.backbone, group.attrs["source_sha256"])
    ids = fewshot_ids(table, tasks, settings.prepare.min_foreground, settings.train, store) if augment.count else []
    log.info("%s: %d views of each of %d few-shot training images", args.dataset, augment.count, len(ids))
    part = part_from_env(args.part_id, args.num_parts)
    encode_views(group, table, ids, args.out, settings.encode, augment, f"{args.dataset} views", part)


if __name__ == "__main__":
    run(main)
