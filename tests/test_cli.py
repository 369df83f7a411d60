"""``autoprompt train`` on a folder of images with boxes only (pictures and an anisotropic volume), ``predict`` with
the model's margin and its report (rendered by a real headless Chromium), ``evaluate`` against masks, boxes from
annotation tools, a second ``train`` that redoes only what changed, and the command's conventions."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml

from autoprompt import cli
from autoprompt.data.boxes import read_boxes
from autoprompt.data.preprocess import fit_label
from autoprompt.errors import InputError
from autoprompt.evaluation.folders import evaluate_folder
from autoprompt.inference import load_model
from autoprompt.inference.files import Compute, PostProcessing, Review, Writing, predict
from autoprompt.inference.model import export_model, from_runs, run_folders
from autoprompt.inference.predictor import Predictor
from autoprompt.model import runtimes
from autoprompt.settings import VolumeFit
from tests.helpers import BOXES, ON_CPU, PICTURE, REPO, RUNTIME_CACHE, demo_recipes, write_csv, write_pictures

VOLUME = (5, 37, 29)  # slices, rows, columns
SPACING = (0.7, 1.3, 5.0)  # x, y, slice (mm): anisotropic in-plane
VOLUME_BOXES = {1: (5, 8, 20, 30), 3: (2, 12, 27, 35)}  # slice -> x_min, y_min, x_max, y_max
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def params(tmp_path: Path) -> Path:
    """A tiny params file: LiteMedSAM at a 64 x 64 frame, two views per image, the augmented recipe for 2 epochs."""
    recipe = demo_recipes({"augmented": (2, 1)})["augmented"]
    recipe["batch_size"] = 2
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "prepare": {"mine": {"reader": "folder", "crop": 64}},
                "encode": {"runtime_cache": str(RUNTIME_CACHE), "batch_size": 4, "shard_size": 8},
                "augment": {"count": 2},
                "train": {"recipes": {"augmented": recipe}, "predict_batch_size": 8},
                "evaluate": {"batch_size": 8},
            }
        )
    )
    return path


def write_volume(path: Path, mask: np.ndarray | None = None) -> np.ndarray:
    """A 5 x 37 x 29 anisotropic volume whose bright rectangles are the boxes; returns its mask."""
    if mask is None:
        mask = np.zeros(VOLUME, np.uint8)
        for k, (x0, y0, x1, y1) in VOLUME_BOXES.items():
            mask[k, y0 : y1 + 1, x0 : x1 + 1] = 1
    image = np.random.default_rng(1).normal(100, 20, VOLUME).astype(np.float32) + 200 * mask
    volume = sitk.GetImageFromArray(image)
    volume.SetSpacing(SPACING)
    sitk.WriteImage(volume, str(path))
    return mask


def box_only_folder(root: Path) -> Path:
    """Six pictures (three boxed) and one volume (two boxed slices), no masks: a user's folder."""
    write_pictures(root, masked=())
    write_volume(root / "images" / "scan.nii.gz")
    rows = [f"{name},{','.join(map(str, box))}," for name, box in BOXES.items()]
    rows += [f"scan.nii.gz,{x0},{y0},{x1},{y1},{k}" for k, (x0, y0, x1, y1) in VOLUME_BOXES.items()]
    write_csv(root, rows, "image,x_min,y_min,x_max,y_max,slice")
    return root


