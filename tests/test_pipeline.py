"""A tiny end-to-end run through the stage modules on phantoms: the box-trained head must beat box baselines."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zarr

from autoprompt.metrics import dice
from stages import encode, evaluate, prepare, report, simulate, train

PARAMS = {
    "datasets": ["hc18"],
    "tasks": {"hc18": {"dataset": "hc18", "class": "head", "column": "HC"}},
    "simulate": {"hc18": {"subjects": 14, "size": [800, 540], "seed": 1, "second_image": 0.3}},
    "prepare": {
        "seed": 0,
        "on_error": "stop",
        "min_foreground": 10,
        "hc18": {"crop": 640, "split": {"train": 507, "val": 77, "test": 148}},
    },
    "encode": {
        "backbone": "lite_medsam",
        "checkpoint": None,
        "device": "cpu",
        "gpu_autocast": "bfloat16",
        "batch_size": 1,
        "shard_size": 4,
    },
    "train": {
        "shots": 10,
        "subsets": 1,
        "subset_seed": 0,
        "seeds": [0],
        "all_images": False,
        "epochs": 30,
        "batch_size": 4,
        "lr": 1.0e-3,
        "weight_decay": 1.0e-4,
        "milestones": [20],
        "gamma": 0.1,
        "init": {"prompt": "mean_box", "scale": 0.01},
        "loss": {
            "outer_bce": 1.0,
            "tightness": {"weight": 1.0e-4, "d": 5},
            "size": {"weight": 1.0e-2, "bounds": [0.5, 0.9]},
            "t": 5.0,
        },
        "device": "cpu",
    },
    "evaluate": {"threshold": 0.5, "batch_size": 8, "examples": 2, "device": "cpu"},
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Every stage once, in order, as dvc repro would run them; returns the working folder."""
    root = tmp_path_factory.mktemp("pipeline")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    p = ["--params", str(params)]
    store, index, emb = root / "prepared.zarr", root / "prepared.csv", root / "embeddings.zarr"
    simulate.main([*p, "--dataset", "hc18", "--out", str(root / "raw")])
    prepare.main([*p, "--dataset", "hc18", "--raw", str(root / "raw"), "--store", str(store), "--index", str(index)])
    encode.main([*p, "--dataset", "hc18", "--store", str(store), "--out", str(emb)])
    data = ["--task", "hc18", "--prepared", str(store), "--index", str(index), "--embeddings", str(emb)]
    train.main([*p, *data, "--out", str(root / "models")])
    evaluate.main(
        [
            *p,
            *data,
            "--models",
            str(root / "models"),
            "--metrics",
            str(root / "metrics/hc18.json"),
            "--per-image",
            str(root / "metrics/hc18/per_image.csv"),
            "--figure",
            str(root / "metrics/hc18/examples.png"),
        ]
    )
    report.main(
        [
            *p,
            "--metrics",
            str(root / "metrics"),
            "--table",
            str(root / "metrics/table.md"),
            "--figure",
            str(root / "metrics/dice.png"),
        ]
    )
    return root


def box_baselines(root) -> tuple[float, float]:
    """Test Dice (%) of an empty mask and of the filled tight box."""
    table = pd.read_csv(root / "prepared.csv", dtype={"id": str, "subject": str})
    test = table[table["split"] == "test"]
    labels = zarr.open_group(root / "prepared.zarr", mode="r")["labels"][:][test.index.to_numpy()] == 1
    filled = np.zeros_like(labels)
    for i, (x0, y0, x1, y1) in enumerate(test[["head_x0", "head_y0", "head_x1", "head_y1"]].to_numpy()):
        filled[i, y0 : y1 + 1, x0 : x1 + 1] = True
    truth = torch.from_numpy(labels)
    return (
        100 * float(dice(torch.zeros_like(truth), truth).mean()),
        100 * float(dice(torch.from_numpy(filled), truth).mean()),
    )


def test_box_trained_head_beats_empty_and_filled_box(pipeline):
    result = json.loads((pipeline / "metrics/hc18.json").read_text())
    empty, filled = box_baselines(pipeline)
    head = result["dice"]["fewshot"]["mean"]
    assert result["dice"]["fewshot"]["shots"] == 10 and result["dice"]["fewshot"]["n"] == 1
    assert head > empty + 50, f"head {head:.1f} vs empty mask {empty:.1f}"
    assert head > filled + 2, f"head {head:.1f} vs filled tight box {filled:.1f}"
    assert result["dice"]["tight_box"]["mean"] > 90, "LiteMedSAM prompted with the tight box"


def test_outputs_are_complete(pipeline):
    per_image = pd.read_csv(pipeline / "metrics/hc18/per_image.csv")
    assert list(per_image.columns) == ["id", "subject", "fewshot", "tight_box"]
    assert per_image[["fewshot", "tight_box"]].to_numpy().min() >= 0
    for figure in ("metrics/hc18/examples.png", "metrics/dice.png"):
        assert (pipeline / figure).read_bytes()[:4] == b"\x89PNG"
    table = (pipeline / "metrics/table.md").read_text()
    assert "Prompt module — ours, LiteMedSAM | 10 | boxes" in table.replace("**", "")
    assert "85.23 ± 0.55" in table, "the paper's number beside ours"


def test_train_resumes_without_retraining(pipeline, caplog):
    weights = pipeline / "models/fewshot/subset0-seed0/head.pt"
    before = weights.stat().st_mtime_ns
    p = ["--params", str(pipeline / "params.yaml")]
    data = [
        "--task",
        "hc18",
        "--prepared",
        str(pipeline / "prepared.zarr"),
        "--index",
        str(pipeline / "prepared.csv"),
        "--embeddings",
        str(pipeline / "embeddings.zarr"),
    ]
    with caplog.at_level("INFO"):
        train.main([*p, *data, "--out", str(pipeline / "models")])
    assert "1 already trained, 0 to train" in caplog.text
    assert weights.stat().st_mtime_ns == before
