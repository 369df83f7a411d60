"""Hostile inputs and faults, each run as a user would run it, and how the tool answers.

Every case is a command (``autoprompt`` or a stage module) on a small box-only folder and a model trained on it, with
one thing wrong: a params typo or a value out of range, a corrupt or truncated image, NaN voxels, a boxes file that
says nothing or the wrong thing, an output path that cannot be written, a device that is not there, and so on. Each
is expected to end in one line naming the file or key and the fix (exit status 2, no traceback), or to succeed
where the input is valid but unusual (a grey PNG with an alpha channel). ``tests/`` holds one test per class of
failure; this package the whole set, run two ways:

    python -m pytest bench/hostile       # one test per case: it passes when the case is answered as expected
    python -m bench.hostile              # the table of answers, into bench/results/hostile.json
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml

from bench.lib import common
from tests.dicom_series import oblique_volume, series_datasets, slicer_roi, write_series
from tests.helpers import RUNTIME_CACHE, demo_recipes, write_pictures

ONE_LINE, OK = "one line", "ok"


def outcome(run: subprocess.CompletedProcess) -> str:
    """How a command answered: ok, one line (exit 2, one ERROR line, no traceback), a traceback, or silence."""
    if "Traceback" in run.stderr:
        return "traceback"
    errors = [line for line in run.stderr.splitlines() if " ERROR " in line]
    said = [line for line in run.stderr.splitlines() if line.strip() and " INFO " not in line and "WARNING" not in line]
    if run.returncode in (2, 130) and (len(errors) == 1 or len(said) == 1):  # a logged error, an option's refusal
        return ONE_LINE  # (130: Ctrl-C)
    if run.returncode == 99:
        return "changed a user's file"
    if run.returncode == 0:
        return OK
    return f"exit {run.returncode}"


class Probe:
    """A folder, a tiny params file and a model trained on them, in a scratch folder; cases run against copies."""

    def __init__(self, root: Path) -> None:
        """The probe's paths under ``root``; ``build`` writes them."""
        self.root = root
        self.data = root / "data"
        self.params = root / "params.yaml"
        self.model = root / "model.pt"
        recipe = demo_recipes({"augmented": (1, 1)})["augmented"]
        self.base = {
            "prepare": {"mine": {"reader": "folder", "crop": 64}},
            "encode": {"runtime_cache": str(RUNTIME_CACHE), "batch_size": 4, "shard_size": 8},
            "augment": {"count": 0},
            "train": {"recipes": {"augmented": recipe}, "threads": 2},
        }

    def build(self) -> Probe:
        """The folder, the params file and the model trained on them (``autoprompt train``, one epoch)."""
        write_pictures(self.data, masked=())
        self.params.write_text(yaml.safe_dump(self.base))
        self.autoprompt("train", self.data, "-o", self.model, "--params", self.params, "--runs", 1, check=True)
        return self

    def autoprompt(self, *argv: object, check: bool = False) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "autoprompt.cli", *map(str, argv)]
        return subprocess.run(command, capture_output=True, text=True, cwd=self.root, check=check, timeout=900)

    def with_params(self, change: Callable[[dict], None]) -> Path:
        params = yaml.safe_load(yaml.safe_dump(self.base))
        change(params)
        path = self.root / "bad-params.yaml"
        path.write_text(yaml.safe_dump(params))
        return path

    def folder(self, name: str) -> Path:
        """A fresh copy of the box-only folder."""
        copy = self.root / name
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.data, copy)
        return copy

    def train_with(self, change: Callable[[dict], None]) -> subprocess.CompletedProcess:
        return self.autoprompt("train", self.data, "-o", self.root / "m.pt", "--params", self.with_params(change))

    def predict(self, inputs: Path, out: Path, *extra: object) -> subprocess.CompletedProcess:
        return self.autoprompt("predict", "-m", self.model, "-i", inputs, "-o", out, "--device", "cpu", *extra)


def volume(path: Path, values: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))
    return path