def autoprompt(*argv: object) -> None:
    cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``autoprompt train`` on the box-only folder: two runs; returns the working folder."""
    root = tmp_path_factory.mktemp("cli")
    box_only_folder(root / "data")
    autoprompt("train", root / "data", "-o", root / "model.pt", "--params", params(root), "--runs", 2,
               "--device", "cpu", "--threads", 2)  # fmt: skip
    return root


def test_a_box_only_folder_trains_a_model_with_its_margin(trained: Path) -> None:
    model = load_model(trained / "model.pt")
    assert len(model.heads) == 2 and model.class_name == "structure" and model.backbone == "lite_medsam"
    assert model.reprompt_how == "auto, on the 5 training boxes", "three pictures and two slices"
    assert model.reprompt_margin is None or 0 <= model.reprompt_margin <= 0.2
    assert model.preprocessing.crop == 64 and model.preprocessing.fit == "resize"
    assert model.volume_min_iou == VolumeFit().min_iou, "reprompt.volume's default, recorded for predict"
    assert not (trained / "model.work" / "raw" / "masks").exists(), "training reads boxes only"
    # train.self_training is auto by default: six unboxed pictures and slices are too few for a second round
    assert not (trained / "model.work" / "models-second-round").exists()
    assert all("self_training" not in c for c in model.configs), "the first round's runs"


def test_predict_uses_the_models_margin_and_reports_worst_first(trained: Path, caplog) -> None:
    out = trained / "masks"
    with caplog.at_level(logging.INFO):
        autoprompt("predict", "-m", trained / "model.pt", "-i", trained / "data/images", "-o", out, "--report",
                   "--boxes", trained / "data/boxes.csv", "--device", "cpu", "--threads", 2)  # fmt: skip
    model = load_model(trained / "model.pt")
    provenance = json.loads((out / "predict.json").read_text())
    assert provenance["reprompt_margin"] == model.reprompt_margin, "the model's margin, as train chose it"
    assert provenance["reprompt_box_threshold"] == model.reprompt_box_threshold, "and the box threshold chosen with it"
    if model.reprompt_margin is not None:
        assert f"re-prompting with margin {model.reprompt_margin:g}" in caplog.text
    for i in range(6):
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"img{i}.png"))).shape == PICTURE
    volume = sitk.ReadImage(str(out / "scan.nii.gz"))
    assert volume.GetSize() == VOLUME[::-1] and np.allclose(volume.GetSpacing(), SPACING), "the input's own grid"
    page = (out / "report.html").read_text()
    assert page.count('<figure class="tile') == 7 and "box IoU with the drawn box" in page
    scores = [float(s) for s in re.findall(r'data-score="([0-9.]+)"', page)]
    assert (len(scores) == 7 and scores == sorted(scores)) or 'class="tile empty' in page, "worst first"


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs Debian's chromium)")
def test_the_report_renders_in_a_headless_browser(trained: Path, tmp_path: Path) -> None:
    """The page needs no server: Chromium opens the file, runs its script and shows one tile per input."""
    report = trained / "masks" / "report.html"
    if not report.exists():
        pytest.fail("the predict test writes the report first")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-500:]
    assert dom.stdout.count('<figure class="tile') == 7
    assert re.search(r"7 inputs, \d+ to look at first", dom.stdout), "the page's script ran"
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,900", report.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    picture = cv2.imread(str(shot))
    assert picture is not None and picture.shape[:2] == (900, 1200) and picture.std() > 10, "a page, not a blank"


def test_annotation_tool_exports_give_the_csvs_boxes(tmp_path: Path) -> None:
    """The same boxes as a COCO file and as Label Studio's JSON and JSON-MIN exports read as boxes.csv does."""
    root = write_pictures(tmp_path / "data", masked=())
    images = root / "images"
    expected = read_boxes(root / "boxes.csv", images)
    height, width = PICTURE
    coco = {
        "images": [
            {"id": i, "file_name": f"images/{name}", "width": width, "height": height} for i, name in enumerate(BOXES)
        ],
        "annotations": [
            {"id": 10 + i, "image_id": i, "category_id": 1, "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1]}
            for i, (x0, y0, x1, y1) in enumerate(BOXES.values())
        ],
        "categories": [{"id": 1, "name": "lesion"}],
    }
    (root / "coco.json").write_text(json.dumps(coco))

    def percent(box: tuple[int, ...]) -> dict:
        x0, y0, x1, y1 = box
        return {"x": 100 * x0 / width, "y": 100 * y0 / height, "width": 100 * (x1 - x0 + 1) / width,
                "height": 100 * (y1 - y0 + 1) / height, "rotation": 0, "rectanglelabels": ["lesion"],
                "original_width": width, "original_height": height}  # fmt: skip

    studio = [
        {"id": i, "data": {"image": f"/data/upload/1/{'0a1b2c3d'}-{name}"},
         "annotations": [{"result": [{"type": "rectanglelabels", "value": percent(box), "original_width": width,
                                      "original_height": height}]}]}
        for i, (name, box) in enumerate(BOXES.items())
    ]  # fmt: skip
    (root / "studio.json").write_text(json.dumps(studio))
    minimal = [{"image": f"/data/local-files/?d=scans/{name}", "label": [percent(box)]} for name, box in BOXES.items()]
    (root / "minimal.json").write_text(json.dumps(minimal))
    for export in ("coco.json", "studio.json", "minimal.json"):
        found = read_boxes(root / export, images)
        assert {n: [b.__dict__ | {"where": ""} for b in v] for n, v in found.items()} == {
            n: [b.__dict__ | {"where": ""} for b in v] for n, v in expected.items()
        }, export
    coco["categories"].append({"id": 2, "name": "other"})
    coco["annotations"].append({"id": 99, "image_id": 0, "category_id": 2, "bbox": [1, 1, 5, 5]})
    (root / "two.json").write_text(json.dumps(coco))
    with pytest.raises(Exception, match=r"boxes of several labels \['lesion', 'other'\]; pick one with --label"):
        read_boxes(root / "two.json", images)
    assert read_boxes(root / "two.json", images, "lesion").keys() == expected.keys()


def test_a_changed_box_retrains_only_the_runs_and_a_changed_image_only_its_embedding(trained: Path, caplog) -> None:
    root = trained / "second"
    shutil.copytree(trained / "data", root / "data")
    shutil.copytree(trained / "model.work", root / "model.work", symlinks=True)
    (root / "model.work/raw/images").unlink()  # the link points at the first folder's images: train relinks it
    text = (root / "data/boxes.csv").read_text().replace("img1.png,10,20,50,60,", "img1.png,12,20,50,60,")
    (root / "data/boxes.csv").write_text(text)
    # one run of the fixture's two: half the training
    argv = ["train", root / "data", "-o", root / "model.pt", "--params", params(root), "--runs", 1,
            "--device", "cpu", "--threads", 2]  # fmt: skip

    def no_encoder(*args, **kwargs):
        raise AssertionError("nothing to encode: no image changed")

    real = runtimes.build_encoder
    runtimes.build_encoder = no_encoder
    try:
        with caplog.at_level(logging.INFO):
            autoprompt(*argv)
    finally:
        runtimes.build_encoder = real
    assert "1 run planned, 0 already trained, 1 to train" in caplog.text, "every run trains on img1's box"
    assert "embeddings.zarr is complete; nothing to do" in caplog.text and "views.zarr is complete" in caplog.text

    image = cv2.imread(str(root / "data/images/img2.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "data/images/img2.png"), 255 - image)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        autoprompt(*argv)
    assert "data: 4 of its images encoded before, copied" in caplog.text, "four of five rows: img2 is new"
    assert "data views: 8 of its images encoded before, copied" in caplog.text
    assert not (root / "model.work/embeddings.zarr.previous").exists(), "the old store goes once the new is whole"


def test_evaluate_scores_on_each_files_grid_as_the_frame_does(tmp_path: Path, trained: Path) -> None:
    """autoprompt evaluate's Dice on the pictures' own grid is the Dice of the same masks in the prepared frame
    within a point; the boxed images are left out."""
    root = write_pictures(tmp_path / "data")  # masks for img0, img3, img4
    model = load_model(trained / "model.pt")
    out = tmp_path / "masks"
    autoprompt("predict", "-m", trained / "model.pt", "-i", root / "images", "-o", out, "--device", "cpu")
    table = evaluate_folder(out, root / "masks", boxes=root / "boxes.csv")
    assert table["image"].tolist() == ["img3.png", "img4.png"], "img0 has a box: it trained"
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["images"] == 2 and summary["dice"]["mean"] == pytest.approx(table["dice"].mean(), abs=1e-3)
    predictor = Predictor(
        model, torch.device("cpu"), cache_dir=RUNTIME_CACHE, reprompt_margin=model.reprompt_margin,
        box_threshold=model.reprompt_box_threshold,
    )  # fmt: skip
    for name, dice in zip(table["image"], table["dice"], strict=True):
        segmentation = predictor.segment(sitk.ReadImage(str(root / "images" / name)))
        reference = cv2.imread(str(root / "masks" / name), cv2.IMREAD_GRAYSCALE) > 0
        framed = fit_label(reference.astype(np.uint8), 64, segmentation.framed.geometries[0]) > 0
        mask = segmentation.frame[0] > 0.5
        frame_dice = 200 * (mask & framed).sum() / (mask.sum() + framed.sum())
        assert dice == pytest.approx(frame_dice, abs=1.0), name


def test_the_command_follows_the_conventions(tmp_path: Path, trained: Path, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        autoprompt("--version")
    assert done.value.code == 0 and re.fullmatch(r"autoprompt \d+\.\d+\.\d+\n", capsys.readouterr().out)
    helps = {}
    for command in ("train", "predict", "evaluate", "export"):
        with pytest.raises(SystemExit):
            autoprompt(command, "--help")
        helps[command] = capsys.readouterr().out
        assert "example:\n  autoprompt " + command in helps[command] and "``" not in helps[command], command
    assert "runs in the ensemble, one seed each (default: 3)" in " ".join(helps["train"].split())
    light = "import sys; from autoprompt.cli import build_parser; build_parser().format_help(); print(sorted(" \
        "m for m in ('torch', 'numpy', 'SimpleITK', 'zarr') if m in sys.modules))"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", light], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]", "--help loads no heavy library"

    def refused(*argv: object) -> str:
        run = subprocess.run([sys.executable, "-m", "autoprompt.cli", *map(str, argv)], capture_output=True,
                             text=True, cwd=tmp_path)  # fmt: skip
        lines = [line for line in run.stderr.splitlines() if "ERROR" in line]
        assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-800:]
        return lines[0]

    (tmp_path / "empty" / "images").mkdir(parents=True)
    assert "no boxes; draw a box on each training image" in refused("train", tmp_path / "empty", "-o", "m.pt")
    if not torch.cuda.is_available():
        message = refused("predict", "-m", trained / "model.pt", "-i", trained / "data/images", "-o", "x",
                          "--device", "cuda")  # fmt: skip
        assert "--device is cuda, but torch sees no CUDA GPU on this machine; use auto or cpu" in message
    message = refused("train", trained / "data", "-o", "m.pt", "--backbone", "medsam_vit_b", "--checkpoint", "no.pth")
    assert "no.pth: MedSAM checkpoint not found" in message
    (tmp_path / "folder.pt").mkdir()
    assert "folder.pt: is a folder" in refused("export", "-m", trained / "model.pt", "-o", tmp_path / "folder.pt")


def test_a_full_disk_leaves_no_output_that_looks_whole(trained: Path, tmp_path: Path, monkeypatch) -> None:
    """A writer that reaches the disk empty (SimpleITK on a full disk raises nothing): predict stops in one line,
    nothing stands under a final name, and the next call does the work."""
    from autoprompt.data import images
    from autoprompt.errors import InputError
    from autoprompt.inference import predict

    real = images.sitk.WriteImage

    def full_disk(image, path, *args, **kwargs):
        Path(path).write_bytes(b"")

    monkeypatch.setattr(images.sitk, "WriteImage", full_disk)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"img0\.png: the output did not reach the disk whole \(is it full\?\)"):
        predict(trained / "model.pt", [trained / "data/images"], out, ON_CPU)
    left = [p.name for p in out.rglob("*") if p.is_file()]
    assert left == [".autoprompt-predict.txt"], "no output under a final name, no temporary left"
    monkeypatch.setattr(images.sitk, "WriteImage", real)
    summary = predict(trained / "model.pt", [trained / "data/images"], out, ON_CPU)
    assert len(summary.written) == 7 and all(p.stat().st_size > 0 for p in summary.written)


def test_an_overlay_lost_to_a_kill_is_written_again(trained: Path, tmp_path: Path) -> None:
    from autoprompt.inference import predict

    out, inputs = tmp_path / "out", [trained / "data/images/img0.png", trained / "data/images/img1.png"]
    predict(trained / "model.pt", inputs, out, ON_CPU, Writing(overlays=True))
    (out / "img1_overlay.png").unlink()  # killed while the overlay was being written: the mask is there, it is not
    again = predict(trained / "model.pt", inputs, out, ON_CPU, Writing(overlays=True))
    assert again.written == [out / "img1.png"] and again.existing == [out / "img0.png"]
    assert (out / "img1_overlay.png").is_file()


def test_export_onto_a_folder_leaves_the_folder_as_it_was(trained: Path, tmp_path: Path) -> None:
    from autoprompt.errors import InputError
    from autoprompt.inference import export_model

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"results: is a folder; give a file name for the model"):
        export_model(load_model(trained / "model.pt"), tmp_path / "results")
    assert (tmp_path / "results" / "notes.txt").read_text() == "keep me"


def test_evaluate_counts_an_empty_mask_as_a_miss_only_where_the_reference_is_not_empty(tmp_path: Path) -> None:
    square = np.zeros((32, 32), np.uint8)
    square[8:24, 8:24] = 255
    blank = np.zeros_like(square)
    for name, prediction, reference in (("a.png", blank, blank), ("b.png", blank, square), ("c.png", square, square)):
        for folder, array in (("pred", prediction), ("masks", reference)):
            (tmp_path / folder).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / folder / name), array)
    table = evaluate_folder(tmp_path / "pred", tmp_path / "masks")
    assert table["dice"].tolist() == [100.0, 0.0, 100.0], "an empty mask of an empty reference is right"
    summary = json.loads((tmp_path / "pred/evaluation.json").read_text())
    assert summary["misses"] == {"below_50_dice": 1, "empty": 1}
    with pytest.raises(InputError, match=r"nope: folder not found; give --pred: the folder autoprompt predict wrote"):
        evaluate_folder(tmp_path / "nope", tmp_path / "masks")
    with pytest.raises(InputError, match=r"a\.png: not a folder; give --masks: the folder of reference masks"):
        evaluate_folder(tmp_path / "pred", tmp_path / "masks/a.png")


