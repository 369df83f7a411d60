"""Trained runs on disk: ``<out>/<recipe>/<regime>/<run>/head.pt`` beside the run's inputs and dvclive logs.

``head.pt`` holds the head's weights, the run's config and the config's fingerprint; the config includes hashes of the
run's boxes and pseudo-labels and of the code that trained it (``autoprompt.sources``). A run whose saved fingerprint
equals the planned one is finished and is not trained again, so a killed train stage resumes where it stopped, and a
change of ``train.shots`` leaves the all-images runs alone. Runs are written to a temporary folder and moved into place
whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch

from autoprompt.errors import InputError
from autoprompt.io import save_torch
from autoprompt.model.head import PromptHead

log = logging.getLogger(__name__)

WEIGHTS = "head.pt"
MODEL = "model.pt"  # a baseline's run: its weights under the same layout


def fingerprint(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def is_done(run_dir: Path, config: dict, weights: str = WEIGHTS) -> bool:
    path = Path(run_dir) / weights
    if not path.is_file():
        return False
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged file is trained again
        return False
    return saved.get("fingerprint") == fingerprint(config)


def open_log(folder: Path):
    """dvclive's log of one run in ``folder``: params, per-epoch metrics and plots. It never looks for a DVC
    repository: dvclive would otherwise run ``dvc init`` at the root of any Git repository that ``autoprompt train``
    is called from (a user's analysis repository) and stage ``.dvc/`` there."""
    from dvclive import Live

    class RunLog(Live):
        def _init_dvc(self) -> None:  # no repository lookup, no ``dvc init``
            return None

    return RunLog(dir=str(folder), dvcyaml=None, save_dvc_exp=False, report=None)


def save_head(folder: Path, head: PromptHead, config: dict, **record: object) -> None:
    """``head.pt``: the weights, the run's config and its fingerprint, and a ``record`` of how it went (the
    selected epoch, say), which is not part of the fingerprint."""
    save_torch(
        {"head": head.state_dict(), "config": config, "fingerprint": fingerprint(config), "record": record},
        Path(folder) / WEIGHTS,
    )


def save_model(folder: Path, state: dict, config: dict) -> None:
    """A baseline's ``model.pt``: its state dict, the run's config and its fingerprint."""
    save_torch({"model": state, "config": config, "fingerprint": fingerprint(config)}, Path(folder) / MODEL)


def load_baseline(run_dir: Path) -> tuple[dict, dict]:
    """A baseline run's state dict and config, read weights-only."""
    path = Path(run_dir) / MODEL
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return saved["model"], saved["config"]
    except Exception as error:
        raise InputError(
            f"{path}: not a readable baseline checkpoint ({error.__class__.__name__}); run the baseline stage again"
        ) from error


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


def load_record(run_dir: Path) -> dict:
    """What ``save_head`` recorded of how a run went (its selected epoch, say); empty for older runs."""
    saved = torch.load(Path(run_dir) / WEIGHTS, map_location="cpu", weights_only=True)
    return dict(saved.get("record", {}))


def finished_runs(out: Path, weights: str = WEIGHTS) -> list[Path]:
    """Every run folder under ``out`` that holds weights, sorted by recipe (or method), regime and name."""
    return sorted(p.parent for p in Path(out).glob(f"*/*/*/{weights}"))


def run_key(run_dir: Path) -> str:
    """``recipe/regime/run`` of a run folder ``<out>/<recipe>/<regime>/<run>``."""
    return "/".join(Path(run_dir).parts[-3:])


def group_key(key: str) -> str:
    """``recipe/regime`` of a run key: the runs that a metrics row summarises."""
    return key.rsplit("/", 1)[0]


def holds_files(out: Path) -> bool:
    """Whether ``out`` holds any file outside hidden folders (a run, a log, anything a user could lose)."""
    return any(
        path.is_file() and not any(part.startswith(".") for part in path.relative_to(out).parts)
        for path in Path(out).rglob("*")
    )


def remove_stale(out: Path, keep: set[str], why: str = "check the train settings") -> list[str]:
    """Delete the folders under ``out`` that hold no run of ``keep`` (``recipe/regime/run`` keys): runs of earlier
    params, and recipes or regimes no longer planned. Returns what was removed, relative to ``out``.

    An empty ``keep`` (a plan of no runs: ``why`` says what planned none) deletes nothing and succeeds: a fresh
    output stays empty; runs already there are kept, with a warning, since a plan of no runs is as often a mistake as
    a wish to lose every run (``evaluate`` scores only the methods its params plan)."""
    if not keep:
        if holds_files(out):
            log.warning(
                "%s: no runs are planned (%s); the runs already here are kept, not deleted, and evaluate leaves "
                "them out: delete the folder yourself if they should go",
                out,
                why,
            )
        return []
    prefixes = {"/".join(key.split("/")[:depth]) for key in keep for depth in (1, 2, 3)}
    removed = []
    for pattern in ("*", "*/*", "*/*/*"):
        for folder in sorted(Path(out).glob(pattern)):
            relative = folder.relative_to(out).as_posix()
            if folder.is_dir() and not folder.name.startswith(".") and relative not in prefixes:
                shutil.rmtree(folder)
                removed.append(relative)
    return removed
