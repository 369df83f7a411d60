"""Hostile inputs and faults, one class each: corrupt or truncated images and NaN voxels refused at read time,
DICOM named for what it is, grey+alpha pictures read, a file system's refusal in one line, a kill between the
prepared store's swap and its index's kept recoverable, a plan of no runs deleting nothing. (The predictions' own
writes: tests/test_cli.py; params typos and values: tests/test_settings.py; colliding outputs: tests/test_predict.py.)
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import zarr
from PIL import Image

from autoprompt import console
from autoprompt.data import prepared as store
from autoprompt.data.boxes import read_boxes
from autoprompt.data.images import read_image
from autoprompt.data.prepared import Prepared, read_index, write_prepared
from autoprompt.errors import InputError
from autoprompt.training import runs
from tests.helpers import write_csv, write_pictures


def _volume(path: Path, values: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))
    return path


@pytest.mark.parametrize("name", ["cut.nii", "cut.nii.gz"])
def test_a_truncated_nifti_is_refused_not_zero_filled(tmp_path: Path, name: str) -> None:
    path = _volume(tmp_path / name, np.random.default_rng(0).random((8, 32, 32)).astype(np.float32))
    whole = read_image(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert sitk.ReadImage(str(path)).GetSize() == whole.GetSize(), "SimpleITK alone reads it, zeros filled in"
    with pytest.raises(InputError, match=rf"{name}: truncated or corrupt NIfTI \(.*\); replace it or remove it"):
        read_image(path)


@pytest.mark.parametrize(("name", "value"), [("nan.mha", np.nan), ("inf.nii.gz", np.inf), ("ninf.nrrd", -np.inf)])
def test_non_finite_voxels_are_refused(tmp_path: Path, name: str, value: float) -> None:
    values = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    values[1, 2, 3] = values[2, 3, 4] = value
    with pytest.raises(InputError, match=rf"{name}: 2 voxels are NaN or infinite; set them to the background"):
        read_image(_volume(tmp_path / name, values))


def test_a_grey_png_with_alpha_is_read_as_grey(tmp_path: Path) -> None:
    pixels = np.zeros((20, 30, 2), np.uint8)
    pixels[..., 0], pixels[..., 1] = 77, 200
    Image.fromarray(pixels, mode="LA").save(tmp_path / "la.png")
    image = read_image(tmp_path / "la.png")
    assert image.GetSize() == (30, 20) and image.GetNumberOfComponentsPerPixel() == 1
    assert np.all(sitk.GetArrayFromImage(image) == 77), "the grey channel, not the alpha"


def test_dicom_is_named_for_what_it_is(tmp_path: Path) -> None:
    (tmp_path / "scan.dcm").write_bytes(b"DICM")
    with pytest.raises(InputError, match=r"scan\.dcm: one file of a DICOM series; give the folder that holds"):
        read_image(tmp_path / "scan.dcm")
    root = write_pictures(tmp_path / "data", masked=())
    (root / "images" / "scan.dcm").write_bytes(b"DICM")
    write_csv(root, ["scan.dcm,1,1,5,5"])
    with pytest.raises(InputError, match=r"line 2: .*scan\.dcm is not in a format read here; give the folder that"):
        read_boxes(root / "boxes.csv", root / "images")


def test_a_constant_image_is_named_in_its_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _volume(tmp_path / "flat.mha", np.full((2, 8, 8), 37, np.int16))
    with caplog.at_level(logging.WARNING):
        read_image(path)
    assert f"{path}: every voxel is 37: nothing to segment" in caplog.text


def test_a_boxes_file_without_rows_says_so(tmp_path: Path) -> None:
    root = write_pictures(tmp_path / "data", masked=(), boxes={})
    with pytest.raises(InputError, match=r"boxes\.csv: no boxes in it; draw a box on each training image"):
        read_boxes(root / "boxes.csv", root / "images")


@pytest.mark.parametrize(
    ("code", "fix"),
    [(errno.ENOSPC, "the disk is full"), (errno.EACCES, "no permission"), (errno.ENOTDIR, "a file stands where")],
)
def test_a_file_systems_refusal_is_one_line(code: int, fix: str, caplog: pytest.LogCaptureFixture) -> None:
    def main(argv: list[str] | None) -> None:
        raise OSError(code, os.strerror(code), "/data/out/mask.png")

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as done:
        console.run(main, [])
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert done.value.code == 2 and len(lines) == 1
    assert lines[0].startswith(f"/data/out/mask.png: {os.strerror(code)}; {fix}")


def _prepared(n: int, value: int) -> Prepared:
    images = np.full((n, 8, 8), value, np.uint8)
    table = pd.DataFrame({"id": [f"i{k}" for k in range(n)], "subject": [f"s{k}" for k in range(n)]})
    return Prepared(images, images.copy(), table, [])


def test_a_kill_between_the_store_and_its_index_keeps_the_earlier_store(tmp_path: Path, monkeypatch) -> None:
    """The new store is moved into place before the index, and the earlier store is kept until the index follows:
    killed in between, both stores are on disk and the mismatch names the kept one."""
    path, index = tmp_path / "d.zarr", tmp_path / "d.csv"
    write_prepared(path, index, _prepared(2, 1), {"crop": 8})
    real = os.replace

    def killed(source, target):
        if Path(target) == index:
            raise KeyboardInterrupt("killed")
        return real(source, target)

    monkeypatch.setattr(store.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_prepared(path, index, _prepared(3, 2), {"crop": 8})
    monkeypatch.setattr(store.os, "replace", real)
    kept = tmp_path / ".d.zarr.old"
    assert zarr.open_group(kept, mode="r")["images"].shape == (2, 8, 8), "the earlier store is still there"
    with pytest.raises(
        InputError, match=r"rows do not match .*d\.zarr \(the store before it is kept as .*\.d\.zarr\.old"
    ):
        read_index(path, index)
    write_prepared(path, index, _prepared(3, 2), {"crop": 8})
    assert read_index(path, index)[1]["id"].tolist() == ["i0", "i1", "i2"] and not kept.exists()


def test_a_plan_of_no_runs_deletes_nothing(tmp_path: Path) -> None:
    (tmp_path / "augmented/fewshot/subset0-seed0").mkdir(parents=True)
    with pytest.raises(InputError, match="no runs are planned, so every run here would go"):
        runs.remove_stale(tmp_path, set())
    assert (tmp_path / "augmented/fewshot/subset0-seed0").is_dir()
