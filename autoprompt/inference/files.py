"""``predict``: segment images and volumes with a trained model, each mask written on its input's own grid.

Inputs are files or folders (searched recursively) of the formats in ``autoprompt.data.images``. Each output has
its input's name (relative to the folder it was found in), under ``output_dir``: volumes keep their format, spacing,
origin and direction; 2D pictures are written as PNG (JPEG would blur a mask). Masks are uint8, 1 (or
``label_value``) inside; ``probabilities=True`` writes float32 probabilities instead (TIFF for pictures).
Existing outputs are skipped unless ``overwrite``, so a killed run resumes; ``part_id`` / ``num_parts`` take every
``num_parts``-th input, so several processes can share one job.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from autoprompt.data.images import PICTURES, is_image, read_image, suffix, write_like
from autoprompt.device import select_device
from autoprompt.errors import InputError
from autoprompt.inference.model import Model, load_model
from autoprompt.inference.predictor import Predictor, Segmentation

log = logging.getLogger(__name__)

ON_ERROR = ("stop", "skip")
OVERLAY_SUFFIX = "_overlay.png"


@dataclass(frozen=True)
class Target:
    """One input file and the output it gets."""

    source: Path
    output: Path


@dataclass
class Summary:
    """What a ``predict`` call did: outputs written, skipped because they existed, inputs that failed (with their
    one-line reasons), and the seconds spent per step (read, preprocess, encode, decode, postprocess, write)."""

    written: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def output_name(relative: Path, probabilities: bool) -> Path:
    """The output's path relative to ``output_dir``: the input's, with pictures as PNG (TIFF for probabilities)."""
    kind = suffix(relative)
    if kind not in PICTURES:
        return relative
    stem = relative.name[: -len(kind)] if kind else relative.name
    return relative.with_name(stem + (".tif" if probabilities else ".png"))


def plan_targets(inputs: list[Path | str], output_dir: Path, probabilities: bool) -> list[Target]:
    """Every input file with its output path; a folder contributes every image file below it."""
    targets: dict[Path, Target] = {}
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = [(p, p.relative_to(entry)) for p in sorted(entry.rglob("*")) if is_image(p)]
            if not found:
                raise InputError(f"{entry}: no image files in this folder; give PNG, JPEG, NIfTI, MHA/MHD or NRRD")
        elif entry.exists():
            found = [(entry, Path(entry.name))]
        else:
            raise InputError(f"{entry}: no such file or folder; check the input path")
        for source, relative in found:
            output = output_dir / output_name(relative, probabilities)
            if output in targets and targets[output].source != source:
                raise InputError(
                    f"{source}: its output {output} would overwrite that of {targets[output].source}; predict them "
                    "into different output folders"
                )
            targets[output] = Target(source, output)
    return list(targets.values())


def write_atomic(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    """Write ``array`` like ``reference`` to ``path`` (and a ``.raw`` beside a ``.mhd``) whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".predict-") as tmp:
        write_like(array, reference, Path(tmp) / path.name)
        for written in sorted(Path(tmp).iterdir(), key=lambda p: p.name == path.name):  # the header last
            os.replace(written, path.parent / written.name)


