"""Throughput of ``autoprompt.predict`` on the CPU (LiteMedSAM through OpenVINO, the CPU default): 2D images and a
3D volume, split by step.

2D: real HC18 images (``--hc18``, read in place; phantoms in the HC18 layout where the sample is absent), predicted
with the paper configuration's HC18 preprocessing (crop 640). 3D: ACDC-like phantom volumes (no real volume is
available here; ``autoprompt.data.phantoms.acdc``, 216 x 256 pixels of 1.25-1.75 mm, 10 slices), predicted with
the ACDC preprocessing (in-plane resampling to 1 mm, crop 256). The model is one prompt head with seeded random
weights: a trained head runs the same operations. Each repeat predicts every input into an emptied folder
(``overwrite``); the per-step seconds come from ``predict``'s own timings (read, preprocess, encode, decode,
postprocess, write), medians over ``--repeats``; the total is the wall time from the first input read to the last
output written, less than the steps' sum where reading ahead overlaps them.

On the CPU, each of predict's numerics runs in its own process (the CPU code paths are read when torch loads):
``fast``, the default (the CPU's own instructions; OpenVINO's bfloat16 encoder and the decoder under bfloat16 autocast
where the CPU has AVX-512 BF16 or AMX), and ``exact`` (``--exact``: float32, pinned to AVX2, oneDNN off). Whether the
fast path keeps the masks' Dice is ``bench/studies/own_data.py``'s question.

    python -m bench.timings predict [--hc18 /path/to/hc18-sample] [--images 8] [--volumes 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from autoprompt.data.phantoms.acdc import write_acdc_phantoms
from autoprompt.data.phantoms.hc18 import write_hc18_phantoms
from autoprompt.data.preprocess import Preprocessing
from autoprompt.device import EXACT, EXACT_NUMERICS, FAST, Numerics, numerics
from autoprompt.inference import Compute, Model, Writing, predict
from autoprompt.io import file_sha256
from autoprompt.model import checkpoints
from autoprompt.model.head import PromptHead
from bench.lib import common

log = logging.getLogger("bench.predict")

CACHE = common.BENCH / ".work" / "runtimes"  # converted encoders (OpenVINO)

STEPS = ("read", "preprocess", "encode", "decode", "postprocess", "write")


def random_model(preprocessing: Preprocessing, task: str) -> Model:
    """A LiteMedSAM model with one seeded random head, trained on nothing, for timing."""
    torch.manual_seed(0)
    checkpoint = checkpoints.resolve_checkpoint("lite_medsam", None)
    return Model(
        heads=[PromptHead().state_dict()],
        runs=["random/seed0"],
        task=task,
        class_name="structure",
        label_value=1,
        label_size=preprocessing.crop,
        backbone="lite_medsam",
        checkpoint_sha256=file_sha256(checkpoint),
        checkpoint=None,
        runtime="openvino",  # as the pipeline's CPU encode makes them; predict encodes the same way
        precision="float32",
        preprocessing=preprocessing,
        configs=[{}],
    )


def hc18_source(root: Path) -> str:
    """Where the 2D images come from: the real sample, or phantoms in its layout where it is absent."""
    return (
        f"real HC18 ({root})"
        if (root / "training_set").is_dir()
        else "phantoms (autoprompt.data.phantoms.hc18, seed 0)"
    )


def hc18_images(root: Path, count: int, scratch: Path) -> tuple[list[Path], str]:
    """The first ``count`` ``NNN_HC.png`` of the sample (phantoms where it is absent) and where they come from."""
    folder = root / "training_set"
    if not folder.is_dir():
        log.warning("real HC18 data NOT FOUND at %s; timing phantoms in the HC18 layout instead", root)
        write_hc18_phantoms(scratch / "hc18", subjects=count, size=(800, 540), seed=0, second_image=0.0)
        folder = scratch / "hc18/training_set"
    return sorted(folder.glob("[0-9][0-9][0-9]_HC.png"))[:count], hc18_source(root)


def acdc_volumes(count: int, scratch: Path) -> list[Path]:
    write_acdc_phantoms(scratch / "acdc", training=count, testing=0, size=(216, 256), slices=(10, 10), seed=0)
    return sorted((scratch / "acdc/training").glob("patient*/patient*_frame01.nii.gz"))


def measure(
    model: Model, inputs: list[Path], out: Path, device: str, repeats: int, units: int, numerics: Numerics
) -> dict:
    """Median seconds per step and in all over ``repeats`` whole predictions of ``inputs`` (``units`` slices)."""
    rows, walls = [], []
    options = (Compute(device, cache_dir=CACHE, numerics=numerics), Writing(overwrite=True))
    predict(model, inputs[:1], out, *options)  # warm-up: builds, first calls
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        summary = predict(model, inputs, out, *options)
        assert len(summary.written) == len(inputs), "every input is written"
        rows.append({step: summary.timings.get(step, 0.0) for step in STEPS})
        walls.append(summary.seconds)
    per_step = {step: round(common.median([r[step] for r in rows]), 4) for step in STEPS}
    steps = sum(per_step.values())
    total = common.median(walls)
    return {
        "encoder": json.loads((out / "predict.json").read_text())["encoder"],
        "decoder": json.loads((out / "predict.json").read_text())["decoder"],
        "numerics": numerics.record(),
        "inputs": len(inputs),
        "slices": units,
        "repeats": repeats,
        "seconds_per_step_median": per_step,
        "share_per_step": {step: round(v / steps, 3) for step, v in per_step.items()},
        "seconds_steps_median": round(steps, 3),
        "seconds_total_median": round(total, 3),
        "seconds_runs": [round(w, 3) for w in walls],
        "inputs_per_second": round(len(inputs) / total, 4),
        "slices_per_second": round(units / total, 4),
    }


def run(
    device: str,
    args: argparse.Namespace,
    images: list[Path],
    volumes: list[Path],
    scratch: Path,
    numerics: Numerics = EXACT_NUMERICS,
) -> dict:
    hc18 = random_model(Preprocessing(crop=640, fit="crop"), "hc18")
    acdc = random_model(Preprocessing(crop=256, fit="crop", spacing=1.0), "acdc-lv")
    result = {
        "2d_hc18_png": measure(hc18, images, scratch / "out2d", device, args.repeats, len(images), numerics),
        "3d_acdc_nifti": measure(acdc, volumes, scratch / "out3d", device, args.repeats, 10 * len(volumes), numerics),
    }
    for name, row in result.items():
        log.info(
            "%s %s: %.3f inputs/s, %.3f slices/s; shares %s",
            device,
            name,
            row["inputs_per_second"],
            row["slices_per_second"],
            row["share_per_step"],
        )
    return result


def cpu_worker(mode: str, args: argparse.Namespace) -> dict:
    """The CPU rows of one numerics ``mode``, in this process (started by ``spawn``)."""
    common.setup_logging()
    chosen = numerics(mode, torch.device("cpu"), args.threads)
    with common.scratch_dir() as tmp:
        scratch = Path(tmp)
        images, _ = hc18_images(args.hc18, args.images, scratch)
        return run("cpu", args, images, acdc_volumes(args.volumes, scratch), scratch, chosen)


def spawn(mode: str) -> dict:
    """``cpu_worker(mode)`` in a new process, its CPU code paths pinned for ``exact`` and left alone for ``fast``."""
    env = common.numerics_env(mode == EXACT)
    command = common.timing_command("predict", *sys.argv[1:], "--worker", mode)
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE)
    if done.returncode:
        raise RuntimeError(f"the {mode} worker failed (its log is above)")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="HC18 sample, official layout")
    parser.add_argument("--images", type=int, default=8, help="2D images per repeat")
    parser.add_argument("--volumes", type=int, default=2, help="3D volumes (10 slices each) per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=(FAST, EXACT), help=argparse.SUPPRESS)
    if "--worker" in sys.argv:
        parser.add_argument("--threads", type=int)
        args = parser.parse_args()
        print(json.dumps(cpu_worker(args.worker, args)))
        return
    args, machine = common.parse_and_start(parser)
    cpu = {mode: spawn(mode) for mode in (FAST, EXACT)}
    fast, exact = (cpu[m]["2d_hc18_png"]["inputs_per_second"] for m in (FAST, EXACT))
    cpu["fast_over_exact_2d"] = round(fast / exact, 2)
    log.info("2D HC18: %.2f images/s fast, %.2f exact (%.2fx)", fast, exact, fast / exact)
    source, gpu = hc18_source(args.hc18), common.NO_GPU
    if common.gpu_device():
        with common.scratch_dir() as tmp:
            scratch = Path(tmp)
            images, _ = hc18_images(args.hc18, args.images, scratch)
            gpu = run("cuda", args, images, acdc_volumes(args.volumes, scratch), scratch)
    common.write_result(
        "predict",
        {
            "benchmark": "predict",
            "what": "autoprompt.predict end to end (files in, masks written), LiteMedSAM, one random head; "
            "median seconds per step over the repeats; on the CPU the fast numerics (the default) and --exact's, "
            "each in its own process",
            "machine": machine,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"},
            "data": {"2d": source, "3d": "ACDC-like phantom volumes, 216 x 256 x 10, 1.25-1.75 mm in-plane"},
            "cpu": cpu,
            "gpu": gpu,
        },
    )
