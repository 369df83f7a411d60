"""``predict``: segment images and volumes with a trained model, each mask written on its input's own grid.

Inputs are files or folders (searched recursively) of the formats in ``autoprompt.data.images``. Each output has
its input's name (relative to the folder it was found in), under ``output_dir``: volumes keep their format, spacing,
origin and direction; 2D pictures are written as PNG (JPEG would blur a mask). Masks are uint8, 1 (or
``label_value``) inside; ``probabilities=True`` writes float32 probabilities instead (TIFF for pictures).
Existing outputs (with their overlay, where overlays are asked for) are skipped unless ``overwrite``, so a killed run
resumes; ``part_id`` / ``num_parts`` take every ``num_parts``-th input, so several processes can share one job. The
masks are post-processed by default as the model's policy says (``autoprompt.inference.policy``: re-prompted with the
margin ``autoprompt train`` chose, volumes fitted, slices judged absent emptied and logged); ``report`` writes
``output_dir/report.html`` (``autoprompt.inference.report``).
"""

from __future__ import annotations

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

from autoprompt.data.images import DICOM, DICOM_FIX, PICTURES, is_image, read_image, suffix, write_like
from autoprompt.device import select_device
from autoprompt.errors import InputError
from autoprompt.inference import report
from autoprompt.inference.model import Model, load_model
from autoprompt.inference.policy import FROM_MODEL, resolve
from autoprompt.inference.predictor import Predictor
from autoprompt.inference.presence import Presence
from autoprompt.inference.report import Entry, write_report
from autoprompt.inference.report import entry as report_entry

log = logging.getLogger(__name__)

ON_ERROR = ("stop", "skip")
OVERLAY_SUFFIX = "_overlay.png"
REPORT = "report.html"


@dataclass(frozen=True)
class Target:
    """One input file, the output it gets, and the overlay PNG beside it (written where overlays are asked for)."""

    source: Path
    output: Path

    @property
    def overlay(self) -> Path:
        return self.output.with_name(self.output.name[: -len(suffix(self.output))] + OVERLAY_SUFFIX)

    def done(self, overlays: bool) -> bool:
        return self.output.exists() and (not overlays or self.overlay.exists())


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


def plan_targets(
    inputs: list[Path | str], output_dir: Path, probabilities: bool, overlays: bool = False
) -> list[Target]:
    """Every input file with its output path; a folder contributes every image file below it. Two inputs whose
    outputs (or overlays, where they are written) would share a path are refused."""
    targets: dict[Path, Target] = {}
    for entry in map(Path, inputs):
        if entry.is_dir():
            files = [p for p in sorted(entry.rglob("*")) if p.is_file() and not p.name.startswith(".")]
            found = [(p, p.relative_to(entry)) for p in files if is_image(p)]
            dicom = [p for p in files if suffix(p) in DICOM]
            if dicom and not found:
                raise InputError(f"{entry}: {len(dicom)} DICOM files, which are not read here; {DICOM_FIX}")
            if dicom:
                log.warning("%s: %d DICOM files left out (%s); %s", entry, len(dicom), dicom[0].name, DICOM_FIX)
            if not found:
                raise InputError(f"{entry}: no image files in this folder; give PNG, JPEG, NIfTI, MHA/MHD or NRRD")
        elif entry.exists():
            found = [(entry, Path(entry.name))]
        else:
            raise InputError(f"{entry}: no such file or folder; check the input path")
        for source, relative in found:
            target = Target(source, output_dir / output_name(relative, probabilities))
            paths = (target.output, target.overlay) if overlays else (target.output,)
            for path in paths:  # an overlay's name may be another input's output, or its overlay's
                if path in targets and targets[path].source != source:
                    raise InputError(
                        f"{source}: its output {path} would overwrite one of {targets[path].source}'s; rename one of "
                        "them, or predict them into different output folders"
                    )
            targets.update(dict.fromkeys(paths, target))
    return list(dict.fromkeys(targets.values()))