def test_predicts_volume_fit_defaults_to_the_models_and_can_be_turned_off() -> None:
    """``--volume-min-iou`` defaults to the model's (None here: ``predict`` reads it from the model), takes an IoU
    from 0 to 1, and ``--no-volume-fit`` turns the fit off."""
    parser = cli.build_parser()
    base = ["predict", "-m", "m.pt", "-i", "in", "-o", "out"]
    assert parser.parse_args(base).volume_min_iou is None
    assert parser.parse_args([*base, "--volume-min-iou", "0.3"]).volume_min_iou == 0.3
    assert parser.parse_args([*base, "--no-volume-fit"]).no_volume_fit
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--volume-min-iou", "1.5"])
    with pytest.raises(argparse.ArgumentTypeError, match="'abc' is not a number; give a box IoU from 0 to 1"):
        cli.unit("abc")
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--volume-min-iou", "0.3", "--no-volume-fit"])


def test_the_model_carries_reprompt_volume_to_predict(trained: Path, tmp_path: Path, caplog) -> None:
    """``reprompt.volume: null`` at training turns predict's volume fit off unless asked for; a model file that
    records no threshold (older files) refits with the default; an out-of-range threshold is refused."""
    model = load_model(trained / "model.pt")
    off = dataclasses.replace(model, volume_min_iou=None)
    export_model(off, tmp_path / "off.pt")
    assert load_model(tmp_path / "off.pt").volume_min_iou is None
    record = torch.load(tmp_path / "off.pt", weights_only=True)
    del record["reprompt"]["volume_min_iou"]
    torch.save(record, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").volume_min_iou == VolumeFit().min_iou
    argv = ["predict", "-i", trained / "data/images/scan.nii.gz", "--reprompt-margin", 0.1, "--device", "cpu"]
    with caplog.at_level(logging.INFO):
        autoprompt(*argv, "-m", tmp_path / "off.pt", "-o", tmp_path / "a")
    assert "volume fit: off (the model's)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        autoprompt(*argv, "-m", tmp_path / "off.pt", "-o", tmp_path / "b", "--volume-min-iou", 0.3)
    assert "volume fit: volumes' slices prompted again below box IoU 0.3 (as asked)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        autoprompt("predict", "-i", trained / "data/images/scan.nii.gz", "--no-reprompt", "--device", "cpu",
                   "-m", tmp_path / "off.pt", "-o", tmp_path / "d", "--volume-min-iou", 0.3)  # fmt: skip
    assert "volume fit: off, it needs re-prompting" in caplog.text, "an IoU asked for without a margin is named"
    with pytest.raises(InputError, match=r"volume min IoU is 1\.5; give a box IoU in \[0, 1\]"):
        predict(off, [trained / "data/images"], tmp_path / "c", post=PostProcessing(volume_min_iou=1.5))


