"""``predict``: segment images and volumes with a trained model, each mask written on its input's own grid.

Inputs are files or folders (searched recursively) of the formats in ``autoprompt.data.images``. Each output has
its input's name (relative to the folder it was found in), under ``output_dir``: volumes keep their format, spacing,
origin and direction; 2D pictures are written as PNG (JPEG would blur a mask); a folder of one DICOM series gets a
DICOM SEG of the series (``<folder>.dcm``, ``autoprompt.data.dicom.write_seg``) or, asked for, ``<folder>.nii.gz``.
Masks are uint8, 1 (or ``label_value``) inside; ``probabilities=True`` writes float32 probabilities instead (TIFF
for pictures, a fractional SEG for series).
Existing outputs (with their overlay, where overlays are asked for) are skipped unless ``overwrite``, so a killed run
resumes; ``part_id`` / ``num_parts`` take every ``num_parts``-th input, so several processes can share one job.

Nothing but predict's own outputs is ever replaced (``autoprompt.outputs``): the output folder may not be, contain or
lie inside an input (the model, the images, the report's masks and boxes); each output is recorded in
``output_dir/.autoprompt-predict.txt`` before it takes its name, and a file there that predict did not write is
refused, ``overwrite`` or not. One process at a time holds the folder (one per part). The masks are post-processed
by default as the model's policy says (``autoprompt.inference.policy``: re-prompted with the margin ``autoprompt
train`` chose, volumes fitted, slices judged absent emptied and logged); ``report`` writes
``output_dir/report.html`` (``autoprompt.inference.report``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from autoprompt import __version__
from autoprompt.data.dicom import write_seg
from autoprompt.data.images import DICOM, DICOM_FIX, PICTURES, is_image, read_image, suffix, write_like
from autoprompt.device import EXACT_NUMERICS, Numerics, select_device
from autoprompt.errors import InputError
from autoprompt.inference import report
from autoprompt.inference.model import Model, load_model
from autoprompt.inference.policy import FROM_MODEL, Policy, resolve
from autoprompt.inference.predictor import Predictor
from autoprompt.inference.presence import Presence
from autoprompt.inference.report import Entry, write_report
from autoprompt.inference.report import entry as report_entry
from autoprompt.io import write_text
from autoprompt.model.checkpoints import is_packaged
from autoprompt.outputs import HOST, clear_stale, hold, refuse_overlap

log = logging.getLogger(__name__)

ON_ERROR = ("stop", "skip")
OVERLAY_SUFFIX = "_overlay.png"
REPORT = "report.html"
MANIFEST = ".autoprompt-predict.txt"  # every output predict wrote into a folder, relative to it, one per line
# write_atomic's temporary folders (the overlays' temporaries are outputs.STALE's)
TEMPORARY = re.compile(rf"^\.predict-{re.escape(HOST)}-(\d+)-")
SERIES_OUTPUTS = {"auto": ".dcm", "dicom-seg": ".dcm", "nifti": ".nii.gz"}  # a DICOM series' mask, by output format


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
    one-line reasons), the seconds spent per step (read, preprocess, encode, decode, postprocess, write; reading and
    preprocessing the next input overlap the rest) and the seconds from the first input read to the last written."""

    written: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Compute:
    """Where and how ``predict`` computes. ``device``: auto (the GPU when there is one), cpu, cuda, cuda:1, ...;
    ``batch_size``: slices per encoder call; ``checkpoint``: the backbone checkpoint, where it is not the model's
    configured path or packaged weights; ``runtime``: the encoder's on a CPU (``auto``: OpenVINO when installed;
    ``predictor.encoder_choice``); ``cache_dir``: where converted encoders and decoders are kept
    (``runtimes.default_cache_dir()`` when None); ``numerics``: how the encoder and decoder compute on a CPU
    (``autoprompt.device.Numerics``; the default is the exact path)."""

    device: str = "auto"
    batch_size: int = 8
    checkpoint: Path | str | None = None
    runtime: str = "auto"
    cache_dir: Path | str | None = None
    numerics: Numerics = EXACT_NUMERICS