def write_atomic(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    """Write ``array`` like ``reference`` to ``path`` (and a ``.raw`` beside a ``.mhd``) whole or not at all: the
    files are read back before they take their final names (a full disk can leave SimpleITK's files empty without an
    error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".predict-") as tmp:
        written = Path(tmp) / path.name
        write_like(array, reference, written)
        _check_written(written, array.shape, path)
        for part in sorted(Path(tmp).iterdir(), key=lambda p: p.name == path.name):  # the header last
            os.replace(part, path.parent / part.name)


def _check_written(written: Path, shape: tuple[int, ...], path: Path) -> None:
    """Refuse an output that did not reach the disk whole: an empty file, or one that does not read back."""
    parts = list(written.parent.iterdir())
    try:
        empty = [p for p in parts if p.stat().st_size == 0]
        back = sitk.GetArrayViewFromImage(sitk.ReadImage(str(written))).shape if not empty else None
    except RuntimeError:
        back = None
    if back != tuple(shape):
        raise InputError(f"{path}: the output did not reach the disk whole (is it full?); free space and run again")


def write_overlay(image: sitk.Image, mask: np.ndarray, path: Path) -> None:
    """A PNG of the input (the slice with the largest mask for a volume) with the mask's outline in red."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    if not cv2.imwrite(str(tmp), report.overlay_picture(image, mask)) or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: the overlay did not reach the disk whole (is it full?); free space and run again")
    os.replace(tmp, path)


def _references(targets: list[Target], masks: Path | None, boxes: Path | None, label: str | None):
    """The report's references: each input's reference mask file (``masks``) and drawn boxes (``boxes``)."""
    from autoprompt.data.boxes import read_boxes
    from autoprompt.data.folder import find_mask, mask_files

    found_masks = mask_files(Path(masks)) if masks is not None else {}
    if masks is not None and not found_masks:
        raise InputError(f"{masks}: no mask files in this folder; give the folder of reference masks")
    drawn = {}
    if boxes is not None:
        sources = {t.source.parent for t in targets}
        drawn = {name: b for folder in sources for name, b in read_boxes(Path(boxes), folder, label).items()}
    return {t.source: (find_mask(found_masks, t.source), drawn.get(t.source.name, ())) for t in targets}


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
    reprompt_margin: float | str | None = FROM_MODEL,
    reprompt_from: Path | str | None = None,
    volume_min_iou: float | str | None = FROM_MODEL,
    presence: Presence | str | None = FROM_MODEL,
    report: bool = False,
    masks: Path | str | None = None,
    boxes: Path | str | None = None,
    label: str | None = None,
) -> Summary:
    """Segment every input with ``model`` (a run folder, a folder of runs, an exported file, or a ``Model``) and
    write the results under ``output_dir``; see the module's docstring. ``label_value``: the value written inside
    masks (1 when None; ``model``: the class's value in the training labels). ``on_error``: ``stop`` raises an
    unreadable input's InputError, ``skip`` logs and counts it.
    ``checkpoint``: the backbone checkpoint, when not the model's configured path or packaged weights.
    ``runtime``: the encoder's runtime on a CPU (``auto``: OpenVINO when installed; ``predictor.encoder_choice``);
    ``cache_dir``: where converted encoders are kept (``runtimes.default_cache_dir()`` when None).
    ``reprompt_margin``: re-prompt the decoder with the masks' boxes loosened by this margin (None: off).
    ``volume_min_iou``: with re-prompting, a volume's slices whose masks' boxes are missing between found ones or
    off the sequence of boxes fitted across its slices are prompted again with the fitted box
    (``autoprompt.inference.volume``; None: not). ``presence``: the slices (or 2D images) judged not to hold the
    structure get empty masks (``autoprompt.inference.presence``; None: none). Each of the three left at
    ``FROM_MODEL`` is what ``reprompt_from`` (the evaluate stage's metrics JSON) records for the model's recipe and
    regime, else the model's own (``autoprompt.inference.policy.resolve``).
    ``report``: write ``output_dir/report.html``, each input scored against its mask in ``masks`` or its box in
    ``boxes`` (``label``: the boxes' label, where the file holds several), else by the runs' agreement."""
    if on_error not in ON_ERROR:
        raise InputError(f"on_error is {on_error!r}; use stop or skip")
    if not 0 <= part_id < num_parts:
        raise InputError(f"part {part_id} of {num_parts}: give 0 <= --part-id < --num-parts")
    output_dir = Path(output_dir)
    model = model if isinstance(model, Model) else load_model(model)
    policy, sources = resolve(
        model.policy, model.group(), margin=reprompt_margin, volume_min_iou=volume_min_iou, presence=presence,
        reprompt_from=reprompt_from,
    )  # fmt: skip
    margin, volume_min_iou = policy.margin, policy.volume_min_iou
    if margin is None:
        log.info("re-prompting: off (%s); the heads' masks are kept", sources["margin"])
    else:
        log.info("re-prompting with margin %g (%s)", margin, policy.how or sources["margin"])
    if volume_min_iou is None:
        log.info("volume fit: off (%s)", sources["volume_min_iou"])
    elif margin is None:
        log.info("volume fit: off, it needs re-prompting (--reprompt-margin M turns both on)")
    else:
        log.info(
            "volume fit: volumes' slices prompted again below box IoU %g (%s)",
            volume_min_iou,
            sources["volume_min_iou"],
        )
    if policy.presence is None:
        log.info("presence: off (%s); every slice keeps its mask", sources["presence"])
    else:
        log.info("presence: slices emptied from each end in where %s (%s)", policy.presence.describe(),
                 sources["presence"])  # fmt: skip
    targets = plan_targets(inputs, output_dir, probabilities, overlays)[part_id::num_parts]
    references = _references(targets, masks, boxes, label) if report else {}
    summary, todo, existing = Summary(), [], []
    for target in targets:
        (existing if target.done(overlays) and not overwrite else todo).append(target)
    summary.existing = [target.output for target in existing]
    log.info(
        "%s: %d inputs, %d already predicted (kept; --overwrite redoes them), %d to predict",
        model.describe(),
        len(targets),
        len(summary.existing),
        len(todo),
    )
    entries = [_entry_of_existing(t, threshold, references) for t in existing] if report else []
    if todo:
        predictor = Predictor(
            model, select_device(device, "--device"), batch_size, checkpoint, runtime, cache_dir, margin, threshold,
            volume_min_iou, policy.presence,
        )  # fmt: skip
        _predict_targets(todo, predictor, summary, threshold, probabilities, label_value, overlays, on_error,
                         references if report else None, entries)  # fmt: skip
    if report:
        title = f"autoprompt predict: {model.describe()}, {len(entries)} inputs"
        report_path = output_dir / REPORT
        write_report(entries, report_path, title)
        log.info("wrote %s (worst first)", report_path)
    log.info(
        "wrote %d outputs to %s; %d skipped as existing, %d unreadable inputs skipped",
        len(summary.written),
        output_dir,
        len(summary.existing),
        len(summary.failed),
    )
    return summary


