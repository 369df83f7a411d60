"""Reading a task's rows from the Zarr stores: zarr's orthogonal selection against runs of slices (``Task.load_*``).

Two stores laid out as the pipeline writes them, filled with random values: embeddings (N x 256 x 64 x 64 float16,
one image per chunk, ``encode.shard_size`` images per shard, Blosc zstd) and prepared images (N x 640 x 640 uint8,
one image per chunk, unsharded). For each store and count, a random set of rows (as a split or a few-shot subset
picks them) is read both ways, each read in a fresh process so that its peak memory is its own; repeats are
interleaved and the medians are reported, with the ratios of the two, beside a process that reads one row into an
output of the same size (``one_row``: imports and zarr's set-up).

    python -m bench.timings read_rows [--images 240] [--counts 30 120] [--repeats 3]

Writes ``bench/results/read_rows.json``.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import time
from pathlib import Path

import numpy as np
import zarr

from autoprompt.data import embeddings
from autoprompt.data.tasks import _select
from bench.lib import common

log = logging.getLogger("bench.read_rows")

METHODS = ("orthogonal", "slices")
REFERENCE = "one_row"  # one row read into an output of the same size: the process without the selection


def make_stores(folder: Path, images: int, shard_size: int, seed: int) -> dict[str, Path]:
    """The embedding store (as ``encode`` writes it) and a prepared-images array (as ``prepare`` does)."""
    rng = np.random.default_rng(seed)
    path = folder / "embeddings.zarr"
    ids = tuple(f"{i:03d}" for i in range(images))
    array = embeddings.open_for_writing(
        path, embeddings.Identity("bench", "0" * 64, "bench.read_rows", ids), shard_size
    )
    n_shards = embeddings.shard_count(images, shard_size)
    for shard in range(n_shards):
        rows = min(shard_size, images - shard * shard_size)
        values = rng.standard_normal((rows, *embeddings.SHAPE), dtype=np.float32).astype(np.float16)
        embeddings.write_shard(array, path, shard, values)
    assert embeddings.finalize(path, n_shards), f"{path}: store not complete"
    prepared = zarr.open_group(folder / "prepared.zarr", mode="w")
    prepared.create_array("images", shape=(images, 640, 640), chunks=(1, 640, 640), dtype="uint8")
    prepared["images"][:] = rng.integers(0, 256, (images, 640, 640), dtype=np.uint8)
    return {"embeddings": path / "embeddings", "images": folder / "prepared.zarr" / "images"}


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM: reset by exec, unlike ru_maxrss, which a spawned child inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM (Linux only)")


def read_once(array_path: str, index: list[int], method: str) -> tuple[float, float]:
    """In a fresh process: seconds and peak resident memory (MiB) of one read of ``index`` (``one_row``: one row read,
    which sets up what any read needs, into an output of the same size)."""
    array = zarr.open_array(array_path, mode="r")
    rows = np.asarray(index)
    start = time.perf_counter()
    if method == REFERENCE:
        data = np.repeat(array[:1], len(rows), axis=0)
    elif method == "orthogonal":
        order = np.argsort(rows)
        data = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
        data[order] = array.get_orthogonal_selection((rows[order],))
    else:
        data = _select(array, rows)
    seconds = time.perf_counter() - start
    assert data.shape[0] == len(rows)
    return seconds, peak_mib()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=240, help="rows in each store")
    parser.add_argument("--counts", type=int, nargs="+", default=[30, 120], help="rows read")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=16, help="encode.shard_size")
    parser.add_argument("--seed", type=int, default=0)
    args, machine = common.parse_and_start(parser)
    context = multiprocessing.get_context("spawn")
    results = {}
    with common.scratch_dir() as scratch:
        stores = make_stores(Path(scratch), args.images, args.shard_size, args.seed)
        rng = np.random.default_rng(args.seed)
        for store, path in stores.items():
            for count in args.counts:
                index = rng.choice(args.images, count, replace=False).tolist()
                measured = {m: {"seconds": [], "peak_mib": []} for m in (REFERENCE, *METHODS)}
                for _ in range(args.repeats):
                    for method in (REFERENCE, *METHODS):  # interleaved
                        with context.Pool(1) as pool:
                            seconds, peak = pool.apply(read_once, (str(path), index, method))
                        measured[method]["seconds"].append(round(seconds, 3))
                        measured[method]["peak_mib"].append(round(peak, 1))
                row = {
                    m: {k: common.median(v) for k, v in runs.items()} | {"runs": runs} for m, runs in measured.items()
                }
                row["orthogonal_over_slices"] = {
                    k: round(row["orthogonal"][k] / max(row["slices"][k], 1e-9), 1) for k in ("seconds", "peak_mib")
                }
                array = zarr.open_array(str(path), mode="r")
                row["selected_mib"] = round(count * np.prod(array.shape[1:]) * array.dtype.itemsize / 2**20, 1)
                results[f"{store}/{count}"] = row
                log.info("%s, %d rows: %s", store, count, row["orthogonal_over_slices"])
    common.write_result(
        "read_rows",
        {
            "machine": machine,
            "zarr_version": zarr.__version__,
            "settings": {
                "images": args.images,
                "counts": args.counts,
                "repeats": args.repeats,
                "shard_size": args.shard_size,
                "seed": args.seed,
            },
            "results": results,
            "notes": "median seconds of one read in a fresh process, and its peak resident memory (MiB, VmHWM); "
            "one_row: a process that reads one row into an output of the same size (imports, zarr set-up); "
            "orthogonal: zarr's get_orthogonal_selection with the sorted rows (Task.load_* before); slices: "
            "autoprompt.data.tasks._select, one slice per run of consecutive rows",
        },
    )
