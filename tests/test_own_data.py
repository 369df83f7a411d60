"""A user's own folder through the whole pipeline: boxes only train a head that predicts every image; with masks/,
evaluate reports Dice against them, and without, agreement with the box-prompted backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml

from autoprompt.inference import predict
from stages import encode, evaluate, prepare, train
from tests.helpers import ON_CPU, PICTURE, encode_section, train_section, write_pictures

SETTINGS = {"reader": "folder", "class": "lesion", "crop": 128, "fit": "resize"}


def params(split: object) -> dict:
    return {
        "datasets": ["own"],
        "tasks": {"own": {"dataset": "own", "class": "lesion", "column": "own"}},
        "prepare": {"seed": 0, "on_error": "stop", "min_foreground": 10, "own": {**SETTINGS, "split": split}},
        "encode": encode_section(batch_size=3, shard_size=8, threads=2),
        "train": train_section(2, 1, {"workshop": (4, 3)}),
        "evaluate": {"threshold": 0.5, "batch_size": 8, "nsd_tolerance_mm": 2.0, "examples": 2, "device": "cpu"},
    }


def run_stages(root: Path, split: object) -> dict:
    """prepare -> encode -> train -> evaluate on ``root/raw``; returns the metrics."""
    (root / "params.yaml").write_text(yaml.safe_dump(params(split)))
    p = ["--params", str(root / "params.yaml")]
    store, index, emb = root / "own.zarr", root / "own.csv", root / "emb.zarr"
    prepare.main([*p, "--dataset", "own", "--raw", str(root / "raw"), "--store", str(store), "--index", str(index)])
    encode.main([*p, "--dataset", "own", "--store", str(store), "--out", str(emb)])
    data = ["--task", "own", "--prepared", str(store), "--index", str(index), "--embeddings", str(emb)]
    train.main([*p, *data, "--out", str(root / "models")])
    outputs = ["--metrics", str(root / "m.json"), "--per-image", str(root / "m.csv"), "--figure", str(root / "m.png")]
    evaluate.main([*p, *data, "--models", str(root / "models"), *outputs])
    return json.loads((root / "m.json").read_text())


def test_boxes_alone_train_a_head_that_predicts_every_image(tmp_path):
    """No masks/: three boxed images, dealt by proportions; the test image is scored for agreement only."""
    write_pictures(tmp_path / "raw", masked=())
    metrics = run_stages(tmp_path, {"train": 2, "test": 1})
    assert metrics["reference"]["masks"] == 0 and metrics["reference"]["box_prompted"] >= 1
    assert "dice" not in metrics and "workshop" in metrics["agreement"]["dice"]
    out = tmp_path / "out"
    summary = predict(tmp_path / "models", [tmp_path / "raw/images"], out, ON_CPU)
    assert len(summary.written) == 6, "every image is segmented, boxed or not"
    for path in summary.written:
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert mask.shape == PICTURE and set(np.unique(mask)) <= {0, 1}


def test_with_masks_evaluate_reports_dice_against_them(tmp_path):
    """split: boxes: the boxed images train, the masked ones without a box are the test set, scored on their masks."""
    write_pictures(tmp_path / "raw")
    metrics = run_stages(tmp_path, "boxes")
    assert metrics["reference"] == {"masks": 2, "box_prompted": 0} and metrics["test_images"] == 2
    assert "agreement" not in metrics
    assert metrics["dice"]["tight_box"]["mean"] > 50, "the box-prompted backbone finds the bright ellipses"
    assert 0 <= metrics["dice"]["workshop"]["fewshot"]["mean"] <= 100
