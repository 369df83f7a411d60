"""encode@<dataset>: run a backbone's image encoder once per prepared image into a sharded Zarr store.

Resumable (finished shards are kept) and splittable: ``--part-id/--num-parts``, or torchrun's RANK and
WORLD_SIZE, give each process a disjoint set of shards of the same store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm import tqdm

from autoprompt.data import embeddings
from autoprompt.model import backbones, runtimes
from autoprompt.stage import load_params, parser, pin_cpu_numerics, run, select_device

log = logging.getLogger("encode")


def part_from_env(part_id: int | None, num_parts: int | None) -> tuple[int, int]:
    """Explicit flags win; else torchrun's RANK/WORLD_SIZE; else one part."""
    if part_id is not None or num_parts is not None:
        return part_id or 0, num_parts or 1
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--dataset", required=True)
    args.add_argument("--store", type=Path, required=True, help="prepared Zarr store")
    args.add_argument("--out", type=Path, required=True, help="embedding Zarr store to write")
    args.add_argument("--part-id", type=int, default=None)
    args.add_argument("--num-parts", type=int, default=None)
    args = args.parse_args(argv)
    params = load_params(args.params)["encode"]
    pin_cpu_numerics(params)
    part_id, num_parts = part_from_env(args.part_id, args.num_parts)

    images = zarr.open_group(args.store, mode="r")
    device, choice, checkpoint = encoder_choice(params)
    identity = embeddings.Identity(
        params["backbone"],
        backbones.file_sha256(checkpoint),
        images.attrs["source_sha256"],
        tuple(images.attrs["ids"]),
        choice.precision,
        choice.runtime,
    )
    encode_store(
        args.out,
        identity,
        lambda rows: images["images"][rows],
        params,
        device,
        choice,
        args.dataset,
        (part_id, num_parts),
    )


def encoder_choice(params: dict) -> tuple[torch.device, runtimes.Choice, Path]:
    """The ``encode`` section's device (a torchrun process's own GPU), runtime and checkpoint."""
    checkpoint = backbones.resolve_checkpoint(params["backbone"], params.get("checkpoint"))
    device = select_device(params["device"])
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    choice = runtimes.choose(params["runtime"], device, params["cpu_precision"], params["gpu_autocast"])
    return device, choice, checkpoint


def encode_store(
    out: Path,
    identity: embeddings.Identity,
    read: Callable[[slice], np.ndarray],
    params: dict,
    device: torch.device,
    choice: runtimes.Choice,
    label: str,
    part: tuple[int, int] = (0, 1),
) -> None:
    """Encode the images of ``identity.ids`` into the store ``out``, shard by shard, skipping finished shards.

    ``read(rows)``: the N x S x S uint8 images of a slice of rows. ``params``: the ``encode`` section. ``part``:
    (part id, number of parts) of a job shared by several processes."""
    name, shard_size = identity.backbone, int(params["shard_size"])
    n_images = len(identity.ids)
    n_shards = embeddings.shard_count(n_images, shard_size)
    array = embeddings.open_for_writing(out, identity, shard_size)
    if array is None:
        log.info("%s is complete; nothing to do", out)
        return
    done = embeddings.done_shards(out, n_shards)
    todo = [s for s in embeddings.part_shards(n_shards, *part) if s not in done]
    log.info(
        "%s: part %d/%d, %d of its shards to encode (%d of %d done overall)",
        label,
        *part,
        len(todo),
        len(done),
        n_shards,
    )
    if todo:
        checkpoint = backbones.resolve_checkpoint(name, params.get("checkpoint"))
        cache = Path(params["runtime_cache"])
        encoder = runtimes.build_encoder(name, checkpoint, choice, device, cache, compile=bool(params["compile"]))
        with tqdm(
            total=sum(min(shard_size, n_images - s * shard_size) for s in todo),
            unit="image",
            desc=f"encode {label} ({name}, {choice.runtime} {choice.precision}, {device.type})",
        ) as progress:
            for shard in todo:
                batch = torch.from_numpy(read(slice(shard * shard_size, min((shard + 1) * shard_size, n_images))))
                result = backbones.embed(encoder, name, batch, int(params["batch_size"]))
                embeddings.write_shard(array, out, shard, result.numpy())
                progress.update(len(batch))
    if embeddings.finalize(out, n_shards):
        log.info("%s complete: %d embeddings", out, n_images)
    else:
        log.info("%s: this part is done; the store completes when every part has finished", out)


if __name__ == "__main__":
    run(main)