def test_predict_never_writes_into_or_over_its_inputs(trained: Path, tmp_path: Path) -> None:
    """-o equal to -i, inside it, or around a file input is refused before any work; so is a user's file that stands
    where an output would go, --overwrite or not; predict's own outputs are redone with --overwrite."""
    images = tmp_path / "images"
    shutil.copytree(trained / "data/images", images)
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    for output in (images, images / "masks", tmp_path):
        with pytest.raises(InputError, match=r"^-o .* (is|lies inside|contains) the input -i .*; give an output"):
            predict(trained / "model.pt", [images], output, ON_CPU, Writing(overwrite=True))
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before and not (images / "masks").exists()
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "img0.png").write_bytes(before["img0.png"])  # a user's own file, named like an output
    for overwrite in (False, True):
        with pytest.raises(InputError, match=r"img0\.png: exists and autoprompt predict did not write it"):
            predict(trained / "model.pt", [images / "img0.png"], out, ON_CPU, Writing(overwrite=overwrite))
    assert (out / "img0.png").read_bytes() == before["img0.png"]
    first = predict(trained / "model.pt", [images / "img1.png"], out, ON_CPU)
    again = predict(trained / "model.pt", [images / "img1.png"], out, ON_CPU, Writing(overwrite=True))
    assert first.written == again.written == [out / "img1.png"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "predict.json").write_text("a user's notes")  # where predict records what made its outputs
    with pytest.raises(InputError, match=r"predict\.json: exists and autoprompt predict did not write it"):
        predict(trained / "model.pt", [images / "img1.png"], elsewhere, ON_CPU)
    assert (elsewhere / "predict.json").read_text() == "a user's notes"


