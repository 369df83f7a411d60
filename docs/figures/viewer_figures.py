"""The pictures of docs/dicom.md: boxes drawn on a volume in 3D Slicer (ROI markups) and in napari (a Shapes layer),
and the pixel boxes ``autoprompt`` reads from them, on a synthetic oblique, anisotropic short-axis MR series.

Each picture is made by the readers themselves: the series is written as DICOM files, the ROIs and the napari CSV
are written as the viewers save them, ``read_boxes`` reads them, and the boxes it returns are what is drawn.

    python docs/figures/viewer_figures.py
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk
from matplotlib.patches import Rectangle

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: autoprompt and tests
from autoprompt.data.boxes import read_boxes
from autoprompt.data.images import read_image
from tests.dicom_series import napari_csv, oblique_volume, series_datasets, slicer_roi, write_series

log = logging.getLogger("viewer_figures")
FIGURES = Path(__file__).resolve().parent
SLICES = (2, 4, 6, 8, 10)


def tight(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def outline(axis, box, colour: str, style: str = "-") -> None:
    x0, y0, x1, y1 = box
    axis.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec=colour, lw=1.6, ls=style))


def slicer_figure(root: Path, array: np.ndarray, image: sitk.Image, mask: np.ndarray, path: Path) -> None:
    rois = root / "rois"
    rois.mkdir()
    for n, k in enumerate(SLICES):
        (rois / f"R_{n}.mrk.json").write_text(json.dumps(slicer_roi(image, tight(mask[k]), k, "RAS"), indent=1))
    boxes = {b.slice: b for b in read_boxes(rois, root / "images")["sax"]}
    example = json.loads((rois / "R_1.mrk.json").read_text())["markups"][0]
    figure, axes = plt.subplots(1, len(SLICES) + 1, figsize=(13, 2.9), gridspec_kw={"width_ratios": [1.6] + [1] * 5})
    text = (
        "R_1.mrk.json (3D Slicer ROI)\n"
        f'"coordinateSystem": "{example["coordinateSystem"]}"\n'
        f'"center": [{", ".join(f"{v:.1f}" for v in example["center"])}]\n'
        f'"size": [{", ".join(f"{v:.1f}" for v in example["size"])}]\n'
        '"orientation": the volume\'s axes\n\n'
        "mm, through the series' geometry\n(origin, spacing, direction)\n-> slice, x_min..x_max, y_min..y_max"
    )
    axes[0].text(0, 0.5, text, family="monospace", fontsize=7.5, va="center")
    axes[0].axis("off")
    for axis, k in zip(axes[1:], SLICES, strict=True):
        box = boxes[k]
        axis.imshow(array[k], cmap="gray")
        outline(axis, (box.x_min, box.y_min, box.x_max, box.y_max), "#ffcc00")
        axis.set_xlim(box.x_min - 12, box.x_max + 12)
        axis.set_ylim(box.y_max + 10, box.y_min - 10)
        axis.set_title(f"slice {k}: ({box.x_min}, {box.y_min}) - ({box.x_max}, {box.y_max})", fontsize=8)
        axis.axis("off")
    figure.suptitle(
        "One thin ROI per slice, each saved by Slicer as its own .mrk.json (RAS mm); --boxes rois/ reads them as these "
        "pixel boxes",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def napari_figure(root: Path, array: np.ndarray, mask: np.ndarray, path: Path) -> None:
    drawn = {k: tight(mask[k]) for k in SLICES}
    (root / "sax.csv").write_text(napari_csv(drawn))
    boxes = {b.slice: b for b in read_boxes(root / "sax.csv", root / "images")["sax"]}
    k = SLICES[2]
    lines = (root / "sax.csv").read_text().splitlines()
    mine = [line for line in lines[1:] if line.split(",")[3] == f"{k}.0"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1, 1.25]})
    left.imshow(array[k], cmap="gray")
    box = boxes[k]
    outline(left, (box.x_min, box.y_min, box.x_max, box.y_max), "#00c8ff")
    for line in mine:
        _, _, _, _, y, x = line.split(",")
        left.plot(float(x), float(y), "s", color="#00c8ff", ms=4)
        below = float(y) > box.y_max
        left.annotate(f"({k}, {float(y):g}, {float(x):g})", (float(x), float(y)), color="w", fontsize=7,
                      xytext=(-20, -11 if below else 5), textcoords="offset points")  # fmt: skip
    left.set_xlim(box.x_min - 14, box.x_max + 14)
    left.set_ylim(box.y_max + 11, box.y_min - 11)
    left.set_title(f"napari, slice {k} (axis 0): a rectangle in the Shapes layer", fontsize=9)
    left.axis("off")
    shown = "\n".join([lines[0], *mine])
    right.text(
        0,
        0.5,
        "File > Save Selected Layer(s) > sax.csv\n\n"
        + shown
        + f"\n\n-> sax, slice {k}: x {box.x_min}..{box.x_max}, y {box.y_min}..{box.y_max}\n"
        "(axis 0: slice; axis 1: row; axis 2: column;\n pixel centres on whole indices)",
        family="monospace",
        fontsize=7.5,
        va="center",
    )
    right.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    image, mask = oblique_volume(size=(64, 56, 12), spacing=(1.25, 1.25, 8.0), seed=4)
    with tempfile.TemporaryDirectory(prefix="viewer-figures-") as scratch:
        root = Path(scratch)
        write_series(root / "images" / "sax", series_datasets(image))
        array = sitk.GetArrayFromImage(read_image(root / "images" / "sax"))
        slicer_figure(root, array, image, mask, FIGURES / "slicer-roi-boxes.png")
        napari_figure(root, array, mask, FIGURES / "napari-shapes-boxes.png")
    log.info("wrote %s and %s", FIGURES / "slicer-roi-boxes.png", FIGURES / "napari-shapes-boxes.png")


if __name__ == "__main__":
    main()