def cases(probe: Probe) -> list[tuple[str, str, Callable[[], subprocess.CompletedProcess]]]:
    """(class of failure, case, the command that tries it)."""
    recipe = ("train", "recipes", "augmented")

    def in_recipe(key: str, value: object) -> Callable[[dict], None]:
        return lambda p: p[recipe[0]][recipe[1]][recipe[2]].update({key: value})

    def boxes(text: str) -> Callable[[], subprocess.CompletedProcess]:
        def run() -> subprocess.CompletedProcess:
            data = probe.folder("boxes-case")
            (data / "images" / "scan.dcm").write_bytes(b"DICM" * 40)  # a DICOM file among the images
            (data / "boxes.csv").write_text(text)
            return probe.autoprompt("train", data, "-o", probe.root / "m.pt", "--params", probe.params)

        return run

    def export(text: str) -> Callable[[], subprocess.CompletedProcess]:
        """``autoprompt train --boxes export.json`` with ``text`` as the export."""

        def run() -> subprocess.CompletedProcess:
            data = probe.folder("export-case")
            (data / "export.json").write_text(text)
            return probe.autoprompt(
                "train", data, "-o", probe.root / "m.pt", "--params", probe.params, "--boxes", data / "export.json"
            )

        return run

    def coco(bbox: list[float], size: tuple[int, int] = (120, 90)) -> str:
        image = {"id": 1, "file_name": "img0.png", "width": size[0], "height": size[1]}
        return json.dumps({"images": [image], "annotations": [{"id": 7, "image_id": 1, "category_id": 1,
                           "bbox": bbox}], "categories": [{"id": 1, "name": "lesion"}]})  # fmt: skip

    def studio(width: int, height: int) -> str:
        value = {"x": 20, "y": 20, "width": 40, "height": 40, "rectanglelabels": ["lesion"]}
        result = {"type": "rectanglelabels", "value": value, "original_width": width, "original_height": height}
        return json.dumps(
            [{"id": 5, "data": {"image": "/data/upload/1/img0.png"}, "annotations": [{"result": [result]}]}]
        )

    def image(name: str, write: Callable[[Path], None]) -> Callable[[], subprocess.CompletedProcess]:
        def run() -> subprocess.CompletedProcess:
            folder = probe.root / "inputs" / name.replace(".", "-")
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            write(folder / name)
            return probe.predict(folder / name, probe.root / "out" / name.replace(".", "-"))

        return run

    def truncated(path: Path) -> None:
        volume(path, np.random.default_rng(0).random((8, 32, 32)).astype(np.float32))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    def with_nan(value: float) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            values = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
            values[1, 3, 3] = value
            volume(path, values)

        return write

    def grey_alpha(path: Path) -> None:
        from PIL import Image

        pixels = np.zeros((40, 50, 2), np.uint8)
        pixels[..., 0], pixels[..., 1] = np.random.default_rng(0).integers(0, 255, (40, 50)), 255
        Image.fromarray(pixels, mode="LA").save(path)

    def dicom_folder() -> subprocess.CompletedProcess:
        folder = probe.root / "inputs" / "dicom"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "slice1.dcm").write_bytes(b"DICM" * 40)
        return probe.predict(folder, probe.root / "out" / "dicom")

    def output_is_a_file() -> subprocess.CompletedProcess:
        (probe.root / "a-file").write_text("not a folder")
        return probe.predict(probe.data / "images", probe.root / "a-file" / "out")

    def export_onto_a_folder() -> subprocess.CompletedProcess:
        (probe.root / "kept").mkdir(exist_ok=True)
        (probe.root / "kept" / "precious.txt").write_text("keep me")
        run = probe.autoprompt("export", "-m", probe.model, "-o", probe.root / "kept")
        return run if (probe.root / "kept" / "precious.txt").exists() else subprocess.CompletedProcess([], 0, "", "")

    def colliding(names: tuple[str, str]) -> Callable[[], subprocess.CompletedProcess]:
        def run() -> subprocess.CompletedProcess:
            folder = probe.root / "inputs" / "collide"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for name in names:
                pixels = np.random.default_rng(0).random((3, 32, 32)) * 200
                volume(
                    folder / name, pixels.astype(np.uint8)[0] if name.endswith(".png") else pixels.astype(np.float32)
                )
            return probe.predict(folder, probe.root / "out" / "collide", "--overlay")

        return run

    def stage(module: str, *argv: object) -> Callable[[], subprocess.CompletedProcess]:
        def run() -> subprocess.CompletedProcess:
            command = [sys.executable, "-m", f"stages.{module}", "--params", probe.params, *map(str, argv)]
            return subprocess.run(command, capture_output=True, text=True, cwd=probe.root, timeout=600)

        return run

    def misspelt_views(params: dict) -> None:
        params["train"]["recipes"]["augmented"]["augment"]["inputs"]["veiws"] = 0.8

    def renamed_lr(params: dict) -> None:
        section = params["train"]["recipes"]["augmented"]
        section["rate"] = section.pop("lr")

    def no_boxes_file() -> subprocess.CompletedProcess:
        data = probe.folder("no-boxes")
        (data / "boxes.csv").unlink()
        return probe.autoprompt("train", data, "-o", probe.root / "m.pt")

    def kept(paths: list[Path], run: Callable[[], subprocess.CompletedProcess]) -> subprocess.CompletedProcess:
        """``run``, answered as "changed a user's file" when any of ``paths`` differs afterwards."""
        before = {p: p.read_bytes() if p.is_file() else None for p in paths}
        done = run()
        changed = [p for p in paths if (p.read_bytes() if p.is_file() else None) != before[p]]
        return subprocess.CompletedProcess(done.args, 99, done.stdout, done.stderr) if changed else done

    def predict_into_its_input(where: str) -> Callable[[], subprocess.CompletedProcess]:
        def run() -> subprocess.CompletedProcess:
            data = probe.folder("into-input")
            images = data / "images"
            out = {"same": images, "inside": images / "masks", "around": data}[where]
            files = sorted(images.iterdir())
            return kept(files, lambda: probe.predict(images, out, "--overwrite", "--overlay"))

        return run

    def overwrite_a_users_file() -> subprocess.CompletedProcess:
        out = probe.root / "out" / "users"
        out.mkdir(parents=True, exist_ok=True)
        (out / "img0.png").write_bytes(b"a user's own picture")
        return kept([out / "img0.png"], lambda: probe.predict(probe.data / "images" / "img0.png", out, "--overwrite"))

    def train_onto(name: str) -> Callable[[], subprocess.CompletedProcess]:
        def run() -> subprocess.CompletedProcess:
            data = probe.folder("train-onto")
            target = data / name
            return kept([target], lambda: probe.autoprompt("train", data, "-o", target, "--params", probe.params))

        return run

    def export_into_a_run() -> subprocess.CompletedProcess:
        head = next((probe.root / "model.work" / "models").rglob("head.pt"))
        return kept([head], lambda: probe.autoprompt("export", "-m", head.parent, "-o", head))

    def scored(prediction_spacing: float = 1.0) -> tuple[Path, Path]:
        pred, masks = probe.root / "eval" / "pred", probe.root / "eval" / "masks"
        values = np.zeros((4, 16, 16), np.uint8)
        values[1:3, 4:12, 4:12] = 1
        for folder, spacing in ((masks, 1.0), (pred, prediction_spacing)):
            folder.mkdir(parents=True, exist_ok=True)
            image = sitk.GetImageFromArray(values)
            image.SetSpacing((spacing, spacing, 2.0))
            sitk.WriteImage(image, str(folder / "a.nii.gz"))
        return pred, masks

    def evaluate_onto(which: str) -> Callable[[], subprocess.CompletedProcess]:
        def run() -> subprocess.CompletedProcess:
            pred, masks = scored()
            target = masks / "a.nii.gz" if which == "mask" else _write(probe.root / "notes.csv", "subject,age\n1,40\n")
            return kept([target], lambda: probe.autoprompt("evaluate", "--pred", pred, "--masks", masks, "-o", target))

        return run

    def evaluate_another_spacing() -> subprocess.CompletedProcess:
        pred, masks = scored(prediction_spacing=0.5)
        return probe.autoprompt("evaluate", "--pred", pred, "--masks", masks)

    def train_in_a_git_repository() -> subprocess.CompletedProcess:
        repo = probe.root / "analysis"
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir()
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        data = probe.folder("analysis/data")
        done = subprocess.run(
            [sys.executable, "-m", "autoprompt.cli", "train", str(data), "-o", "m.pt", "--params", str(probe.params),
             "--runs", "1"], capture_output=True, text=True, cwd=repo, timeout=900,
        )  # fmt: skip
        touched = (repo / ".dvc").exists() or (repo / ".dvcignore").exists()
        return subprocess.CompletedProcess(done.args, 99, done.stdout, done.stderr) if touched else done

    def interrupted(argv: list[object]) -> Callable[[], subprocess.CompletedProcess]:
        """``autoprompt`` with ``argv``, sent SIGINT (Ctrl-C) once it has started its work."""

        def run() -> subprocess.CompletedProcess:
            command = [sys.executable, "-m", "autoprompt.cli", *map(str, argv)]
            started = subprocess.Popen(
                command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=probe.root
            )
            lines = []
            for line in started.stderr:
                lines.append(line)
                if " INFO " in line:  # its work has begun
                    started.send_signal(signal.SIGINT)
                    break
            rest_out, rest_err = started.communicate(timeout=300)
            return subprocess.CompletedProcess(command, started.returncode, rest_out, "".join(lines) + rest_err)

        return run

    def two_trains_on_one_work_folder() -> subprocess.CompletedProcess:
        data = probe.folder("twice")
        command = [sys.executable, "-m", "autoprompt.cli", "train", str(data), "-o", "twice.pt", "--params",
                   str(probe.params), "--runs", "1"]  # fmt: skip
        first = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=probe.root)
        for line in first.stderr:
            if " INFO " in line:  # the first holds the work folder
                break
        second = subprocess.run(command, capture_output=True, text=True, cwd=probe.root, timeout=900)
        first.kill()
        first.communicate()
        return second

    def not_gzip(path: Path) -> None:
        volume(path.with_name("plain.nii"), np.random.default_rng(0).random((4, 32, 32)).astype(np.float32))
        path.with_name("plain.nii").rename(path)

    def series(name: str, spoil: Callable[[list, Path], None]) -> Callable[[], subprocess.CompletedProcess]:
        """predict on a DICOM series folder (a synthetic oblique MR volume) with one thing wrong."""

        def run() -> subprocess.CompletedProcess:
            folder = probe.root / "inputs" / "series" / name
            shutil.rmtree(folder, ignore_errors=True)
            datasets = series_datasets(oblique_volume(size=(32, 30, 6))[0])
            spoil(datasets, folder)
            write_series(folder, datasets)
            return probe.predict(folder, probe.root / "out" / "series" / name)

        return run

    def gap(datasets: list, folder: Path) -> None:
        del datasets[3]

    def two_series(datasets: list, folder: Path) -> None:
        datasets += series_datasets(oblique_volume(size=(32, 30, 6))[0])

    def turned(datasets: list, folder: Path) -> None:
        datasets[2].ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]

    def resized(datasets: list, folder: Path) -> None:
        datasets[1].Rows, datasets[1].PixelData = 10, datasets[1].PixelData[: 10 * 32 * 2]

    def compressed(datasets: list, folder: Path) -> None:
        import pydicom
        from pydicom.data import get_testdata_file

        jpeg = pydicom.dcmread(get_testdata_file("JPGExtended.dcm"))  # 12-bit JPEG: no decoder installed by default
        jpeg.ImagePositionPatient, jpeg.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
        datasets[:] = [jpeg]

    def structure_set(datasets: list, folder: Path) -> None:
        import pydicom
        from pydicom.data import get_testdata_file

        datasets[:] = [pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True)]

    def thick_roi() -> subprocess.CompletedProcess:
        data = probe.folder("roi-case")
        image = oblique_volume(size=(32, 30, 6))[0]
        write_series(data / "images" / "sax", series_datasets(image))
        roi = slicer_roi(image, (8, 8, 20, 20), 2)
        roi["markups"][0]["size"][2] = 30.0  # a 3D box over every slice, not a box on one
        path = _write(data / "R.mrk.json", json.dumps(roi))
        return probe.autoprompt("train", data, "-o", probe.root / "m.pt", "--params", probe.params, "--boxes", path)

    header = "image,x_min,y_min,x_max,y_max\n"
    return [
        ("params", "misspelt views (veiws)", lambda: probe.train_with(misspelt_views)),
        ("params", "misspelt weight_decay", lambda: probe.train_with(in_recipe("weight_decy", 1.0e-4))),
        ("params", "misspelt fit (fitt)", lambda: probe.train_with(lambda p: p["prepare"]["mine"].update(fitt="crop"))),
        ("params", "lr: fast", lambda: probe.train_with(in_recipe("lr", "fast"))),
        ("params", "batch_size: 0", lambda: probe.train_with(in_recipe("batch_size", 0))),
        ("params", "epochs: 0", lambda: probe.train_with(in_recipe("epochs", {"fewshot": 0, "all": 0}))),
        ("params", "epochs: -3", lambda: probe.train_with(in_recipe("epochs", {"fewshot": -3, "all": 1}))),
        ("params", "seeds: []", lambda: probe.train_with(lambda p: p["train"].update(seeds=[]))),
        ("params", "subsets: 0", lambda: probe.train_with(lambda p: p["train"].update(subsets=0))),
        ("params", "a recipe's lr renamed", lambda: probe.train_with(renamed_lr)),
        (
            "params",
            "unknown --dataset of a stage",
            stage("prepare", "--dataset", "nope", "--raw", "r", "--store", "s.zarr", "--index", "s.csv"),
        ),
        (
            "params",
            "not YAML",
            lambda: probe.autoprompt(
                "train", probe.data, "-o", "m.pt", "--params", _write(probe.root / "x.yaml", "train: [\n")
            ),
        ),
        ("images", "truncated .nii", image("cut.nii", truncated)),
        ("images", "truncated .nii.gz", image("cut.nii.gz", truncated)),
        ("images", "NaN voxels in an .mha", image("nan.mha", with_nan(np.nan))),
        ("images", "an infinite voxel in a .nii.gz", image("inf.nii.gz", with_nan(np.inf))),
        ("images", "a grey PNG with alpha (valid: segmented)", image("la.png", grey_alpha)),
        ("images", "not an image, .png suffix", image("fake.png", lambda p: p.write_text("hello"))),
        ("images", "a folder of DICOM files", dicom_folder),
        ("images", "a .dcm named in boxes.csv", boxes(header + "scan.dcm,1,1,5,5\n")),
        ("dicom", "a series with a slice missing", series("gap", gap)),
        ("dicom", "two series in one folder", series("two", two_series)),
        ("dicom", "a slice of another orientation", series("turned", turned)),
        ("dicom", "a slice of another size", series("resized", resized)),
        ("dicom", "a compressed series without its decoder", series("jpeg", compressed)),
        ("dicom", "an RT structure set, not an image", series("rt", structure_set)),
        ("dicom", "a Slicer ROI over every slice", thick_roi),
        ("boxes", "a header and no rows", boxes(header)),
        ("boxes", "a column missing", boxes("image,x_min,y_min,x_max\nimg0.png,1,1,5\n")),
        ("boxes", "corners swapped", boxes(header + "img0.png,50,50,10,10\n")),
        ("boxes", "a box outside the image", boxes(header + "img0.png,10,10,500,60\n")),
        ("boxes", "two boxes for one image", boxes(header + "img0.png,10,10,50,60\nimg0.png,11,10,50,60\n")),
        ("boxes", "an image name with ../", boxes(header + "../img0.png,10,10,50,60\n")),
        ("boxes", "not a number", boxes(header + "img0.png,ten,10,50,60\n")),
        ("boxes", "no boxes file at all", no_boxes_file),
        ("boxes", "a COCO box of zero width", export(coco([10, 10, 0, 20]))),
        ("boxes", "a COCO box of negative height", export(coco([10, 10, 20, -5]))),
        ("boxes", "a COCO box starting off the image", export(coco([-8, 10, 30, 30]))),
        ("boxes", "a COCO export of another image size", export(coco([10, 10, 30, 30], (240, 180)))),
        ("boxes", "a Label Studio export of another image size", export(studio(240, 180))),
        ("boxes", "a one-pixel box", boxes(header + "img0.png,10,10,10,10\n")),
        ("boxes", "a box that vanishes in the fit (crop 64)", boxes(header + "img0.png,10,10,11,11\n")),
        ("params", "crop: 3", lambda: probe.train_with(lambda p: p["prepare"]["mine"].update(crop=3))),
        (
            "params",
            "--label with a boxes.csv",
            lambda: probe.autoprompt(
                "train", probe.data, "-o", probe.root / "m.pt", "--params", probe.params, "--label", "lesion"
            ),
        ),
        (
            "params",
            "prepare's label with a boxes.csv",
            lambda: probe.train_with(lambda p: p["prepare"]["mine"].update(label="lesion")),
        ),
        (
            "params",
            "prepare's boxes naming a missing export (read, not ignored)",
            lambda: probe.train_with(lambda p: p["prepare"]["mine"].update(boxes="missing.json")),
        ),
        ("outputs", "predict -o equal to -i, --overwrite", predict_into_its_input("same")),
        ("outputs", "predict -o inside -i", predict_into_its_input("inside")),
        ("outputs", "predict -o around -i", predict_into_its_input("around")),
        ("outputs", "predict --overwrite onto a user's file", overwrite_a_users_file),
        ("outputs", "train -o boxes.csv", train_onto("boxes.csv")),
        ("outputs", "train -o an image", train_onto("images/img0.png")),
        ("outputs", "export -o a run's head.pt", export_into_a_run),
        ("outputs", "evaluate -o a reference mask", evaluate_onto("mask")),
        ("outputs", "evaluate -o a user's CSV", evaluate_onto("csv")),
        ("outputs", "train from inside a Git repository (valid: no .dvc)", train_in_a_git_repository),
        ("outputs", "export onto an existing folder", export_onto_a_folder),
        ("outputs", "an output folder that is a file", output_is_a_file),
        ("outputs", "x.png beside x_overlay.png, with overlays", colliding(("x.png", "x_overlay.png"))),
        ("outputs", "a.nii beside a.mha, with overlays", colliding(("a.nii", "a.mha"))),
        (
            "options",
            "--device cuda without a GPU",
            lambda: probe.predict(probe.data / "images", probe.root / "o", "--device", "cuda"),
        ),
        (
            "options",
            "--batch-size 0",
            lambda: probe.predict(probe.data / "images", probe.root / "o", "--batch-size", 0),
        ),
        (
            "options",
            "--part-id out of range",
            lambda: probe.predict(probe.data / "images", probe.root / "o", "--part-id", 3, "--num-parts", 2),
        ),
        (
            "options",
            "a missing checkpoint",
            lambda: probe.autoprompt(
                "train", probe.data, "-o", "m.pt", "--backbone", "medsam_vit_b", "--checkpoint", "none.pth"
            ),
        ),
        (
            "options",
            "predict --threshold 1.5",
            lambda: probe.predict(probe.data / "images", probe.root / "o", "--threshold", 1.5),
        ),
        (
            "options",
            "evaluate --tolerance -1",
            lambda: probe.autoprompt("evaluate", "--pred", scored()[0], "--masks", scored()[1], "--tolerance", -1),
        ),
        (
            "options",
            "--checkpoint for a LiteMedSAM model",
            lambda: probe.predict(probe.data / "images", probe.root / "o", "--checkpoint", "none.pth"),
        ),
        (
            "options",
            "train --checkpoint without --backbone medsam_vit_b",
            lambda: probe.autoprompt("train", probe.data, "-o", "m.pt", "--checkpoint", "none.pth"),
        ),
        ("scores", "evaluate a prediction of another spacing", evaluate_another_spacing),
        (
            "faults",
            "Ctrl-C during predict",
            interrupted(
                [
                    "predict",
                    "-m",
                    probe.model,
                    "-i",
                    probe.data / "images",
                    "-o",
                    probe.root / "out" / "ctrl-c",
                    "--device",
                    "cpu",
                ]
            ),
        ),
        (
            "faults",
            "Ctrl-C during train",
            interrupted(["train", probe.data, "-o", probe.root / "ctrl-c.pt", "--params", probe.params, "--runs", 1]),
        ),
        ("faults", "two trains on one work folder", two_trains_on_one_work_folder),
        ("images", "not gzip data named .nii.gz", image("plain.nii.gz", not_gzip)),
        (
            "options",
            "a model file that is not one",
            lambda: probe.predict(probe.data / "images", probe.root / "o", "-m", _write(probe.root / "x.pt", "x")),
        ),
    ]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


EXPECTED_OK = {"a grey PNG with alpha (valid: segmented)", "train from inside a Git repository (valid: no .dvc)"}


def names() -> list[tuple[str, str]]:
    """(class of failure, case) of every case, without building a probe (nothing is written or run)."""
    return [(kind, name) for kind, name, _ in cases(Probe(Path("/nonexistent/hostile-probe")))]


def expected(name: str) -> str:
    """The answer a case should get: ``ok`` for the valid ones, one line for the others."""
    return OK if name in EXPECTED_OK else ONE_LINE


def answer(kind: str, name: str, done: subprocess.CompletedProcess, scratch: Path) -> dict:
    """A case's row: its class, name, expected answer, the answer found and the error line it printed (this
    machine's paths made relative)."""
    errors = [line.split(" ERROR ", 1)[1] for line in done.stderr.splitlines() if " ERROR " in line]
    errors = errors or [line for line in done.stderr.splitlines() if line.startswith("autoprompt")]
    message = common.relative_paths(errors[0]).replace(f"{scratch}/", "") if errors else ""
    return {"class": kind, "case": name, "expected": expected(name), "answer": outcome(done), "message": message}