@dataclass(frozen=True)
class Writing:
    """What ``predict`` writes for each input. ``threshold``: the probability above which a pixel is inside;
    ``probabilities``: float32 probabilities instead of masks; ``label_value``: the value written inside masks (1 when
    None; ``model``: the class's value in the training labels); ``overlays``: a PNG of the mask's outline on the input
    beside each output; ``output_format``: a DICOM series' mask as a DICOM SEG of the series (``auto``,
    ``dicom-seg``) or ``nifti``; ``overwrite``: redo outputs that exist (else they are kept, so a killed call
    resumes); ``on_error``: ``stop`` raises an unreadable input's InputError, ``skip`` logs and counts it."""

    threshold: float = 0.5
    probabilities: bool = False
    label_value: int | str | None = None
    overlays: bool = False
    output_format: str = "auto"
    overwrite: bool = False
    on_error: str = "stop"

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise InputError(f"on_error is {self.on_error!r}; use stop or skip")
        if not 0 <= self.threshold <= 1:
            raise InputError(f"--threshold {self.threshold}: give a probability from 0 to 1")
        if self.output_format not in SERIES_OUTPUTS:
            raise InputError(f"output format {self.output_format!r}; give one of {', '.join(SERIES_OUTPUTS)}")


@dataclass(frozen=True)
class PostProcessing:
    """The post-processing asked for, each setting over the model's own (``autoprompt.inference.policy.resolve``).
    ``margin``: re-prompt the decoder with the masks' boxes loosened by this margin; ``volume_min_iou``: with
    re-prompting, a volume's slices whose masks' boxes are missing between found ones or off the sequence of boxes
    fitted across its slices are prompted again with the fitted box (``autoprompt.inference.volume``); ``presence``:
    the slices (or 2D images) judged not to hold the structure get empty masks (``autoprompt.inference.presence``).
    None turns one off; each left at ``FROM_MODEL`` is what ``reprompt_from`` (the evaluate stage's metrics JSON)
    records for the model's recipe and regime, else the model's own."""

    margin: float | str | None = FROM_MODEL
    volume_min_iou: float | str | None = FROM_MODEL
    presence: Presence | str | None = FROM_MODEL
    reprompt_from: Path | str | None = None


@dataclass(frozen=True)
class Review:
    """``report``: write ``output_dir/report.html``, each input scored against its mask in ``masks`` or its box in
    ``boxes`` (``label``: the boxes' label, where the file holds several), else by the runs' agreement."""

    report: bool = False
    masks: Path | str | None = None
    boxes: Path | str | None = None
    label: str | None = None


@dataclass(frozen=True)
class Part:
    """Part ``part_id`` of ``num_parts``: every ``num_parts``-th input, so that several processes share one job."""

    part_id: int = 0
    num_parts: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.part_id < self.num_parts:
            raise InputError(f"part {self.part_id} of {self.num_parts}: give 0 <= --part-id < --num-parts")

    @property
    def suffix(self) -> str:
        """What the part's own files add to their names: nothing for a whole job."""
        return "" if self.num_parts == 1 else f"-part{self.part_id}of{self.num_parts}"


def output_name(relative: Path, probabilities: bool, series: str | None = None) -> Path:
    """The output's path relative to ``output_dir``: the input's, with pictures as PNG (TIFF for probabilities); a
    DICOM series folder's name with ``series``'s suffix (``SERIES_OUTPUTS``)."""
    if series is not None:
        return relative.with_name(relative.name + SERIES_OUTPUTS[series])
    kind = suffix(relative)
    if kind not in PICTURES:
        return relative
    stem = relative.name[: -len(kind)] if kind else relative.name
    return relative.with_name(stem + (".tif" if probabilities else ".png"))