def _predict_targets(
    todo: list[Target],
    predictor: Predictor,
    summary: Summary,
    threshold: float,
    probabilities: bool,
    label_value: int | str | None,
    overlays: bool,
    on_error: str,
    references: dict | None,
    entries: list[Entry],
) -> None:
    """Segment and write each target of ``todo``; where ``references`` is given, add its report entry."""
    timings = predictor.timings
    model = predictor.model
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
        if segmentation.refitted:
            log.info(
                "%s: slices prompted again with their neighbours' boxes: %s",
                target.source.name,
                ", ".join(f"{n} {reason}" for reason, n in sorted(segmentation.refitted.items())),
            )
        if segmentation.absent:
            log.info(
                "%s: judged absent, emptied: %s %s",
                target.source.name,
                "slices" if segmentation.stack.slices > 1 else "the image",
                ", ".join(map(str, segmentation.absent)) if segmentation.stack.slices > 1 else "",
            )
        start = time.perf_counter()
        mask = (segmentation.probabilities > threshold).astype(np.uint8) * np.uint8(value)
        result = segmentation.probabilities.astype(np.float32) if probabilities else mask
        write_atomic(result, image, target.output)
        if overlays:
            write_overlay(image, mask, target.overlay)
        if references is not None:
            iou = segmentation.evidence.iou.numpy() if segmentation.evidence is not None else None
            entries.append(_entry(target, image, mask, references, segmentation.agreement, segmentation.absent, iou))
        timings["write"] += time.perf_counter() - start
        summary.written.append(target.output)
    summary.timings = dict(timings)


def _entry(
    target: Target,
    image: sitk.Image,
    mask: np.ndarray,
    references: dict,
    agreement: float | None,
    absent: list[int] | None = None,
    predicted_iou: np.ndarray | None = None,
) -> Entry:
    reference_file, drawn = references[target.source]
    reference = None
    if reference_file is not None:
        reference = sitk.GetArrayFromImage(read_image(reference_file)) != 0
    return report_entry(target.source.name, image, mask, reference, drawn, agreement, absent, predicted_iou)


def _entry_of_existing(target: Target, threshold: float, references: dict) -> Entry:
    """The report entry of an input predicted by an earlier call: its output read back (no run agreement)."""
    image = read_image(target.source)
    output = sitk.GetArrayFromImage(read_image(target.output))
    mask = (output > threshold) if output.dtype.kind == "f" else output > 0
    return _entry(target, image, mask.astype(np.uint8), references, None)
