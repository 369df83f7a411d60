"""Lay out the real HC18 sample as a user's own folder dataset: images, ten boxes, and masks to compare with.

``<out>/images/NNN_HC.png``: links to the sample's first image of each subject (never copied); ``<out>/boxes.csv``:
the ten boxes of ``boxes.csv`` beside this script (tight boxes of ten training images, as a user would draw them);
``<out>/masks/NNN_HC.png``: the filled ellipse of each image's annotated outline (HC18's annotations are outlines),
used only to score the predictions.

    python gather.py --hc18 ../../../shared/data/hc18-sample --boxes boxes.csv --out data/raw/fetal-head
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import cv2
from tqdm import tqdm

from autoprompt.console import run
from autoprompt.data.hc18 import IMAGE_NAME, fill_ellipse, fit_ellipse
from autoprompt.errors import InputError
from autoprompt.io import atomic_path

log = logging.getLogger("gather")


def gather(hc18: Path, boxes: Path, out: Path) -> int:
    """Write the folder dataset; returns the number of images."""
    source = hc18 / "training_set"
    if not source.is_dir():
        raise InputError(f"{source}: the HC18 sample is not there; pass --hc18 the folder that holds training_set/")
    firsts = [p for p in sorted(source.glob("*_HC.png")) if (m := IMAGE_NAME.match(p.name)) and not m["index"]]
    with atomic_path(out) as tmp:
        (tmp / "images").mkdir(parents=True)
        (tmp / "masks").mkdir()
        for path in tqdm(firsts, desc="gather", unit="image"):
            (tmp / "images" / path.name).symlink_to(path.resolve())
            outline = cv2.imread(str(path.with_name(f"{path.stem}_Annotation.png")), cv2.IMREAD_GRAYSCALE)
            mask = fill_ellipse(outline.shape, *fit_ellipse(outline, path))
            cv2.imwrite(str(tmp / "masks" / path.name), mask)
        shutil.copyfile(boxes, tmp / "boxes.csv")
    log.info("%s: %d images (linked), %d masks, the boxes of %s", out, len(firsts), len(firsts), boxes)
    return len(firsts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, required=True, help="the HC18 sample (official layout)")
    parser.add_argument("--boxes", type=Path, required=True, help="the boxes.csv to use")
    parser.add_argument("--out", type=Path, required=True, help="the folder dataset to write")
    args = parser.parse_args(argv)
    gather(args.hc18, args.boxes, args.out)


if __name__ == "__main__":
    run(main)
