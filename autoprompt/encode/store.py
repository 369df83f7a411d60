"""A backbone's image encoder run once over images, into a sharded embedding store (``autoprompt.data.embeddings``).

``encode_store`` fills one store shard by shard and skips finished shards, so a killed call resumes; several
processes (``part``: ``--part-id/--num-parts``, or torchrun's RANK and WORLD_SIZE) take disjoint sets of shards of the
same store. ``encode_prepared`` encodes a prepared store's images: the encode stage.
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
from autoprompt.device import select_device
from autoprompt.io import file_sha256
from autoprompt.model import checkpoints, runtimes
from autoprompt.settings import EncodeSettings

log = logging.getLogger(__name__)


def part_from_env(part_id: int | None, num_parts: int | None) -> tuple[int, int]:
    """Explicit flags win; else torchrun's RANK/WORLD_SIZE; else one part."""
    if part_id is not None or num_parts is not None:
        return part_id or 0, num_parts or 1
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def encoder_choice(encode: EncodeSettings) -> tuple[torch.device, runtimes.Choice, Path]:
    """The ``encode`` section's device (a torchrun process's own GPU), runtime and checkpoint."""
    checkpoint = checkpoints.resolve_checkpoint(encode.backbone, encode.checkpoint, encode.key("checkpoint"))
    device = select_device(encode.device, encode.key("device"))
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    choice = runtimes.choose(encode.runtime, device, encode.cpu_precision, encode.gpu_autocast, encode.key)
    return device, choice, checkpoint


def encode_store(
    out: Path,
    identity: embeddings.Identity,
    read: Callable[[slice], np.ndarray],
    encode: EncodeSettings,
    label: str,
    part: tuple[int, int] = (0, 1),
) -> None:
    """Encode the images of ``identity.ids`` into the store ``out``, shard by shard, skipping finished shards.

    ``read(rows)``: the N x S x S uint8 images of a slice of rows. ``part``: (part id, number of parts) of a job
    shared by several processes."""
    device, choice, checkpoint = encoder_choice(encode)
    name, shard_size = identity.backbone, encode.shard_size
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
        cache = Path(encode.runtime_cache)
        encoder = runtimes.build_encoder(name, checkpoint, choice, device, cache, compile=encode.compile)
        with tqdm(
            total=sum(min(shard_size, n_images - s * shard_size) for s in todo),
            unit="image",
            desc=f"encode {label} ({name}, {choice.runtime} {choice.precision}, {device.type})",
        ) as progress:
            for shard in todo:
                batch = torch.from_numpy(read(slice(shard * shard_size, min((shard + 1) * shard_size, n_images))))
                result = runtimes.embed(encoder, name, batch, encode.batch_size)
                embeddings.write_shard(array, out, shard, result.numpy())
                progress.update(len(batch))
    if embeddings.finalize(out, n_shards):
        log.info("%s complete: %d embeddings", out, n_images)
    else:
        log.info("%s: this part is done; the store completes when every part has finished", out)


def identity(encode: EncodeSettings, source_sha256: str, ids: tuple[str, ...]) -> embeddings.Identity:
    """What a store encoded by ``encode`` from images of ``source_sha256`` is (the runtime resolved as it runs)."""
    _, choice, checkpoint = encoder_choice(encode)
    return embeddings.Identity(
        encode.backbone, file_sha256(checkpoint), source_sha256, ids, choice.precision, choice.runtime
    )


def encode_prepared(prepared: Path, out: Path, encode: EncodeSettings, label: str, part: tuple[int, int]) -> None:
    """Every image of the prepared store ``prepared``, encoded into ``out``."""
    images = zarr.open_group(prepared, mode="r")
    found = identity(encode, images.attrs["source_sha256"], tuple(images.attrs["ids"]))
    encode_store(out, found, lambda rows: images["images"][rows], encode, label, part)
