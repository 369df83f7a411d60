"""A backbone's image encoder run once over images, into a sharded embedding store (``autoprompt.data.embeddings``).

``encode_store`` fills one store shard by shard and skips finished shards, so a killed call resumes; several
processes (``part``: ``--part-id/--num-parts``, or torchrun's RANK and WORLD_SIZE) take disjoint sets of shards of the
same store. ``encode_prepared`` encodes a prepared store's images: the encode stage.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm import tqdm

from autoprompt.data import embeddings
from autoprompt.data.embeddings import Donor
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
    donor: embeddings.Donor | None = None,
) -> None:
    """Encode the images of ``identity.ids`` into the store ``out``, shard by shard, skipping finished shards.

    ``read(rows)``: the N x S x S uint8 images of a slice of rows. ``part``: (part id, number of parts) of a job
    shared by several processes. ``donor``: a store of the same encoder whose rows of the same content
    (``identity.rows_sha256``) are copied, not encoded."""
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
    keys = identity.rows_sha256
    reused = [i for s in todo for i in _shard_rows(s, shard_size, n_images) if donor and donor.has(keys[i])]
    if reused:
        log.info("%s: %d of its images encoded before, copied from an earlier store", label, len(reused))
    encoder = None
    if len(reused) < sum(len(_shard_rows(s, shard_size, n_images)) for s in todo):
        cache = Path(encode.runtime_cache)
        encoder = runtimes.build_encoder(name, checkpoint, choice, device, cache, compile=encode.compile)
    with tqdm(
        total=sum(len(_shard_rows(s, shard_size, n_images)) for s in todo),
        unit="image",
        desc=f"encode {label} ({name}, {choice.runtime} {choice.precision}, {device.type})",
        disable=not todo,
    ) as progress:
        for shard in todo:
            rows = _shard_rows(shard, shard_size, n_images)
            result = np.empty((len(rows), *embeddings.SHAPE), np.float16)
            copied = [j for j, i in enumerate(rows) if donor and donor.has(keys[i])]
            if copied:
                result[copied] = donor.embeddings([keys[rows[j]] for j in copied])
            fresh = [j for j in range(len(rows)) if j not in copied]
            if fresh:
                batch = torch.from_numpy(read(slice(rows[0], rows[-1] + 1))[fresh])
                result[fresh] = runtimes.embed(encoder, name, batch, encode.batch_size).numpy()
            embeddings.write_shard(array, out, shard, result)
            progress.update(len(rows))
    if embeddings.finalize(out, n_shards):
        log.info("%s complete: %d embeddings", out, n_images)
    else:
        log.info("%s: this part is done; the store completes when every part has finished", out)


def _shard_rows(shard: int, shard_size: int, n_images: int) -> list[int]:
    return list(range(shard * shard_size, min((shard + 1) * shard_size, n_images)))


def identity(
    encode: EncodeSettings, source_sha256: str, ids: tuple[str, ...], rows_sha256: tuple[str, ...] = ()
) -> embeddings.Identity:
    """What a store encoded by ``encode`` from images of ``source_sha256`` is (the runtime resolved as it runs)."""
    _, choice, checkpoint = encoder_choice(encode)
    return embeddings.Identity(
        encode.backbone, file_sha256(checkpoint), source_sha256, ids, choice.precision, choice.runtime, rows_sha256
    )


def pixels_sha256(image: np.ndarray) -> str:
    """What an embedding of a prepared image is computed from: its pixels (and their shape)."""
    digest = hashlib.sha256(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def encode_prepared(
    prepared: Path,
    out: Path,
    encode: EncodeSettings,
    label: str,
    part: tuple[int, int],
    reuse: bool = False,
    donors: Sequence[Path] = (),
) -> None:
    """Every image of the prepared store ``prepared``, encoded into ``out``. ``reuse``: a store of other images at
    ``out`` is set aside and its embeddings of unchanged images copied, and so are those of the stores ``donors``
    (``autoprompt train``'s work folder, and ``autoprompt suggest``'s store of the whole folder; the DVC stage
    refuses such a store instead)."""
    images = zarr.open_group(prepared, mode="r")
    ids = tuple(images.attrs["ids"])
    keys = tuple(pixels_sha256(images["images"][i]) for i in range(len(ids))) if reuse else ()
    found = identity(encode, images.attrs["source_sha256"], ids, keys)
    previous = embeddings.set_aside(out, found) if reuse else None
    donor = Donor(previous, found, donors if reuse else ())
    encode_store(out, found, lambda rows: images["images"][rows], encode, label, part, donor)
    if previous is not None and out.exists():
        shutil.rmtree(previous)
