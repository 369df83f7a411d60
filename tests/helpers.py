"""What several test modules share: params sections as the files hold them, typed sections, small phantoms."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

from autoprompt.data.splits import assign_splits
from autoprompt.inference.files import Compute
from autoprompt.settings import DatasetPrepare, Settings, settings_from
from autoprompt.training.loop import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEMO_PARAMS = REPO / "demo" / "params.yaml"
# Converted encoders (autoprompt.model.runtimes), shared by every test and kept between runs: one conversion per
# backbone, checkpoint and OpenVINO release.
RUNTIME_CACHE = Path(tempfile.gettempdir()) / "autoprompt-tests" / "runtimes"
ON_CPU = Compute(device="cpu", cache_dir=RUNTIME_CACHE)  # predict on the CPU, converted encoders shared by the tests
SOURCE = "test params"  # what the typed sections of the tests name as their file


def settings(**sections: object) -> Settings:
    """Typed settings from sections as a params file holds them (every other section at its default)."""
    return settings_from(sections, SOURCE)


def prepare_section(name: str = "mine", **section: object) -> DatasetPrepare:
    """The typed ``prepare.<name>`` of ``section`` (a user's folder by default)."""
    return settings(prepare={name: section}).prepare.dataset(name)


def encode_section(batch_size: int, shard_size: int, **extra: object) -> dict:
    """An ``encode`` section for the tests: LiteMedSAM on the CPU, the default runtime, the shared runtime cache."""
    return {
        "backbone": "lite_medsam",
        "checkpoint": None,
        "device": "cpu",
        "gpu_autocast": "bfloat16",
        "compile": True,
        "runtime": "auto",
        "cpu_precision": "float32",
        "runtime_cache": str(RUNTIME_CACHE),
        "batch_size": batch_size,
        "shard_size": shard_size,
        **extra,
    }


def demo_recipes(epochs: dict[str, tuple[int, int]]) -> dict:
    """The demo's recipes, each with its few-shot epochs and milestone set: ``recipe -> (epochs, milestone)``."""
    recipes = yaml.safe_load(DEMO_PARAMS.read_text())["train"]["recipes"]
    for name, (count, milestone) in epochs.items():
        recipes[name]["epochs"]["fewshot"], recipes[name]["milestones"]["fewshot"] = count, [milestone]
    return {name: recipes[name] for name in epochs}


def train_section(shots: int, subsets: int, epochs: dict[str, tuple[int, int]], **extra: object) -> dict:
    """A ``train`` section for the tests: the demo's ``recipes`` with ``epochs`` (``demo_recipes``), on the CPU."""
    return {
        "shots": shots,
        "subsets": subsets,
        "subset_seed": 0,
        "seeds": [0],
        "all_images": False,
        "recipe": list(epochs),
        "select": "last",
        "validate_every": 0,
        "predict_batch_size": 8,
        "init": {"prompt": "mean_box", "scale": 0.01},
        "device": "cpu",
        "threads": 2,
        "recipes": demo_recipes(epochs),
        **extra,
    }


def _tiny_recipes() -> dict:
    """The demo's recipes at two epochs, batches of two; the augmented recipe also flips, the follow-up's has its
    consistency loss (the demo leaves it out)."""
    recipes = yaml.safe_load(DEMO_PARAMS.read_text())["train"]["recipes"]
    for recipe in recipes.values():
        recipe.update(batch_size=2, epochs={"fewshot": 2, "all": 1}, milestones={"fewshot": [1], "all": [1]})
    recipes["augmented"]["augment"]["inputs"]["dihedral"] = 0.5
    recipes["followup"]["loss"]["consistency"] = 1.0e-3
    return recipes


TRAIN = {  # a train section of tiny recipes, for the loop's tests
    "recipe": ["workshop", "followup", "augmented"],
    "recipes": _tiny_recipes(),
    "select": "last",
    "validate_every": 0,
    "init": {"prompt": "whole_box", "scale": 0.01},
}


def train_config(recipe: str = "workshop", regime: str = "fewshot", **changes: object) -> TrainConfig:
    """The optimisation config of one of ``TRAIN``'s recipes (``changes``: keys of the train section)."""
    return TrainConfig.from_settings(settings(train={**TRAIN, **changes}).train, recipe, regime)


def sources_of(root: Path, files: dict[str, str]) -> Path:
    """A folder of Python sources (relative path -> text), for ``autoprompt.sources``."""
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


PICTURE = (90, 120)  # rows x columns of the 2D folder phantoms
BOXES = {"img0.png": (30, 25, 90, 65), "img1.png": (10, 20, 50, 60), "img2.png": (31, 26, 89, 64)}
MASKED = ("img0.png", "img3.png", "img4.png")  # img5.png has neither mask nor box


def ellipse(shape: tuple[int, int], centre: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    """H x W uint8 0/1 filled ellipse; ``centre`` and ``axes`` as (x, y)."""
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    return mask


def write_csv(root: Path, rows: list[str], header: str = "image,x_min,y_min,x_max,y_max") -> None:
    (root / "boxes.csv").write_text("\n".join([header, *rows]) + "\n")


def write_pictures(root: Path, masked: tuple[str, ...] = MASKED, boxes: dict | None = None) -> Path:
    """A user's folder of six 90 x 120 PNGs, each a bright ellipse on noise; masks for ``masked``, boxes.csv with
    ``boxes``."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        mask = ellipse(PICTURE, (55 + i, 45), (28, 18))
        image = (rng.integers(0, 40, PICTURE) + 150 * mask).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"img{i}.png"), image)
        if f"img{i}.png" in masked:
            (root / "masks").mkdir(exist_ok=True)
            cv2.imwrite(str(root / "masks" / f"img{i}.png"), 255 * mask)
    boxes = BOXES if boxes is None else boxes
    write_csv(root, [f"{name},{','.join(map(str, box))}" for name, box in boxes.items()])
    return root


def split_table(table: pd.DataFrame, proportions: dict[str, float], seed: int) -> pd.Series:
    """The split of every row, by subject, dealt by ``proportions`` (``data.splits.assign_splits``); rows whose split
    the dataset fixes keep it."""
    sizes = table.groupby("subject").size().to_dict()
    fixed = table.dropna(subset=["split"]).groupby("subject")["split"].first().to_dict()
    by_subject = assign_splits(sizes, proportions, seed, fixed)
    return table["subject"].map(by_subject)