def test_train_and_export_write_only_model_files_outside_their_inputs(trained: Path, tmp_path: Path) -> None:
    data = box_only_folder(tmp_path / "data")
    boxes, image = (data / "boxes.csv").read_bytes(), (data / "images/img0.png").read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("a user's notes")
    for output, message in (
        (data / "boxes.csv", r"-o .*boxes\.csv is the input the boxes"),
        (data / "images/img0.png", r"-o .*img0\.png lies inside the input DATA/images"),
        (notes, r"notes\.txt: exists and is not a model file, so it is not replaced"),
    ):
        with pytest.raises(InputError, match=message):
            autoprompt("train", data, "-o", output, "--params", params(tmp_path), "--runs", 1, "--device", "cpu")
    assert (data / "boxes.csv").read_bytes() == boxes and (data / "images/img0.png").read_bytes() == image
    assert notes.read_text() == "a user's notes" and not (tmp_path / "notes.work").exists(), "refused before any work"
    run = next((trained / "model.work" / "models").rglob("head.pt")).parent
    weights = (run / "head.pt").read_bytes()
    with pytest.raises(InputError, match=r"-o .*head\.pt lies inside the input -m"):
        autoprompt("export", "-m", run, "-o", run / "head.pt")
    with pytest.raises(InputError, match=r"exists and is not a model file"):
        autoprompt("export", "-m", run, "-o", notes)
    assert (run / "head.pt").read_bytes() == weights and notes.read_text() == "a user's notes"
    autoprompt("export", "-m", run, "-o", tmp_path / "one.pt")
    autoprompt("export", "-m", trained / "model.pt", "-o", tmp_path / "one.pt")  # a model file over a model file
    assert len(load_model(tmp_path / "one.pt").heads) == 2


