"""The embedding store: image embeddings N x 256 x 64 x 64 float16, one image per chunk, sharded.

A store is built under ``<name>.partial`` and moved to its final name only once every shard is written, so
the final path always holds a whole store. Shards are the unit of work and of resumption: a shard counts as
done once its marker ``_progress/shard-<i>`` exists, so a killed run redoes at most the shards it was writing.
Parts of one job (``--part-id/--num-parts``, or torchrun's RANK/WORLD_SIZE) take disjoint sets of shards of the
same partial store. A store's identity (backbone, checkpoint hash, prepared-data hash, runtime, precision, ids) is
in its attributes; a store of another identity is refused, never reused.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from autoprompt.errors import InputError

log = logging.getLogger(__name__)

SHAPE = (256, 64, 64)
IDENTITY_KEYS = ("backbone", "checkpoint_sha256", "source_sha256", "runtime", "precision")
PROGRESS = "_progress"


@dataclass(frozen=True)
class Identity:
    """What an embedding store was made from. ``runtime`` runs the encoder (``torch`` or ``openvino``) and
    ``precision`` is its compute dtype (``float32``, the autocast dtype on a GPU, or OpenVINO's ``bfloat16``): parts
    encoded by different runtimes or at different precisions never share a store."""

    backbone: str
    checkpoint_sha256: str
    source_sha256: str
    ids: tuple[str, ...]
    precision: str = "float32"
    runtime: str = "torch"
    rows_sha256: tuple[str, ...] = ()  # what each row was encoded from (optional): lets a later store reuse rows

    def attrs(self) -> dict:
        attrs = {
            "backbone": self.backbone,
            "checkpoint_sha256": self.checkpoint_sha256,
            "source_sha256": self.source_sha256,
            "runtime": self.runtime,
            "precision": self.precision,
            "ids": list(self.ids),
        }
        return {**attrs, "rows_sha256": list(self.rows_sha256)} if self.rows_sha256 else attrs

    def encoder(self) -> tuple[str, ...]:
        """What computed the embeddings: backbone, checkpoint, runtime and precision."""
        return (self.backbone, self.checkpoint_sha256, self.runtime, self.precision)

    def mismatch(self, attrs: dict) -> str | None:
        """The first attribute in which a store differs from this identity, described; None if none."""
        for key in IDENTITY_KEYS:
            if attrs.get(key) != getattr(self, key):
                return f"{key} {str(attrs.get(key))[:16]} != {str(getattr(self, key))[:16]}"
        if tuple(attrs.get("ids", ())) != self.ids:
            return "its image ids differ"
        return None


def partial_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".partial")


def shard_count(n_images: int, shard_size: int) -> int:
    return (n_images + shard_size - 1) // shard_size


def part_shards(n_shards: int, part_id: int, num_parts: int) -> list[int]:
    """The shards of one part: every ``num_parts``-th, from ``part_id``."""
    if not 0 <= part_id < num_parts:
        raise InputError(f"--part-id {part_id} is outside 0..{num_parts - 1}; pass 0 <= part-id < num-parts")
    return list(range(part_id, n_shards, num_parts))


def _refuse(path: Path, why: str) -> InputError:
    return InputError(
        f"{path}: embedding store made from other inputs ({why}); delete it to encode again "
        "(rm -r it), or set encode.backbone/encode.checkpoint back"
    )


def _create(path: Path, identity: Identity, shard_size: int) -> None:
    """Create the partial store at ``path`` in one rename, so that concurrent parts agree on one store."""
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(tmp, mode="w")
    group.create_array(
        "embeddings",
        shape=(len(identity.ids), *SHAPE),
        chunks=(1, *SHAPE),
        shards=(shard_size, *SHAPE),
        dtype="float16",
        compressors=[BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")],
        fill_value=0,
    )
    group.attrs.update({**identity.attrs(), "shard_size": shard_size})
    (tmp / PROGRESS).mkdir()
    try:
        tmp.rename(path)
    except OSError:  # another part created it first
        shutil.rmtree(tmp, ignore_errors=True)


def open_for_writing(path: Path, identity: Identity, shard_size: int) -> zarr.Array | None:
    """The partial store's array to write shards into, created if needed; None when ``path`` is complete."""
    path = Path(path)
    if path.exists():
        why = identity.mismatch(dict(zarr.open_group(path, mode="r").attrs))
        if why:
            raise _refuse(path, why)
        return None
    partial = partial_path(path)
    if not partial.exists():
        partial.parent.mkdir(parents=True, exist_ok=True)
        _create(partial, identity, shard_size)
    group = zarr.open_group(partial, mode="r+")
    why = identity.mismatch(dict(group.attrs))
    if why:
        raise _refuse(partial, why)
    if group.attrs["shard_size"] != shard_size:
        raise _refuse(partial, f"shard_size {group.attrs['shard_size']} != {shard_size}")
    return group["embeddings"]


def _marker(partial: Path, shard: int) -> Path:
    return partial / PROGRESS / f"shard-{shard:06d}"


def done_shards(path: Path, n_shards: int) -> set[int]:
    partial = partial_path(path)
    return {i for i in range(n_shards) if _marker(partial, i).exists()}


def write_shard(array: zarr.Array, path: Path, shard: int, embeddings: np.ndarray) -> None:
    """Write one whole shard of embeddings (shard_size x 256 x 64 x 64, fewer for the last), then mark it done."""
    shard_size = array.shards[0]
    start = shard * shard_size
    stop = min(start + shard_size, array.shape[0])
    assert embeddings.shape == (stop - start, *SHAPE), (
        f"shard {shard} needs {(stop - start, *SHAPE)} embeddings, got {embeddings.shape}"
    )
    array[start:stop] = embeddings.astype(np.float16)
    _marker(partial_path(path), shard).touch()


def finalize(path: Path, n_shards: int) -> bool:
    """Move a partial store whose shards are all done to its final name; True when ``path`` is complete."""
    path = Path(path)
    partial = partial_path(path)
    if path.exists():
        return True
    if len(done_shards(path, n_shards)) < n_shards:
        return False
    try:
        partial.rename(path)
    except FileNotFoundError:  # another part finalized it first
        return path.exists()
    shutil.rmtree(path / PROGRESS, ignore_errors=True)
    return True


def previous_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".previous")


