"""Trained runs on disk: ``<out>/<regime>/<run>/head.pt`` beside the run's dvclive logs.

``head.pt`` holds the head's weights, the run's config and the config's fingerprint; the config includes a hash of
the training code. A run whose saved fingerprint equals the planned one is finished and is not trained again, so a
killed train stage resumes where it stopped, and a change of ``train.shots`` leaves the all-images runs alone. Runs
are written to a temporary folder and moved into place whole.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import ModuleType

import torch

from autoprompt.errors import InputError
from autoprompt.head import PromptHead

WEIGHTS = "head.pt"


def code_sha256(modules: list[ModuleType]) -> str:
    """One hash of the source files of ``modules``: a run trained by other code is trained again."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def fingerprint(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def is_done(run_dir: Path, config: dict) -> bool:
    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        return False
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged file is trained again
        return False
    return saved.get("fingerprint") == fingerprint(config)


def save_head(folder: Path, head: PromptHead, config: dict) -> None:
    torch.save(
        {"head": head.state_dict(), "config": config, "fingerprint": fingerprint(config)}, Path(folder) / WEIGHTS
    )


def load_head(run_dir: Path) -> tuple[PromptHead, dict]:
    """A trained head and its config, read weights-only."""
    path = Path(run_dir) / WEIGHTS
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        head = PromptHead()
        head.load_state_dict(saved["head"])
    except Exception as error:
        raise InputError(
            f"{path}: not a readable head checkpoint ({error.__class__.__name__}); run the train stage again"
        ) from error
    return head.eval(), saved["config"]


def finished_runs(out: Path) -> list[Path]:
    """Every run folder under ``out`` that holds weights, sorted by regime and name."""
    return sorted(p.parent for p in Path(out).glob(f"*/*/{WEIGHTS}"))


def run_key(run_dir: Path) -> str:
    """``regime/run`` of a run folder ``<out>/<regime>/<run>``."""
    return f"{run_dir.parent.name}/{run_dir.name}"


def remove_stale(out: Path, keep: set[str]) -> list[str]:
    """Delete run folders whose ``regime/run`` key is not in ``keep`` (left by earlier params); return them."""
    removed = []
    for run_dir in sorted(Path(out).glob("*/*")):
        key = run_key(run_dir)
        if run_dir.is_dir() and not run_dir.name.startswith(".") and key not in keep:
            shutil.rmtree(run_dir)
            removed.append(key)
    return removed
