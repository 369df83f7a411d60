"""Bytes per embedding on disk in the project's Zarr store, for real LiteMedSAM embeddings of real HC18 images.

Writes the store exactly as the encode stage does (``embeddings.open_for_writing`` / ``write_shard`` /
``finalize``, one image per chunk, Blosc zstd + shuffle), once with the real embeddings and once with random-normal
float16 embeddings of the same count, and compares both with raw float16 (256 * 64 * 64 * 2 bytes).

    python -m bench.timings storage [--hc18 /path/to/hc18-sample]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from autoprompt.data import embeddings
from autoprompt.io import file_sha256
from autoprompt.model import backbones, checkpoints, runtimes
from bench.lib import common

log = logging.getLogger("bench.storage")

RAW_BYTES = int(np.prod(embeddings.SHAPE)) * 2  # float16


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def write_store(
    path: Path, values: np.ndarray, ids: list[str], backbone: str, checkpoint_sha256: str, shard_size: int
) -> dict:
    """Write ``values`` (N x 256 x 64 x 64) as the encode stage does; sizes of the finished store."""
    identity = embeddings.Identity(backbone, checkpoint_sha256, "bench-storage", tuple(ids))
    n_shards = embeddings.shard_count(len(values), shard_size)
    array = embeddings.open_for_writing(path, identity, shard_size)
    start = time.perf_counter()
    for shard in range(n_shards):
        embeddings.write_shard(array, path, shard, values[shard * shard_size : (shard + 1) * shard_size])
    write_seconds = time.perf_counter() - start
    assert embeddings.finalize(path, n_shards), f"{path}: store not complete after writing every shard"
    group = embeddings.open_embeddings(path)
    start = time.perf_counter()
    back = group["embeddings"][:]
    read_seconds = time.perf_counter() - start
    assert np.array_equal(back, values.astype(np.float16)), "the store does not give back what was written"
    total = tree_bytes(path)
    data = tree_bytes(path / "embeddings" / "c") if (path / "embeddings" / "c").is_dir() else total
    per_embedding = total / len(values)
    row = {
        "images": len(values),
        "store_bytes_total": total,
        "chunk_data_bytes": data,
        "metadata_bytes": total - data,
        "bytes_per_embedding": round(per_embedding, 1),
        "data_bytes_per_embedding": round(data / len(values), 1),
        "raw_float16_bytes_per_embedding": RAW_BYTES,
        "ratio_to_raw": round(per_embedding / RAW_BYTES, 4),
        "compression_factor": round(RAW_BYTES / per_embedding, 3),
        "write_seconds": round(write_seconds, 3),
        "read_seconds": round(read_seconds, 3),
    }
    log.info(
        "%s: %.0f bytes/embedding (%.3f of raw float16, %.2fx smaller)",
        path.name,
        per_embedding,
        row["ratio_to_raw"],
        row["compression_factor"],
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="HC18 sample, official layout")
    parser.add_argument("--images", type=int, default=16, help="images to encode (one shard of 16 by default)")
    parser.add_argument("--shard-size", type=int, default=16, help="params.yaml encode.shard_size")
    parser.add_argument("--batch-size", type=int, default=1, help="encode batch size (CPU float32)")
    args, machine = common.parse_and_start(parser)

    device = common.gpu_device() or torch.device("cpu")
    checkpoint = checkpoints.resolve_checkpoint("lite_medsam", None)
    precision = "bfloat16" if device.type == "cuda" else "float32"
    encoder = runtimes.TorchEncoder(backbones.build_image_encoder("lite_medsam", checkpoint), device, precision)
    with common.scratch_dir() as scratch:
        scratch = Path(scratch)
        data = common.load_hc18(args.hc18, args.images, 640, scratch)
        start = time.perf_counter()
        real = runtimes.embed(encoder, "lite_medsam", data["images"], args.batch_size).numpy()
        encode_seconds = time.perf_counter() - start
        log.info("encoded %d images in %.1f s on %s", len(real), encode_seconds, device.type)
        generator = np.random.default_rng(0)
        noise = generator.standard_normal(real.shape, dtype=np.float32).astype(np.float16)
        sha = file_sha256(checkpoint)
        stores = {
            "real_lite_medsam": write_store(
                scratch / "real.zarr", real, data["ids"], "lite_medsam", sha, args.shard_size
            ),
            "random_normal": write_store(
                scratch / "random.zarr", noise, data["ids"], "lite_medsam", sha, args.shard_size
            ),
        }
    real32 = real.astype(np.float32)
    common.write_result(
        "storage",
        {
            "benchmark": "storage",
            "what": "bytes per embedding (N x 256 x 64 x 64 float16) in the embedding Zarr store "
            "(autoprompt.data.embeddings: one image per chunk, sharded, Blosc zstd level 5 + shuffle), total store "
            "bytes (metadata and shard indexes included) / images",
            "machine": machine,
            "settings": {
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "backbone": "lite_medsam (packaged weights)",
                "encode": f"{device.type}, {'bfloat16 autocast' if precision == 'bfloat16' else 'float32'}",
                "random": "numpy default_rng(0).standard_normal, cast to float16",
            },
            "data": {"source": data["source"], "ids": data["ids"]},
            "encode_seconds": round(encode_seconds, 2),
            "real_embedding_stats": {
                "mean": float(real32.mean()),
                "std": float(real32.std()),
                "min": float(real32.min()),
                "max": float(real32.max()),
            },
            "raw_float16_bytes_per_embedding": RAW_BYTES,
            "stores": stores,
            "real_over_random_bytes": round(
                stores["real_lite_medsam"]["bytes_per_embedding"] / stores["random_normal"]["bytes_per_embedding"], 4
            ),
        },
    )
