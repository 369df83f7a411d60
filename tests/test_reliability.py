"""Hostile inputs and faults, one class each: corrupt or truncated images and NaN voxels refused at read time,
DICOM named for what it is, grey+alpha pictures read, a file system's refusal in one line, a kill between the
prepared store's swap and its index's kept recoverable, a plan of no runs deleting nothing (and a baseline stage of
no methods succeeding); boxes refused rather than clamped (no size, off the image, one pixel, an export of another
image size, vanishing in the fit), a label given with a boxes.csv, the params' boxes path read by ``autoprompt
train``. (The predictions' own writes: tests/test_cli.py; params typos and values: tests/test_settings.py; colliding
outputs: tests/test_predict.py.)
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import zarr
from PIL import Image

from autoprompt import cli, console, own_data
from autoprompt.data import prepared as store
from autoprompt.data.boxes import read_boxes
from autoprompt.data.images import read_image
from autoprompt.data.prepare import prepare_cases
from autoprompt.data.prepared import Prepared, read_index, write_prepared
from autoprompt.data.readers import get_reader
from autoprompt.errors import InputError
from autoprompt.training import baseline_jobs, runs
from tests.helpers import BOXES, PICTURE, prepare_section, settings, write_csv, write_pictures


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


def test_a_plan_of_no_runs_deletes_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing to lose (folders, no file): it succeeds, deleting nothing; runs there: kept, with a warning."""
    (tmp_path / "unet/fewshot/subset0-seed0").mkdir(parents=True)
    assert runs.remove_stale(tmp_path, set()) == []
    assert (tmp_path / "unet/fewshot/subset0-seed0").is_dir() and not caplog.records
    (tmp_path / "unet/fewshot/subset0-seed0/model.pt").write_bytes(b"weights")
    assert runs.remove_stale(tmp_path, set(), "baseline.methods is empty") == []
    assert (tmp_path / "unet/fewshot/subset0-seed0/model.pt").read_bytes() == b"weights"
    assert "no runs are planned (baseline.methods is empty); the runs already here are kept" in caplog.text


def test_a_baseline_stage_of_no_methods_succeeds_with_an_empty_output(tmp_path: Path, monkeypatch) -> None:
    """baseline.methods: [] on a fresh output (dvc repro's first baseline stage): no run, the output folder made and
    left empty (evaluate finds no baseline run in it). Before, the guard refused it: "no runs are planned"."""
    monkeypatch.setattr(baseline_jobs, "task_checkpoint", lambda task, encode: tmp_path / "no.pth")
    monkeypatch.setattr(baseline_jobs.backbones, "build_prompt_decoder", lambda backbone, path: torch.nn.Identity())
    task = SimpleNamespace(name="own", table=pd.DataFrame({"id": ["a"], "has_mask": [1]}))
    params = settings(baseline={"methods": []})
    out = tmp_path / "models/baselines/own"
    jobs = baseline_jobs.train_task(task, params.baseline, params.train, params.encode, out)
    assert jobs == [] and out.is_dir() and not any(out.iterdir())
    assert runs.finished_runs(out, runs.MODEL) == []


def _coco(root: Path, bbox: list[float], size: tuple[int, int] | None = None) -> Path:
    """A COCO file of one box on img0.png (``size``: the width and height it states for the image)."""
    image = {"id": 1, "file_name": "img0.png"} | ({"width": size[0], "height": size[1]} if size else {})
    coco = {
        "images": [image],
        "annotations": [{"id": 17, "image_id": 1, "category_id": 1, "bbox": bbox}],
        "categories": [{"id": 1, "name": "lesion"}],
    }
    (root / "coco.json").write_text(json.dumps(coco))
    return root / "coco.json"


@pytest.mark.parametrize(
    ("bbox", "match"),
    [
        ([10, 10, 0, 5], r"annotation 17: box of width 0 and height 5; draw a box with a positive width and height"),
        ([10, 10, 5, -3], r"annotation 17: box of width 5 and height -3; draw a box with a positive width"),
        ([-4, 10, 20, 20], r"annotation 17: box \(-4, 10, 15, 29\) starts outside img0\.png .*; draw it inside"),
        ([110, 10, 20, 20], r"annotation 17: box \(110, 10, 129, 29\) leaves img0\.png \(120 columns x 90 rows\)"),
        ([10, 10, 1, 1], r"annotation 17: box \(10, 10, 10, 10\) of img0\.png is 1 x 1 pixels; .* at least 2 pixels"),
        ([float("nan"), 10, 5, 5], r"annotation 17: box \(nan, 10, 5, 5\) is not a number everywhere; export it again"),
        ([1, 1, float("inf"), 5], r"annotation 17: box \(1, 1, inf, 5\) is not a number everywhere"),
    ],
)
def test_boxes_of_no_size_or_off_the_image_are_refused_not_clamped(tmp_path: Path, bbox: list, match: str) -> None:
    """Every format's boxes go through one validation, which clamps nothing: before, these became 1-pixel boxes or
    boxes cut to the image, and trained."""
    root = write_pictures(tmp_path / "data", masked=())
    with pytest.raises(InputError, match=rf"coco\.json: {match}"):
        read_boxes(_coco(root, bbox), root / "images")
    write_csv(root, ["img1.png,10,10,50,60", "img0.png,10,10,10,30"])
    with pytest.raises(InputError, match=r"boxes\.csv: line 3: box \(10, 10, 10, 30\) of img0\.png is 1 x 21 pixels"):
        read_boxes(root / "boxes.csv", root / "images")


