"""The HC18 sample as the own-data walkthrough's folder (``examples/own-data``), for the studies that treat it as a
user's folder (``bench.studies.draws``, ``bench.studies.picks``): laid out, its tight boxes read, the authors' training
split as a folder of its own, and the images ``autoprompt suggest`` lists from it.
"""

from __future__ import annotations

import csv
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import zarr

from autoprompt.data.splits import authors_lists
from autoprompt.io import atomic_path
from bench.lib import common

log = logging.getLogger("bench.walkthrough")

WALKTHROUGH = common.REPO / "examples" / "own-data"
THREADS = 2
SEED = "_seed"  # a rule's ten from another start: "suggested_<method>_seed<S>" (bench.studies.draws --tens)


def gathered(hc18: Path, work: Path) -> Path:
    """The HC18 sample laid out as the walkthrough's folder, ``work/fetal-head`` (``examples/own-data/gather.py``; kept
    between calls)."""
    data = work / "fetal-head"
    if not data.exists():
        subprocess.run([sys.executable, str(WALKTHROUGH / "gather.py"), "--hc18", str(hc18.resolve()), "--boxes",
                        str(WALKTHROUGH / "boxes.csv"), "--out", str(data)], check=True)  # fmt: skip
    return data


def tight_boxes(masks: Path) -> dict[str, tuple[int, int, int, int]]:
    """Image name -> the tight box (x_min, y_min, x_max, y_max, inclusive) of its mask."""
    from autoprompt.data.images import read_image
    from autoprompt.data.preprocess import tight_box

    boxes = {}
    for path in sorted(masks.glob("*.png")):
        box = tight_box(sitk.GetArrayFromImage(read_image(path)) > 0)
        if box is not None:
            boxes[path.name] = box
    return boxes


def authors_split(data: Path, work: Path) -> tuple[Path, list[str]]:
    """The authors' training split of the sample as a folder of its own (``images/``: links), and the names of their
    test split's images (the lists: ``autoprompt.data.splits.authors_lists``)."""
    lists = {split: set(ids) for split, ids in authors_lists("hc18").entries.items()}
    names = sorted(p.name for p in (data / "images").glob("*.png"))
    train = [n for n in names if Path(n).stem in lists["train"]]
    test = [n for n in names if Path(n).stem in lists["test"]]
    pool = work / "authors-train"
    if not pool.exists():
        with atomic_path(pool) as tmp:
            (tmp / "images").mkdir(parents=True)
            for name in train:
                (tmp / "images" / name).symlink_to((data / "images" / name).resolve())
    log.info("the authors' split: %d training images to draw from, %d test images", len(train), len(test))
    return pool, test


def listed(data: Path, n: int, out: Path, env: dict, *options: str) -> list[str]:
    """The images ``autoprompt suggest -i data -n n -o out OPTIONS`` lists, in its order (``out`` made anew)."""
    autoprompt = Path(sys.executable).with_name("autoprompt")
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([str(autoprompt), "suggest", "-i", str(data), "-n", str(n), "-o", str(out), "--threads",
                    str(THREADS), *options], check=True, env=env)  # fmt: skip
    with (out / "boxes.csv").open() as handle:
        return [row["image"] for row in csv.DictReader(handle)]


def box_area(box: tuple[int, int, int, int]) -> int:
    """Pixels of an inclusive box (x_min, y_min, x_max, y_max)."""
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def kept_features(data: Path) -> tuple[list[str], np.ndarray]:
    """The image names and the N x 256 pooled embeddings that ``autoprompt suggest`` kept for the folder ``data``
    (in ``DATA.work``; a folder of 2D images: no slice positions)."""
    from autoprompt.own_data import default_work, suggest_store
    from autoprompt.suggest_boxes import pooled_features

    store = suggest_store(default_work(data))
    names = [f"{i}.png" for i in zarr.open_group(store, mode="r").attrs["ids"]]
    return names, pooled_features(store)


def seeded_ten(features: np.ndarray, n: int, method: str, seed: int) -> list[int]:
    """The rows of ``features`` (N x D) that ``method``'s rule picks from start ``seed``, near-duplicates skipped as
    ``suggest`` skips them: seed 0 is ``suggest``'s own list; the others are like ``train.draw: suggest``'s subsets
    after the first (typical with k-means++ seed ``seed``, k-center from a seeded image instead of the medoid)."""
    from autoprompt.training import suggest

    if method == "typical":
        return suggest.typical(features, n, seed=seed, min_distance=suggest.DUPLICATE)
    assert method == "kcenter", f"seeded tens are drawn by typical or kcenter, not {method}"
    start = int(np.random.default_rng(seed).integers(len(features))) if seed else None
    return suggest.choose(features, n, start=start, min_distance=suggest.DUPLICATE)