def overlay(segmentation: Segmentation, mask: np.ndarray, path: Path) -> None:
    """A PNG of the input (the slice with the largest mask for a volume) with the mask's outline in red."""
    planes = mask if mask.ndim == 3 else mask[None]
    grey = sitk.GetArrayFromImage(segmentation.stack.image).astype(np.float32)
    grey = grey if grey.ndim == 3 else grey[None]
    if segmentation.stack.order not in (None, (0, 1, 2)):  # a 2D image stored in 3D: show its one plane
        grey, planes = np.squeeze(grey)[None], np.squeeze(planes)[None]
    k = int(np.argmax(planes.reshape(len(planes), -1).sum(1)))
    low, high = np.percentile(grey[k], (0.5, 99.5))
    picture = np.clip((grey[k] - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    picture = cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours((planes[k] > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(picture, contours, -1, (0, 0, 255), max(1, round(max(picture.shape[:2]) / 400)))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    cv2.imwrite(str(tmp), picture)
    os.replace(tmp, path)


def recorded_margin(metrics: Path, model: Model) -> float | None:
    """The re-prompt margin that evaluate's metrics JSON records for the model's group (None: not re-prompted)."""
    group = model.group()
    if group is None:
        raise InputError(f"{metrics}: its margins are per recipe and regime; give a model of one (e.g. one folder)")
    try:
        recorded = json.loads(metrics.read_text())["reprompt"]["groups"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"{metrics}: no re-prompt margins in it ({error.__class__.__name__}); give evaluate's metrics JSON "
            "of a run with reprompt.margin set, or --reprompt-margin"
        ) from error
    if group not in recorded:
        raise InputError(f"{metrics}: no margin recorded for {group}; evaluate the model's task with it first")
    margin = recorded[group]["margin"]
    log.info("%s: re-prompt margin %s, as %s records", group, margin if margin is not None else "none (off)", metrics)
    return margin


def predict(
    model: Model | Path | str,
    inputs: list[Path | str],
    output_dir: Path | str,
    *,
    device: str = "auto",
    batch_size: int = 8,
    threshold: float = 0.5,
    probabilities: bool = False,
    label_value: int | str | None = None,
    overlays: bool = False,
    overwrite: bool = False,
    on_error: str = "stop",
    checkpoint: Path | str | None = None,
    runtime: str = "auto",
    cache_dir: Path | str | None = None,
    part_id: int = 0,
    num_parts: int = 1,
    reprompt_margin: float | None = None,
    reprompt_from: Path | str | None = None,
) -> Summary:
    """Segment every input with ``model`` (a run folder, a folder of runs, an exported file, or a ``Model``) and
    write the results under ``output_dir``; see the module's docstring. ``label_value``: the value written inside
    masks (1 when None; ``model``: the class's value in the training labels). ``on_error``: ``stop`` raises an
    unreadable input's InputError, ``skip`` logs and counts it.
    ``checkpoint``: the backbone checkpoint, when not the model's configured path or packaged weights.
    ``runtime``: the encoder's runtime on a CPU (``auto``: OpenVINO when installed; ``predictor.encoder_choice``);
    ``cache_dir``: where converted encoders are kept (``runtimes.default_cache_dir()`` when None).
    ``reprompt_margin``: re-prompt the decoder with the masks' boxes loosened by this margin (None: off);
    ``reprompt_from``: instead, the margin that the evaluate stage's metrics JSON at that path records for the
    model's recipe and regime (``reprompt.margin: auto`` chooses it per task on the validation boxes)."""
    if on_error not in ON_ERROR:
        raise InputError(f"on_error is {on_error!r}; use stop or skip")
    if not 0 <= part_id < num_parts:
        raise InputError(f"part {part_id} of {num_parts}: give 0 <= --part-id < --num-parts")
    output_dir = Path(output_dir)
    model = model if isinstance(model, Model) else load_model(model)
    if reprompt_from is not None:
        reprompt_margin = recorded_margin(Path(reprompt_from), model)
    targets = plan_targets(inputs, output_dir, probabilities)[part_id::num_parts]
    summary = Summary()
    todo = []
    for target in targets:
        (summary.existing if target.output.exists() and not overwrite else todo).append(target)
    log.info(
        "%s: %d inputs, %d already predicted (kept; --overwrite redoes them), %d to predict",
        model.describe(),
        len(targets),
        len(summary.existing),
        len(todo),
    )
    if not todo:
        return summary
    predictor = Predictor(
        model, select_device(device, "--device"), batch_size, checkpoint, runtime, cache_dir, reprompt_margin, threshold
    )
    timings = predictor.timings
    value = model.label_value if label_value == "model" else 1 if label_value is None else int(label_value)
    for target in tqdm(todo, desc="predict", unit="input"):
        start = time.perf_counter()
        try:
            image = read_image(target.source)
        except InputError as error:
            if on_error == "stop":
                raise
            log.warning("skipped: %s", error)
            summary.failed.append(str(error))
            continue
        timings["read"] += time.perf_counter() - start
        segmentation = predictor.segment(image)
        start = time.perf_counter()
        mask = (segmentation.probabilities > threshold).astype(np.uint8) * np.uint8(value)
        result = segmentation.probabilities.astype(np.float32) if probabilities else mask
        write_atomic(result, image, target.output)
        if overlays:
            stem = target.output.name[: -len(suffix(target.output))]
            overlay(segmentation, mask, target.output.with_name(stem + OVERLAY_SUFFIX))
        timings["write"] += time.perf_counter() - start
        summary.written.append(target.output)
    summary.timings = dict(timings)
    log.info(
        "wrote %d outputs to %s; %d skipped as existing, %d unreadable inputs skipped",
        len(summary.written),
        output_dir,
        len(summary.existing),
        len(summary.failed),
    )
    return summary
