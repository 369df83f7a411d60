"""What every stage script shares: params by section, logging, one-line errors, device choice."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from autoprompt.data.tasks import Task
from autoprompt.errors import InputError
from autoprompt.model import backbones

log = logging.getLogger("autoprompt")


def load_params(path: Path | str = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: params file not found; run from the folder that holds dvc.yaml")
    with path.open() as handle:
        return yaml.safe_load(handle)


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (params.yaml)")
    return parser


def task_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of a stage that works on one task: its name, prepared data and embeddings."""
    parser_ = parser(description)
    parser_.add_argument("--task", required=True)
    parser_.add_argument("--prepared", type=Path, required=True, help="prepared Zarr store of the task's dataset")
    parser_.add_argument("--index", type=Path, required=True, help="prepared CSV index")
    parser_.add_argument("--embeddings", type=Path, required=True, help="embedding Zarr store")
    return parser_


def run(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's main; a bad input ends it with its one-line message and exit status 2."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        main(argv)
    except InputError as error:
        log.error("%s", error)
        sys.exit(2)


def pin_cpu_numerics(section: dict) -> None:
    """Fix torch's CPU threads (``threads`` in a stage's params section), ask for deterministic algorithms and turn
    oneDNN off, so that the same params give the same numbers on any x86 machine with the same thread count.

    oneDNN picks its convolution kernels and blocking by the CPU's cache sizes, so its sums differ between
    machines; without it convolutions run as im2col + MKL GEMM, which ``MKL_CBWR`` (``stages/__init__.py``) makes
    reproducible. The CPU cost is measured by ``bench/onednn.py``; GPU runs are unaffected."""
    threads = section.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.mkldnn.enabled = False


def task_checkpoint(task: Task, encode: dict, embeddings: Path) -> Path:
    """The backbone checkpoint of ``encode`` (params), refused unless the task's embeddings were made with it."""
    checkpoint = backbones.resolve_checkpoint(encode["backbone"], encode.get("checkpoint"))
    if backbones.file_sha256(checkpoint) != task.embeddings.attrs["checkpoint_sha256"]:
        raise InputError(
            f"{embeddings}: encoded with another checkpoint than {checkpoint}; run the encode stage again (dvc repro)"
        )
    return checkpoint


def select_device(setting: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; or a torch device string."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)