def test_a_checkpoint_the_model_does_not_use_is_refused(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"--checkpoint nowhere\.pth: the model's backbone lite_medsam uses its"):
        predict(
            trained / "model.pt", [trained / "data/images/img0.png"], tmp_path / "o", Compute(checkpoint="nowhere.pth")
        )
    with pytest.raises(InputError, match=r"--checkpoint nowhere\.pth: the backbone lite_medsam uses its packaged"):
        autoprompt("train", trained / "data", "-o", tmp_path / "m.pt", "--checkpoint", "nowhere.pth")


def test_a_second_train_on_a_work_folder_says_who_holds_it(trained: Path, tmp_path: Path) -> None:
    from autoprompt.outputs import hold

    with (
        hold(tmp_path / "m.work", "autoprompt train elsewhere", "autoprompt-train"),
        pytest.raises(InputError, match=r"m\.work: in use by autoprompt train elsewhere \(pid \d+ on "),
    ):
        autoprompt("train", trained / "data", "-o", tmp_path / "m.pt", "--params", params(tmp_path), "--runs", 1)


def test_a_reports_mask_of_another_size_is_refused_before_any_work(trained: Path, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    cv2.imwrite(str(masks / "img0.png"), np.zeros((7, 9), np.uint8))
    with pytest.raises(InputError, match=r"masks/img0\.png: \(9, 7\) voxels, its image .*img0\.png \(\d+, \d+\)"):
        predict(trained / "model.pt", [trained / "data/images"], tmp_path / "o", ON_CPU, review=Review(True, masks))
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.png"))


def test_evaluate_counts_false_and_missed_slices_of_volumes(tmp_path: Path) -> None:
    """A volume's slices with a mask where the reference is empty are false, those without one where it is not are
    missed; the JSON summary adds them up over the volumes."""
    reference = np.zeros((6, 20, 20), np.uint8)
    reference[1:5, 5:15, 5:15] = 1
    prediction = reference.copy()
    prediction[0, 6:10, 6:10] = 1  # a mask above the structure
    prediction[5, 2:8, 2:8] = 1  # and below it
    prediction[4] = 0  # the structure's last slice missed
    for folder, array in (("pred", prediction), ("masks", reference)):
        (tmp_path / folder).mkdir()
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.5, 1.5, 8.0))
        sitk.WriteImage(image, str(tmp_path / folder / "scan.nii.gz"))
    table = evaluate_folder(tmp_path / "pred", tmp_path / "masks")
    assert table[["false_slices", "missed_slices"]].values.tolist() == [[2, 1]]
    summary = json.loads((tmp_path / "pred/evaluation.json").read_text())
    assert summary["slices"] == {"false": 2, "missed": 1}


