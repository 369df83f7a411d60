"""The sharded embedding store: layout, identity checks, parts, resumption, and the encode stage end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from autoprompt.data import embeddings
from autoprompt.data.embeddings import Identity
from autoprompt.data.phantoms.hc18 import write_hc18_phantoms
from autoprompt.data.tasks import _select
from autoprompt.errors import InputError
from autoprompt.io import file_sha256
from autoprompt.model import checkpoints, runtimes
from tests.helpers import encode_section

N_IMAGES, SHARD_SIZE = 5, 2  # three shards, the last one short


def _identity(**changes) -> Identity:
    fields = {
        "backbone": "lite_medsam",
        "checkpoint_sha256": "c" * 64,
        "source_sha256": "s" * 64,
        "ids": tuple(f"{k:03d}_HC" for k in range(N_IMAGES)),
    }
    return Identity(**{**fields, **changes})


def _data(n: int = N_IMAGES) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *embeddings.SHAPE)).astype(np.float32)


def _rows(shard: int) -> slice:
    return slice(shard * SHARD_SIZE, min((shard + 1) * SHARD_SIZE, N_IMAGES))


def _write_all(path: Path, data: np.ndarray) -> None:
    array = embeddings.open_for_writing(path, _identity(), SHARD_SIZE)
    n_shards = embeddings.shard_count(N_IMAGES, SHARD_SIZE)
    for shard in range(n_shards):
        embeddings.write_shard(array, path, shard, data[_rows(shard)])
    assert embeddings.finalize(path, n_shards)


def test_store_layout_and_finalize(tmp_path: Path) -> None:
    """float16, one image per chunk, shard_size images per shard, identity in the attributes; the partial
    store moves to its final name only once every shard is done."""
    path = tmp_path / "embeddings" / "hc18.zarr"
    data = _data()
    array = embeddings.open_for_writing(path, _identity(), SHARD_SIZE)
    partial = embeddings.partial_path(path)
    assert partial == tmp_path / "embeddings" / "hc18.zarr.partial" and partial.is_dir() and not path.exists()
    assert array.shape == (N_IMAGES, 256, 64, 64)
    assert array.chunks == (1, 256, 64, 64)
    assert array.shards == (SHARD_SIZE, 256, 64, 64)
    assert array.dtype == np.float16

    embeddings.write_shard(array, path, 0, data[_rows(0)])
    embeddings.write_shard(array, path, 2, data[_rows(2)])
    assert not embeddings.finalize(path, 3), "finalized with a shard missing"
    assert partial.is_dir() and not path.exists()
    embeddings.write_shard(array, path, 1, data[_rows(1)])
    assert embeddings.finalize(path, 3)
    assert path.is_dir() and not partial.exists()
    assert not (path / embeddings.PROGRESS).exists(), "progress markers left in the final store"
    assert embeddings.finalize(path, 3), "a complete store is complete"

    group = embeddings.open_embeddings(path)
    stored = group["embeddings"]
    assert stored.dtype == np.float16
    np.testing.assert_array_equal(stored[:], data.astype(np.float16))
    shard_files = sorted(p for p in (path / "embeddings" / "c").rglob("*") if p.is_file())
    assert len(shard_files) == 3, f"expected one file per shard, got {shard_files}"
    assert dict(group.attrs) == {**_identity().attrs(), "shard_size": SHARD_SIZE}


@pytest.mark.parametrize("rows", [[4, 0, 1, 3], [2], [], [1, 1, 4], [4, 3, 2, 1, 0]])
def test_rows_are_read_in_the_order_asked(tmp_path: Path, rows: list[int]) -> None:
    """A task's rows (any order, gaps across shards, repeats) come back as ``array[rows]``, read as slices."""
    path = tmp_path / "hc18.zarr"
    data = _data()
    _write_all(path, data)
    array = embeddings.open_embeddings(path)["embeddings"]
    out = _select(array, np.asarray(rows, dtype=int))
    assert out.shape == (len(rows), *embeddings.SHAPE) and out.dtype == np.float16
    np.testing.assert_array_equal(out, data.astype(np.float16)[rows])


def test_write_shard_checks_its_size(tmp_path: Path) -> None:
    path = tmp_path / "e.zarr"
    array = embeddings.open_for_writing(path, _identity(), SHARD_SIZE)
    with pytest.raises(AssertionError, match="shard 2 needs"):
        embeddings.write_shard(array, path, 2, _data(2))  # the last shard holds one image
    assert embeddings.done_shards(path, 3) == set()