def set_aside(path: Path, identity: Identity) -> Path | None:
    """Where a store of ``identity`` is to be written at ``path``, move a complete store of other inputs that stands
    there aside (``<name>.previous``), for ``Donor`` to reuse its rows; a store set aside earlier is kept. Returns the
    store set aside, or None. Nothing is deleted here: the caller removes it once the new store is whole."""
    path, previous = Path(path), previous_path(path)
    if path.exists() and identity.mismatch(dict(zarr.open_group(path, mode="r").attrs)):
        shutil.rmtree(partial_path(path), ignore_errors=True)  # a partial store of the old inputs, if any
        if previous.exists():
            shutil.rmtree(path)  # an earlier set-aside store is the one of the older inputs
        else:
            path.rename(previous)
    return previous if previous.exists() else None


class Donor:
    """The rows of complete stores that a new store of the same encoder may copy instead of encoding: those whose
    ``rows_sha256`` (what the row was encoded from) the new store's rows share. ``path``: the new store's own former
    version (``set_aside``); ``more``: other stores to copy from (``autoprompt suggest``'s store of a whole folder),
    read where they exist; the first store holding a row gives it."""

    def __init__(self, path: Path | None, identity: Identity, more: Sequence[Path] = ()) -> None:
        self.rows: dict[str, tuple[zarr.Array, int]] = {}
        if not identity.rows_sha256:
            return
        for store in (path, *more):
            if store is None or not Path(store).exists():
                continue
            group = zarr.open_group(store, mode="r")
            attrs = dict(group.attrs)
            old = Identity(
                attrs["backbone"], attrs["checkpoint_sha256"], attrs["source_sha256"], tuple(attrs["ids"]),
                attrs.get("precision", "float32"), attrs.get("runtime", "torch"), tuple(attrs.get("rows_sha256", ())),
            )  # fmt: skip
            if old.encoder() == identity.encoder():
                for row, key in enumerate(old.rows_sha256):
                    self.rows.setdefault(key, (group["embeddings"], row))

    def __bool__(self) -> bool:
        return bool(self.rows)

    def has(self, key: str) -> bool:
        return key in self.rows

    def embeddings(self, keys: list[str]) -> np.ndarray:
        """K x 256 x 64 x 64 float16 embeddings of rows these stores hold."""
        return np.stack([array[row] for array, row in (self.rows[key] for key in keys)])


def open_embeddings(path: Path) -> zarr.Group:
    """A complete store, for reading."""
    path = Path(path)
    if not path.exists():
        hint = (
            " (an unfinished encode is in .partial: run encode again to resume it)"
            if partial_path(path).exists()
            else ""
        )
        raise InputError(f"{path}: embedding store not found{hint}; run `dvc repro` (the encode stage) first")
    return zarr.open_group(path, mode="r")


def check_source(group: zarr.Group, path: Path, backbone: str, source_sha256: str) -> None:
    """Refuse a store made with another backbone or from other prepared data than the caller's."""
    attrs = dict(group.attrs)
    if attrs.get("backbone") != backbone:
        raise _refuse(path, f"backbone {attrs.get('backbone')} != {backbone}")
    if attrs.get("source_sha256") != source_sha256:
        raise _refuse(path, "the prepared images changed since it was encoded")


def pooled(array: zarr.Array, rows: np.ndarray, batch: int = 32) -> np.ndarray:
    """N x 256 float32: each of ``rows`` of a store's N x 256 x 64 x 64 ``array`` averaged over its 64 x 64 grid and
    L2-normalised (``training.suggest``'s features); runs of consecutive rows are read together, ``batch`` at most.
    (Any N x C x H x W array gives N x C.)"""
    rows = np.asarray(rows, np.int64)
    out = np.empty((len(rows), array.shape[1]), np.float32)
    means: dict[int, np.ndarray] = {}
    unique = np.unique(rows)
    runs = np.split(unique, np.flatnonzero(np.diff(unique) != 1) + 1) if len(unique) else []
    for run in runs:
        for first in range(0, len(run), batch):
            part = run[first : first + batch]
            block = array[int(part[0]) : int(part[-1]) + 1].astype(np.float32).mean(axis=(2, 3))
            means.update(zip(part.tolist(), block, strict=True))
    for i, row in enumerate(rows.tolist()):
        out[i] = means[row]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1)