def test_outputs_kept_from_a_call_on_other_numerics_are_named(trained: Path, tmp_path: Path, caplog) -> None:
    """predict.json records the numerics without the training step's compile; a later call on other numerics that
    keeps those outputs says so."""
    from autoprompt.device import FAST, Numerics

    image, out = trained / "data/images/img1.png", tmp_path / "out"
    fast = Numerics(FAST, "float32", True, "test")  # float32: this process stays on the exact code paths
    predict(trained / "model.pt", [image], out, replace(ON_CPU, numerics=fast))
    made = json.loads((out / "predict.json").read_text())["numerics"]
    assert made == {"mode": "fast", "precision": "float32", "isa": "test"}
    with caplog.at_level(logging.WARNING):
        predict(trained / "model.pt", [image], out, ON_CPU)
    assert "1 outputs kept from a call on the fast numerics, not this call's exact" in caplog.text


def test_self_training_trains_a_second_round_on_the_unboxed_slices_pseudo_boxes(tmp_path: Path, caplog) -> None:
    """A first round of two runs, then a second on the pseudo-boxes of the unboxed pictures and slices they agree on:
    ``auto`` turns it on, the folder holding ``min_unboxed`` unboxed ones."""
    box_only_folder(tmp_path / "data")
    path = params(tmp_path)
    section = yaml.safe_load(path.read_text())
    section["augment"]["count"] = 0
    section["prepare"]["mine"]["crop"] = 128  # at 64, four epochs empty the heads' masks
    section["evaluate"]["threshold"] = 0.25  # these heads are unsure: their masks at 0.5 are empty
    section["reprompt"] = {"margin": 0.1}  # not chosen on the boxes, twice: the rounds are what is tested
    section["train"].update(recipe=["workshop"], recipes={"workshop": demo_recipes({"workshop": (2, 1)})["workshop"]})
    section["train"]["self_training"] = {
        "enabled": "auto",
        "min_unboxed": 6,
        "min_agreement": 0.0,
        "weight": 0.5,
        "per_epoch": 2,
    }
    path.write_text(yaml.safe_dump(section))
    with caplog.at_level(logging.INFO):
        autoprompt("train", tmp_path / "data", "-o", tmp_path / "m.pt", "--params", path, "--runs", 2,
                   "--device", "cpu", "--threads", 2)  # fmt: skip
    second = load_model(tmp_path / "m.pt")
    record = second.configs[0]["self_training"]
    assert record["looked"] == 6, "three unboxed pictures and the volume's three unboxed slices"
    assert record["images"] >= 1 and record["images"] + sum(record["left_out"].values()) == 6
    assert record["weight"] == 0.5 and record["min_agreement"] == 0.0 and "run agreement" in record["rule"]
    assert all(c["self_training"] == record for c in second.configs), "every run of the second round says so"
    first = from_runs(run_folders(tmp_path / "m.work" / "models"))
    changed = [k for k, v in first.heads[0].items() if not torch.equal(v, second.heads[0][k])]
    assert changed, "the second round's heads are new ones"
    assert f"and {record['images']} pseudo-boxed" in caplog.text
    assert "self-training: on (auto): 6 images and slices without a box" in caplog.text