def plan_targets(
    inputs: list[Path | str], output_dir: Path, probabilities: bool, overlays: bool = False, series_output: str = "auto"
) -> list[Target]:
    """Every input file with its output path; a folder contributes every image file below it, and every folder of
    one DICOM series at or below it (``series_output``: its mask as ``dicom-seg`` or ``nifti``). Two inputs whose
    outputs (or overlays, where they are written) would share a path are refused."""
    if series_output not in SERIES_OUTPUTS:
        raise InputError(f"output format {series_output!r}; give one of {', '.join(SERIES_OUTPUTS)}")
    targets: dict[Path, Target] = {}
    for entry in map(Path, inputs):
        series = None
        if entry.is_dir():
            folders = [p for p in [entry, *sorted(entry.rglob("*"))] if p.is_dir() and is_image(p)]  # DICOM series
            files = [p for p in sorted(entry.rglob("*")) if p.is_file() and not p.name.startswith(".")]
            found = [(p, p.relative_to(entry)) for p in files if is_image(p)]
            found += [(p, p.relative_to(entry) if p != entry else Path(p.name)) for p in folders]
            series = set(folders)
            stray = [p for p in files if suffix(p) in DICOM and p.parent not in series]
            if stray:
                log.warning("%s: %d DICOM files among other images left out (%s); %s", entry, len(stray),
                            stray[0].name, DICOM_FIX)  # fmt: skip
            if not found:
                raise InputError(
                    f"{entry}: no image files in this folder; give PNG, JPEG, NIfTI, MHA/MHD, NRRD or DICOM series"
                )
        elif entry.exists():
            if suffix(entry) in DICOM:
                raise InputError(f"{entry}: one file of a DICOM series; {DICOM_FIX}")
            found = [(entry, Path(entry.name))]
        else:
            raise InputError(f"{entry}: no such file or folder; check the input path")
        for source, relative in found:
            kind = None if source not in (series or ()) else "dicom-seg" if series_output == "auto" else series_output
            target = Target(source, output_dir / output_name(relative, probabilities, kind))
            paths = (target.output, target.overlay) if overlays else (target.output,)
            for path in paths:  # an overlay's name may be another input's output, or its overlay's
                if path in targets and targets[path].source != source:
                    raise InputError(
                        f"{source}: its output {path} would overwrite one of {targets[path].source}'s; rename one of "
                        "them, or predict them into different output folders"
                    )
            targets.update(dict.fromkeys(paths, target))
    return list(dict.fromkeys(targets.values()))


def written_before(output_dir: Path) -> set[str]:
    """The outputs that predict recorded in ``output_dir`` (relative, POSIX)."""
    path = Path(output_dir) / MANIFEST
    return set(path.read_text().splitlines()) if path.is_file() else set()