def test_resume_after_a_killed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    """Shards done before the kill are kept; a shard written without its marker is redone; only the rest are
    written; the result equals an uninterrupted store."""
    data = _data()
    path = tmp_path / "resumed.zarr"
    first = embeddings.open_for_writing(path, _identity(), SHARD_SIZE)
    embeddings.write_shard(first, path, 0, data[_rows(0)])
    embeddings.write_shard(first, path, 2, data[_rows(2)])
    first[_rows(1)] = np.full((2, *embeddings.SHAPE), 7.0, np.float16)  # killed before its marker: not done

    second = embeddings.open_for_writing(path, _identity(), SHARD_SIZE)
    assert second is not None
    done = embeddings.done_shards(path, 3)
    assert done == {0, 2}
    written = []
    for shard in (s for s in embeddings.part_shards(3, 0, 1) if s not in done):
        embeddings.write_shard(second, path, shard, data[_rows(shard)])
        written.append(shard)
    assert written == [1]
    assert embeddings.finalize(path, 3)

    reference = tmp_path / "uninterrupted.zarr"
    _write_all(reference, data)
    np.testing.assert_array_equal(
        zarr.open_group(path, mode="r")["embeddings"][:], zarr.open_group(reference, mode="r")["embeddings"][:]
    )
    assert embeddings.open_for_writing(path, _identity(), SHARD_SIZE) is None, "a complete store is reused"


@pytest.mark.parametrize(("n_shards", "num_parts"), [(10, 3), (7, 3), (2, 3), (5, 1)])
def test_part_shards_are_disjoint_and_cover_everything(n_shards: int, num_parts: int) -> None:
    parts = [embeddings.part_shards(n_shards, part, num_parts) for part in range(num_parts)]
    flat = [shard for part in parts for shard in part]
    assert sorted(flat) == list(range(n_shards))
    assert len(flat) == len(set(flat))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1, "unbalanced parts"


@pytest.mark.parametrize(("part_id", "num_parts"), [(3, 3), (-1, 3), (0, 0)])
def test_bad_part_id(part_id: int, num_parts: int) -> None:
    with pytest.raises(InputError, match="part-id"):
        embeddings.part_shards(10, part_id, num_parts)


def test_shard_count() -> None:
    assert [embeddings.shard_count(n, 4) for n in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]


@pytest.mark.parametrize(
    "other",
    [
        {"backbone": "medsam_vit_b"},
        {"checkpoint_sha256": "d" * 64},
        {"source_sha256": "t" * 64},
        {"ids": tuple(f"{k:03d}_HC" for k in range(1, N_IMAGES + 1))},
    ],
)
def test_store_of_another_identity_is_refused(tmp_path: Path, other: dict) -> None:
    """A complete or partial store made from other inputs is refused, naming its path and the fix."""
    path = tmp_path / "hc18.zarr"
    _write_all(path, _data())
    partial_only = tmp_path / "other.zarr"
    embeddings.open_for_writing(partial_only, _identity(), SHARD_SIZE)
    for store, named in ((path, path), (partial_only, embeddings.partial_path(partial_only))):
        with pytest.raises(InputError) as error:
            embeddings.open_for_writing(store, _identity(**other), SHARD_SIZE)
        message = str(error.value)
        assert str(named) in message and "\n" not in message
        assert "rm -r" in message and "encode.backbone" in message


def test_partial_store_of_another_shard_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hc18.zarr"
    embeddings.open_for_writing(path, _identity(), SHARD_SIZE)
    with pytest.raises(InputError, match="shard_size"):
        embeddings.open_for_writing(path, _identity(), SHARD_SIZE + 1)


def test_open_embeddings_and_check_source(tmp_path: Path) -> None:
    path = tmp_path / "hc18.zarr"
    with pytest.raises(InputError, match="run `dvc repro`"):
        embeddings.open_embeddings(path)
    embeddings.open_for_writing(path, _identity(), SHARD_SIZE)
    with pytest.raises(InputError, match="resume"):
        embeddings.open_embeddings(path)
    _write_all(tmp_path / "done.zarr", _data())
    group = embeddings.open_embeddings(tmp_path / "done.zarr")
    embeddings.check_source(group, path, "lite_medsam", "s" * 64)
    with pytest.raises(InputError, match="backbone"):
        embeddings.check_source(group, path, "medsam_vit_b", "s" * 64)
    with pytest.raises(InputError, match="prepared images changed"):
        embeddings.check_source(group, path, "lite_medsam", "x" * 64)