def test_suggest_with_the_model_lists_unboxed_images_to_box_next(trained: Path, tmp_path: Path, caplog) -> None:
    """``suggest --model``: the unboxed pictures and slices, in doubt first, into DATA/next; the boxes untouched."""
    data = trained / "data"
    drawn = (data / "boxes.csv").read_text()
    with pytest.raises(InputError, match=r"^--boxes: read only with --model"):
        autoprompt("suggest", "-i", data, "--boxes", data / "boxes.csv")
    argv = ["suggest", "-i", data, "-n", 4, "--model", trained / "model.pt", "--work", tmp_path / "suggest.work",
            "--device", "cpu", "--threads", 2]  # fmt: skip
    with caplog.at_level(logging.INFO):
        autoprompt(*argv, "--params", params(tmp_path))
    out = data / "next"
    rows = [line.split(",") for line in (out / "boxes.csv").read_text().splitlines()[1:]]
    boxed = {(name, "") for name in BOXES} | {("scan.nii.gz", str(k)) for k in VOLUME_BOXES}
    listed = {(row[0], row[5]) for row in rows}
    assert len(rows) == 4 and not listed & boxed, "unboxed images and slices only"
    assert all(not any(row[1:5]) for row in rows), "a template: corners to fill"
    assert len(json.loads((out / "label-studio" / "tasks.json").read_text())) == 4
    assert (data / "boxes.csv").read_text() == drawn, "the boxes drawn so far are never written over"
    unsure = re.search(r"the model is unsure of (\d+) of the 6 unboxed images and slices", caplog.text)
    assert unsure, "three unboxed pictures and the volume's three unboxed slices, judged"
    covering = ["not in doubt" in line for line in re.findall(r" \d\. .*\(run agreement .*", caplog.text)]
    assert len(covering) == 4 and covering == sorted(covering), "the ones in doubt first, the rest fill the list"
    assert covering.count(False) >= min(1, int(unsure.group(1))), "near-duplicates of a boxed image aside"

    every = tmp_path / "every.csv"
    rows = [f"img{i}.png,1,1,5,5," for i in range(6)] + [f"scan.nii.gz,1,1,5,5,{k}" for k in range(VOLUME[0])]
    every.write_text("image,x_min,y_min,x_max,y_max,slice\n" + "\n".join(rows) + "\n")
    fresh = [*argv[:-6], "--work", tmp_path / "fresh.work", *argv[-4:]]
    with pytest.raises(InputError, match=r"every\.csv: every image and slice of .* has a box; nothing to list$"):
        autoprompt(*fresh, "--params", params(tmp_path), "--boxes", every, "-o", tmp_path / "all")
    assert not (tmp_path / "all").exists()
    assert not (tmp_path / "fresh.work" / "suggest").exists(), "refused before the encoder runs"
    with pytest.raises(InputError, match=r"^--method cover: chooses the first boxes only; .* leave --method out$"):
        autoprompt(*argv, "--method", "cover", "-o", tmp_path / "cover")

    other = yaml.safe_load(params(tmp_path).read_text())
    other["prepare"]["mine"]["crop"] = 128
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(InputError, match=r"trained on images prepared as .*give --params the file train read$"):
        autoprompt(*argv, "--params", tmp_path / "other.yaml", "-o", tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()