def record_output(output_dir: Path, path: Path) -> None:
    """Add ``path`` to ``output_dir``'s record before it takes its name: a kill in between leaves a recorded name
    without a file, which the next call writes. Appends are whole lines: parts sharing a folder may record at once."""
    line = Path(path).relative_to(output_dir).as_posix() + "\n"
    handle = os.open(Path(output_dir) / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(handle, line.encode())
    finally:
        os.close(handle)


def refuse_foreign_outputs(
    targets: list[Target], output_dir: Path, overlays: bool, report: bool, provenance: Path | None = None
) -> None:
    """Refuse to write where a file stands that predict did not write (``written_before``): the targets' outputs (and
    overlays), the report, and the ``provenance`` file."""
    ours = written_before(output_dir)
    paths = [p for t in targets for p in ((t.output, t.overlay) if overlays else (t.output,))]
    paths += ([output_dir / REPORT] if report else []) + ([provenance] if provenance is not None else [])
    for path in paths:
        if path.exists() and path.relative_to(output_dir).as_posix() not in ours:
            raise InputError(
                f"{path}: exists and autoprompt predict did not write it, so it is not replaced (--overwrite "
                "neither); move it away, or give another output folder"
            )


def check_overlap(
    model: Model | Path | str,
    inputs: list[Path | str],
    output_dir: Path,
    masks: Path | str | None,
    boxes: Path | str | None,
) -> None:
    """Refuse an output folder that is, contains or lies inside an input: the next call would read the masks as
    images, or the masks would replace them."""
    named: dict[str, Path | list[Path]] = {"-i": [Path(p) for p in inputs]}
    if not isinstance(model, Model):
        named["-m"] = Path(model)
    named.update({k: Path(v) for k, v in (("--masks", masks), ("--boxes", boxes)) if v is not None})
    refuse_overlap({"-o": output_dir}, named, "give an output folder of its own, beside the inputs")


def write_atomic(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    """Write ``array`` like ``reference`` to ``path`` (and a ``.raw`` beside a ``.mhd``) whole or not at all: the
    files are read back before they take their final names (a full disk can leave SimpleITK's files empty without an
    error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".predict-{HOST}-{os.getpid()}-") as tmp:
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
    found = {t.source: (find_mask(found_masks, t.source), drawn.get(t.source.name, ())) for t in targets}
    for source, (mask, _) in found.items():  # before any work, not after the last input
        if mask is not None and _size(mask) != _size(source):
            raise InputError(
                f"{mask}: {_size(mask)} voxels, its image {source} {_size(source)}; give the mask drawn on that image "
                "(--masks), or rename it"
            )
    return found


def _size(path: Path) -> tuple[int, ...]:
    """An image file's size (x, y[, z]) from its header; the whole file where SimpleITK reads no header."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        return tuple(reader.GetSize())
    except RuntimeError:
        return tuple(read_image(path).GetSize())


def predict(
    model: Model | Path | str,
    inputs: list[Path | str],
    output_dir: Path | str,
    compute: Compute = Compute(),
    writing: Writing = Writing(),
    post: PostProcessing = PostProcessing(),
    review: Review = Review(),
    part: Part = Part(),
) -> Summary:
    """Segment every input with ``model`` (a run folder, a folder of runs, an exported file, or a ``Model``) and
    write the results under ``output_dir``; see the module's docstring. ``compute``: where and how; ``writing``: what
    is written for each input; ``post``: the post-processing asked for, over the model's policy; ``review``: the
    report; ``part``: this process's share of the inputs. What made the outputs (model, encoder, decoder, numerics,
    policy) goes into ``output_dir/predict.json``."""
    output_dir = Path(output_dir)
    check_overlap(model, inputs, output_dir, review.masks, review.boxes)
    model = model if isinstance(model, Model) else load_model(model)
    if compute.checkpoint is not None and is_packaged(model.backbone):
        raise InputError(
            f"--checkpoint {compute.checkpoint}: the model's backbone {model.backbone} uses its packaged weights, not "
            "a checkpoint file; leave --checkpoint out"
        )
    policy, sources = resolve(
        model.policy, model.group(), margin=post.margin, volume_min_iou=post.volume_min_iou, presence=post.presence,
        reprompt_from=post.reprompt_from,
    )  # fmt: skip
    margin, volume_min_iou = policy.margin, policy.volume_min_iou
    if margin is None:
        log.info("re-prompting: off (%s); the heads' masks are kept", sources["margin"])
    else:
        core = (
            ", from the masks' own boxes"
            if policy.box_threshold is None
            else f", boxes of the heads' masks above {policy.box_threshold:g}"
        )
        log.info("re-prompting with margin %g%s (%s)", margin, core, policy.how or sources["margin"])
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
    overlays, report = writing.overlays, review.report
    targets = plan_targets(inputs, output_dir, writing.probabilities, overlays, writing.output_format)
    targets = targets[part.part_id :: part.num_parts]
    references = _references(targets, review.masks, review.boxes, review.label) if report else {}
    with hold(output_dir, f"autoprompt predict{part.suffix.replace('-', ' ')}", f"autoprompt-predict{part.suffix}"):
        clear_stale(output_dir, TEMPORARY, own_host_only=True)
        clear_stale(output_dir)
        provenance = output_dir / f"predict{part.suffix}.json"
        refuse_foreign_outputs(targets, output_dir, overlays, report, provenance)
        summary, todo, existing = Summary(), [], []
        for target in targets:
            (existing if target.done(overlays) and not writing.overwrite else todo).append(target)
        summary.existing = [target.output for target in existing]
        _warn_if_kept_from_other_numerics(provenance, compute.numerics, len(existing))
        log.info(
            "%s: %d inputs, %d already predicted (kept; --overwrite redoes them), %d to predict",
            model.describe(),
            len(targets),
            len(summary.existing),
            len(todo),
        )
        entries = [_entry_of_existing(t, writing.threshold, references) for t in existing] if report else []
        if todo:
            predictor = Predictor(
                model, select_device(compute.device, "--device"), compute.batch_size, compute.checkpoint,
                compute.runtime, compute.cache_dir, margin, writing.threshold, volume_min_iou, policy.presence,
                compute.numerics, policy.box_threshold,
            )  # fmt: skip
            log.info(
                "encoder: %s %s; decoder: %s %s; %s", predictor.encoder_choice.runtime,
                predictor.encoder_choice.precision, predictor.decoder_runtime, compute.numerics.precision,
                compute.numerics.describe(),
            )  # fmt: skip
            _predict_targets(todo, predictor, summary, writing, references if report else None, entries, output_dir)
            record_output(output_dir, provenance)
            write_text(
                provenance, json.dumps(_provenance(model, predictor, policy, writing.threshold), indent=1) + "\n"
            )
        if report:
            title = f"autoprompt predict: {model.describe()}, {len(entries)} inputs"
            report_path = output_dir / REPORT
            record_output(output_dir, report_path)
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


def _warn_if_kept_from_other_numerics(provenance: Path, numerics: Numerics, kept: int) -> None:
    """Say so where outputs kept from an earlier call were made on other CPU numerics than this call's."""
    if not kept or not provenance.is_file():
        return
    try:
        earlier = json.loads(provenance.read_text())["numerics"]["mode"]
    except (ValueError, KeyError, TypeError):
        return
    if earlier != numerics.mode:
        log.warning("%d outputs kept from a call on the %s numerics, not this call's %s; --overwrite redoes them",
                    kept, earlier, numerics.mode)  # fmt: skip


def _provenance(model: Model, predictor: Predictor, policy: Policy, threshold: float) -> dict:
    """What the last call's outputs were made with: the model, the encoder, the CPU numerics and the policy."""
    return {
        "autoprompt": __version__,
        "model": model.describe(),
        "encoder": {"runtime": predictor.encoder_choice.runtime, "precision": predictor.encoder_choice.precision},
        "decoder": {"runtime": predictor.decoder_runtime, "precision": predictor.numerics.precision},
        "device": predictor.device.type,
        "numerics": {k: v for k, v in predictor.numerics.record().items() if k != "compile"},  # training's only
        "threshold": threshold,
        "reprompt_margin": policy.margin,
        "reprompt_box_threshold": policy.box_threshold,
        "volume_min_iou": policy.volume_min_iou,
        "presence": None if policy.presence is None else policy.presence.describe(),
    }


def _predict_targets(
    todo: list[Target],
    predictor: Predictor,
    summary: Summary,
    writing: Writing,
    references: dict | None,
    entries: list[Entry],
    output_dir: Path,
) -> None:
    """Segment and write each target of ``todo`` as ``writing`` says (each recorded in ``output_dir``'s record
    first); where ``references`` is given, add its report entry."""
    timings = predictor.timings
    model = predictor.model
    label = writing.label_value
    value = model.label_value if label == "model" else 1 if label is None else int(label)
    started = time.perf_counter()
    for target, loaded in tqdm(_read_ahead(todo, predictor), total=len(todo), desc="predict", unit="input"):
        if isinstance(loaded, InputError):
            if writing.on_error == "stop":
                raise loaded
            log.warning("skipped: %s", loaded)
            summary.failed.append(str(loaded))
            continue
        image, prepared = loaded
        segmentation = predictor.segment(image, prepared)
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
        mask = (segmentation.probabilities > writing.threshold).astype(np.uint8) * np.uint8(value)
        result = segmentation.probabilities.astype(np.float32) if writing.probabilities else mask
        record_output(output_dir, target.output)
        if target.output.name.endswith(SERIES_OUTPUTS["dicom-seg"]):  # a DICOM series' SEG
            made_by = ("autoprompt", __version__)
            write_seg(result, target.source, target.output, model.class_name, made_by, writing.probabilities)
        else:
            write_atomic(result, image, target.output)
        if writing.overlays:
            record_output(output_dir, target.overlay)
            write_overlay(image, mask, target.overlay)
        if references is not None:
            iou = segmentation.evidence.iou.numpy() if segmentation.evidence is not None else None
            entries.append(_entry(target, image, mask, references, segmentation.agreement, segmentation.absent, iou))
        timings["write"] += time.perf_counter() - start
        summary.written.append(target.output)
    summary.timings = dict(timings)
    summary.seconds = time.perf_counter() - started


def _read_ahead(todo: list[Target], predictor: Predictor) -> Iterator[tuple[Target, tuple | InputError]]:
    """Each target of ``todo`` with its image read and prepared (``Predictor.prepare``), or the InputError that its
    reading raised: the next target is read on a second thread while the caller segments this one, which overlaps
    the file's decoding and the preprocessing with the encoder (``bench/timings/predict.py`` times both)."""

    def load(target: Target) -> tuple | InputError:
        start = time.perf_counter()
        try:
            image = read_image(target.source)
        except InputError as error:
            return error
        predictor.timings["read"] += time.perf_counter() - start
        return image, predictor.prepare(image)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(load, todo[0]) if todo else None
        for k, target in enumerate(todo):
            loaded = pending.result()
            pending = pool.submit(load, todo[k + 1]) if k + 1 < len(todo) else None
            yield target, loaded


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