# --- the encode stage end to end, on three phantom images with LiteMedSAM ---


def _params(tmp_path: Path) -> Path:
    split = {"train": 1, "val": 1, "test": 1}
    params = {
        "datasets": ["hc18"],
        "prepare": {"seed": 0, "on_error": "stop", "min_foreground": 10, "hc18": {"crop": 256, "split": split}},
        "encode": encode_section(batch_size=1, shard_size=1),
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.slow
def test_encode_stage_resumes_after_a_failure(tmp_path: Path, monkeypatch) -> None:
    """An error after the first shard leaves a resumable .partial; the rerun encodes only the missing shards."""
    from stages import encode, prepare

    raw, store, index = tmp_path / "raw", tmp_path / "prepared" / "hc18.zarr", tmp_path / "prepared" / "hc18.csv"
    out = tmp_path / "embeddings" / "hc18.zarr"
    params = _params(tmp_path)
    write_hc18_phantoms(raw, subjects=3, size=(320, 240), seed=1, second_image=0.0)
    prepare.main(
        ["--params", str(params), "--dataset", "hc18", "--raw", str(raw), "--store", str(store), "--index", str(index)]
    )
    images = zarr.open_group(store, mode="r")
    assert images["images"].shape == (3, 256, 256)
    argv = ["--params", str(params), "--dataset", "hc18", "--store", str(store), "--out", str(out)]

    real_write = embeddings.write_shard
    calls: list[tuple[int, np.ndarray]] = []

    def failing_write(array, path, shard, data):
        calls.append((shard, data.copy()))
        if len(calls) == 2:
            raise RuntimeError("killed")
        real_write(array, path, shard, data)

    monkeypatch.setattr(embeddings, "write_shard", failing_write)
    with pytest.raises(RuntimeError, match="killed"):
        encode.main(argv)
    assert not out.exists()
    assert embeddings.partial_path(out).is_dir()
    assert embeddings.done_shards(out, 3) == {0}
    first_run = dict(calls)

    calls.clear()
    monkeypatch.setattr(embeddings, "write_shard", lambda *a: (calls.append((a[2], a[3].copy())), real_write(*a)))
    encode.main(argv)
    assert [shard for shard, _ in calls] == [1, 2], "the rerun must encode only the missing shards"
    assert out.is_dir() and not embeddings.partial_path(out).exists()

    group = embeddings.open_embeddings(out)
    stored = group["embeddings"][:]
    assert stored.shape == (3, 256, 64, 64) and stored.dtype == np.float16
    expected = np.concatenate([first_run[0], calls[0][1], calls[1][1]])
    np.testing.assert_array_equal(stored, expected.astype(np.float16))
    np.testing.assert_allclose(calls[0][1], first_run[1], rtol=1e-2, atol=1e-2)  # same image, same embedding
    assert np.abs(stored).reshape(3, -1).max(axis=1).min() > 0, "an image was left at the fill value"
    checkpoint = checkpoints.resolve_checkpoint("lite_medsam", None)
    assert group.attrs["backbone"] == "lite_medsam"
    assert group.attrs["checkpoint_sha256"] == file_sha256(checkpoint)
    assert group.attrs["source_sha256"] == images.attrs["source_sha256"]
    assert list(group.attrs["ids"]) == list(images.attrs["ids"])
    assert (group.attrs["runtime"], group.attrs["precision"]) == ("openvino", "float32"), "auto on a CPU"

    def no_encoder(*args, **kwargs):
        raise AssertionError("a complete store must not be encoded again")

    monkeypatch.setattr(runtimes, "build_encoder", no_encoder)
    encode.main(argv)  # complete: nothing to do


def test_a_store_of_another_precision_is_refused(tmp_path: Path) -> None:
    """Embeddings encoded under bfloat16 autocast (a GPU) never mix with float32 ones (a CPU) in one store."""
    path = tmp_path / "emb.zarr"
    embeddings.open_for_writing(path, _identity(precision="bfloat16"), SHARD_SIZE)
    with pytest.raises(InputError, match="precision"):
        embeddings.open_for_writing(path, _identity(), SHARD_SIZE)
