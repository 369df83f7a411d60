"""Shared helpers of the benchmarks: machine facts, timing, result files, real HC18 images and child processes.

The benchmarks run from the repository root (``python -m bench.timings NAME``, ``python -m bench.studies.NAME``);
each writes ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

log = logging.getLogger("bench")

BENCH = Path(__file__).resolve().parents[1]
RESULTS = BENCH / "results"
REPO = BENCH.parent
DEFAULT_HC18 = REPO.parent / "shared" / "data" / "hc18-sample"
NO_GPU = "not run: no GPU"

T = TypeVar("T")


def parse_and_start(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, dict]:
    """Add ``--threads``, parse, set up logging and torch's threads; return the arguments and the machine."""
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    run_as = getattr(sys.modules["__main__"], "__spec__", None)  # python -m bench.studies.NAME
    if parser.prog.endswith(".py") and run_as is not None:
        parser.prog = f"python -m {run_as.name.removesuffix('.__main__')}"
    args = parser.parse_args()
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_info()
    log.info("machine: %s", machine)
    return args, machine


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> dict[str, bool]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {name: name in flags for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """What the numbers were measured on, with the load average at the start (the machine may be shared)."""
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    return info


def gpu_device() -> torch.device | None:
    return torch.device("cuda") if torch.cuda.is_available() else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """Wall seconds of one call of ``fn`` (the GPU's queue drained before and after), and its result."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def dice_percent(probs: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5) -> float:
    """Mean Dice (%) of N x S x S probabilities cut at ``threshold`` against N x S x S masks, to 2 decimals."""
    from autoprompt.evaluation.metrics import dice

    return round(100 * float(dice(probs > threshold, masks).mean()), 2)


def median(values: list[float]) -> float:
    return statistics.median(values)


def relative_paths(text: str) -> str:
    """``text`` with this machine's absolute paths of the repository and of the folder beside it made relative
    to the repository, so that a committed result names no machine's own paths."""
    return text.replace(f"{REPO}/", "").replace(f"{REPO.parent}/", "../")


def write_result(name: str, payload: dict) -> Path:
    """``bench/results/<name>.json``, with the load average at the end added to ``payload['machine']``."""
    payload.setdefault("machine", {})["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(relative_paths(json.dumps(payload, indent=2)) + "\n")
    log.info("wrote %s", path)
    return path


def save_hc18(data: dict, path: Path) -> None:
    """``load_hc18``'s arrays as one ``.npz`` file, to carry prepared images where the readers' libraries are not."""
    np.savez_compressed(
        path,
        images=data["images"].numpy(),
        masks=np.packbits(data["masks"].numpy(), axis=-1),
        boxes=data["boxes"].numpy(),
        ids=np.array(data["ids"]),
        source=np.array(data["source"]),
    )


def _load_npz(path: Path, count: int) -> dict:
    with np.load(path) as saved:
        images = torch.from_numpy(saved["images"][:count])
        masks = np.unpackbits(saved["masks"][:count], axis=-1, count=images.shape[-1]).astype(bool)
        return {
            "images": images,
            "masks": torch.from_numpy(masks),
            "boxes": torch.from_numpy(saved["boxes"][:count]),
            "ids": [str(i) for i in saved["ids"][:count]],
            "source": f"{saved['source']} (prepared, from {path.name})",
        }


def load_hc18(root: Path, count: int, crop: int, scratch: Path) -> dict:
    """The first ``count`` HC18 images under ``root`` (official layout), prepared as the pipeline does.

    Clipped and rescaled by the reader, centre cropped/padded to ``crop``; head masks and their tight boxes
    (x_min, y_min, x_max, y_max, inclusive). Where ``root`` holds no HC18 layout, phantoms in that layout are
    written under ``scratch`` and used instead, and ``source`` says so. ``root`` may also be a ``.npz`` file
    written by ``save_hc18``.
    """
    if Path(root).suffix == ".npz":
        return _load_npz(Path(root), count)
    from autoprompt.data import hc18
    from autoprompt.data.phantoms.hc18 import write_hc18_phantoms
    from autoprompt.data.preprocess import crop_or_pad, tight_box
    from autoprompt.settings import Hc18Prepare

    root = Path(root)
    if (root / "training_set").is_dir():
        source = f"real HC18 ({root})"
    else:
        log.warning(
            "real HC18 data NOT FOUND at %s (no training_set/); falling back to synthetic phantoms "
            "(pass --hc18 PATH to use the real sample)",
            root,
        )
        root = Path(scratch) / "hc18-phantoms"
        write_hc18_phantoms(root, subjects=count, size=(800, 540), seed=0, second_image=0.0)
        source = "phantoms (autoprompt.data.phantoms.hc18, seed 0): real HC18 not found"
    section = Hc18Prepare(crop=crop)
    images, masks, boxes, ids = [], [], [], []
    for files in hc18.find(root, section):
        for case in hc18.load(files, section):
            image, label = crop_or_pad(case.image, crop), crop_or_pad(case.label, crop)
            box = tight_box(label == hc18.READER.classes["head"])
            if box is None:
                continue
            images.append(image)
            masks.append(label == hc18.READER.classes["head"])
            boxes.append(box)
            ids.append(case.id)
        if len(images) >= count:
            break
    images, masks, boxes, ids = images[:count], masks[:count], boxes[:count], ids[:count]
    log.info("loaded %d images from %s", len(images), source)
    return {
        "images": torch.from_numpy(np.stack(images)),
        "masks": torch.from_numpy(np.stack(masks)),
        "boxes": torch.tensor(boxes, dtype=torch.int64),
        "ids": ids,
        "source": source,
    }


def numerics_env(pinned: bool, **extra: str) -> dict[str, str]:
    """This process's environment for a child whose torch loads on the exact path (``pinned``: the CPU code paths of
    ``autoprompt.cpu_paths`` set) or on the CPU's own instructions (none of them, nor ``AUTOPROMPT_NUMERICS``), plus
    ``extra``: the variables are read once, when torch loads, so a lever of its own needs a process of its own."""
    from autoprompt.cpu_paths import CPU_CODE_PATHS

    env = {k: v for k, v in os.environ.items() if k not in CPU_CODE_PATHS and k != "AUTOPROMPT_NUMERICS"}
    return {**env, **(CPU_CODE_PATHS if pinned else {}), **extra}


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="autoprompt-bench-")


def timing_command(name: str, *argv: object) -> list[str]:
    """The command that runs timing benchmark ``name`` with ``argv`` in a process of its own (its workers: the CPU
    code paths are read once, when torch loads)."""
    return [sys.executable, "-m", "bench.timings", name, *map(str, argv)]


def timed_lines(command: list[str], cwd: Path) -> tuple[list[tuple[float, str]], int]:
    """Run ``command`` in ``cwd``; every line of its output with the seconds since the start, and the exit status."""
    bin_dir = Path(sys.executable).parent  # the stages' ``python`` is this environment's
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append((time.perf_counter() - start, line.rstrip("\n")))
    proc.wait()
    lines.append((time.perf_counter() - start, ""))
    return lines, proc.returncode


def random_vit_b_checkpoint(folder: Path) -> Path:
    """A MedSAM-format checkpoint (a plain SAM ViT-B state dict) of a seeded random model."""
    from segment_anything import sam_model_registry

    path = folder / "medsam_vit_b.pth"
    torch.manual_seed(0)
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    return path