def test_an_export_of_another_image_size_is_refused(tmp_path: Path) -> None:
    """Label Studio's percentages were scaled by original_width/height even where the file has another size; now
    the stated size must be the file's (within a pixel of rounding), as must COCO's width and height."""
    root = write_pictures(tmp_path / "data", masked=())
    height, width = PICTURE

    def studio(stated_width: float, stated_height: float) -> Path:
        value = {"x": 25.0, "y": 20.0, "width": 50.0, "height": 50.0, "rectanglelabels": ["lesion"]}
        result = {"type": "rectanglelabels", "value": value, "original_width": stated_width,
                  "original_height": stated_height}  # fmt: skip
        tasks = [
            {"id": 5, "data": {"image": "/data/upload/1/0a1b2c3d-img0.png"}, "annotations": [{"result": [result]}]}
        ]
        (root / "studio.json").write_text(json.dumps(tasks))
        return root / "studio.json"

    with pytest.raises(
        InputError,
        match=r"studio\.json: task 5: the export says img0\.png is 240 x 180 pixels, but the file is 120 x 90",
    ):
        read_boxes(studio(2 * width, 2 * height), root / "images")
    box = read_boxes(studio(width + 1, height), root / "images")["img0.png"][0]
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == (30, 18, 89, 62), "scaled by the file's own size"
    with pytest.raises(InputError, match=r"coco\.json: annotation 17: the export says img0\.png is 60 x 45 pixels"):
        read_boxes(_coco(root, [10, 10, 20, 20], (60, 45)), root / "images")
    assert read_boxes(_coco(root, [10, 10, 20, 20], (width, height)), root / "images")["img0.png"][0].x_max == 29


def test_a_box_that_vanishes_in_the_fit_is_refused_as_a_crop_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 3 x 3 box of a 90 x 120 image resized to 32 is under a pixel in the frame: refused naming the image, its
    box, its size after the fit and prepare's crop (before, it vanished and train.shots was blamed); a box that
    keeps 2 pixels is warned about."""
    root = write_pictures(tmp_path / "raw", masked=(), boxes={**BOXES, "img3.png": (40, 40, 42, 42)})
    section = prepare_section("mine", reader="folder", crop=32, fit="resize")
    reader = get_reader("mine", section)
    with pytest.raises(
        InputError,
        match=r"images/img3\.png \(img3\): its box \(40, 40, 42, 42\) is 0 x 0 pixels after the resize to 32, under "
        r"2; set a larger crop \(test params: prepare\.mine\.crop\), or leave the image out",
    ):
        prepare_cases(reader, reader.find(root, section), section, "stop")
    write_csv(root, ["img0.png,30,25,90,65", "img3.png,40,40,49,49"])
    with caplog.at_level(logging.WARNING):
        prepared = prepare_cases(reader, reader.find(root, section), section, "stop")
    assert "img3): its box (40, 40, 49, 49) is 2 x 2 pixels after the resize to 32; so small a box" in caplog.text
    assert len(prepared.table) == 2


def test_a_label_with_a_boxes_csv_is_refused(tmp_path: Path) -> None:
    """boxes.csv has no labels: --label with it (train, predict's --boxes) and prepare's label with it are refused,
    not ignored."""
    root = write_pictures(tmp_path / "data", masked=())
    with pytest.raises(InputError, match=r"boxes\.csv: boxes\.csv has no labels, so label 'lesion' picks nothing"):
        read_boxes(root / "boxes.csv", root / "images", "lesion")
    with pytest.raises(InputError, match=r"prepare\.mine: boxes\.csv has no labels; remove label, or give a COCO"):
        prepare_section("mine", reader="folder", label="lesion")
    with pytest.raises(InputError, match=r"--label lesion: boxes\.csv has no labels; leave --label out"):
        own_data.boxes_source(settings(), root, None, "lesion")


def test_train_reads_the_params_boxes_path_unless_boxes_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """prepare.<folder>.boxes in --params (relative to DATA) is read where --boxes is not given (before, DATA/boxes.csv
    was read regardless); --boxes wins; the log says which file was read."""
    root = write_pictures(tmp_path / "data", masked=())
    _coco(root, [10, 10, 20, 20])
    (tmp_path / "params.yaml").write_text("prepare:\n  mine: {reader: folder, boxes: coco.json}\n")
    read: list[str] = []

    def train_folder(data: Path, out: Path, work: Path, chosen: object, numerics: object) -> own_data.Summary:
        read.append(chosen.prepare.datasets["data"].boxes)
        assert chosen.prepare.datasets["data"].key("crop").endswith("prepare.mine.crop"), "the user's own key"
        return own_data.Summary(out, 1, 1, 0, None, "as set", {})

    monkeypatch.setattr(own_data, "train_folder", train_folder)
    params = tmp_path / "params.yaml"
    argv = ["train", str(root), "-o", str(tmp_path / "m.pt"), "--params", str(params), "--device", "cpu"]
    with caplog.at_level(logging.INFO):
        cli.main(argv)
    assert read == [str((root / "coco.json").resolve())]
    assert f"boxes: {root / 'coco.json'} ({params}: prepare.mine.boxes)" in caplog.text
    cli.main([*argv, "--boxes", str(root / "boxes.csv")])
    assert read[-1] == str((root / "boxes.csv").resolve())
