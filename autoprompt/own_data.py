"""Ten boxes in, a model out: the pipeline's own steps run on a user's folder (``autoprompt train``).

``train_folder`` prepares the images that have a box (``data.prepare``), encodes them and their augmented views
(``encode``), trains the head's runs on every box (``training.head_jobs``), chooses the re-prompt margin from boxes
alone (``inference.reprompt``) and exports one model file. No step is written twice: the DVC stages call the same
functions. Masks are never read.

Everything is kept in a work folder, so a second call reuses what it can: the prepared images are read again only
where an image or box file changed; an embedding is copied from the previous store where its image's pixels are
unchanged, or from ``autoprompt suggest``'s store of every slice of the folder (``suggest_store``: in the work folder,
or in ``DATA.work``, suggest's default); a run is trained again only where its boxes, pseudo-labels or views changed
(its fingerprint). Each step writes whole or not at all, so a killed call resumes.

The margin: every box trains, so no image is left to choose the margin on as ``evaluate`` does (``reprompt.margin:
auto`` on the validation split). With ``auto``, ``choose_margin`` runs on the training images themselves: the
ensemble's masks there, re-prompted at each candidate margin and box threshold (``reprompt.box_thresholds``),
against their own tight boxes (``how`` in the model says so); ``bench/studies/own_data.py`` compares that choice with
``reprompt.fallback`` on real images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr
from tqdm import tqdm

from autoprompt.data import embeddings, folder
from autoprompt.data.box_templates import Wanted
from autoprompt.data.boxes import read_boxes
from autoprompt.data.folder import case_id, image_files
from autoprompt.data.images import as_stack, frame_slices, read_image, stack_size
from autoprompt.data.prepare import prepare_dataset
from autoprompt.data.prepared import read_index, write_prepared
from autoprompt.data.records import preprocessing
from autoprompt.data.tasks import TaskFiles, load_task
from autoprompt.device import EXACT_NUMERICS, Numerics, select_device
from autoprompt.encode.augmented import encode_views
from autoprompt.encode.store import encode_prepared, encode_store, identity, pixels_sha256
from autoprompt.errors import InputError
from autoprompt.inference import policy
from autoprompt.inference.model import Model, export_model, from_runs, run_folders
from autoprompt.inference.predictor import Predictor
from autoprompt.inference.presence import Presence
from autoprompt.inference.pseudo_boxes import Harvest, harvest
from autoprompt.inference.reprompt import choose_margin, recorded_box_threshold
from autoprompt.io import write_text
from autoprompt.model import backbones, checkpoints, runtimes
from autoprompt.model.decoding import decode
from autoprompt.outputs import clear_stale, hold
from autoprompt.settings import (
    EncodeSettings,
    FolderPrepare,
    SelfTraining,
    Settings,
    TaskSpec,
    same_place,
    settings_from,
)
from autoprompt.training import suggest
from autoprompt.training.fewshot import fewshot_ids
from autoprompt.training.head_jobs import train_task
from autoprompt.training.inputs import task_checkpoint
from autoprompt.training.loop import PseudoBoxes

log = logging.getLogger(__name__)

DATASET = "data"  # the folder's dataset and task name inside the work folder
SECOND_ROUND = "models-second-round"  # the work folder's runs of train.self_training's second round
SUGGEST = "suggest"  # autoprompt suggest's part of a work folder: every slice of the folder, encoded


def suggest_store(work: Path) -> Path:
    """Where ``autoprompt suggest`` keeps the embeddings of every image and slice of a folder, in a work folder."""
    return Path(work) / SUGGEST / "embeddings.zarr"


def default_work(data: Path) -> Path:
    """``DATA.work`` beside the folder ``DATA``: ``autoprompt suggest``'s work folder by default, and ``train``'s for
    a model named after the folder (``train DATA -o DATA.pt``)."""
    data = Path(data)
    return data.with_name(data.name + ".work")


@dataclass(frozen=True)
class Summary:
    """What ``train_folder`` did: the model it wrote, its images and runs, the margin, the seconds per step,
    with ``train.self_training`` what the first round gave the second (``harvested``), and the margin's box
    threshold (None: the mask's)."""

    model: Path
    images: int
    runs: int
    trained: int
    margin: float | None
    how: str
    seconds: dict[str, float]
    harvested: Harvest | None = None
    box_threshold: float | None = None


def folder_section(settings: Settings) -> FolderPrepare:
    """The params file's only folder section (``reader: folder``), or the defaults where it has none; several are
    refused, there being no way to tell which is meant."""
    sections = [s for s in settings.prepare.datasets.values() if isinstance(s, FolderPrepare)]
    if len(sections) > 1:
        raise InputError(f"{settings.source}: prepare has {len(sections)} folder sections; keep the one to use")
    return sections[0] if sections else FolderPrepare()


def boxes_source(settings: Settings, data: Path, boxes: Path | None, label: str | None) -> Path:
    """The boxes file that ``autoprompt train`` reads, logged with where it was named: ``boxes`` (``--boxes``)
    where given; else the folder section's ``boxes`` (``prepare.<folder>.boxes``, ``boxes.csv`` by default),
    relative to ``data`` unless absolute, as the pipeline reads it relative to the dataset's folder, so that one
    params file names the same file in both. Refused: a missing file, and a label (``label``, ``--label``, else the
    section's) with a ``boxes.csv``, which has no labels."""
    section = folder_section(settings)
    if boxes is not None:
        path, named = Path(boxes), "--boxes"
    else:
        path = folder.boxes_file(data, section)
        default = section.boxes == FolderPrepare.model_fields["boxes"].default
        named = "the default, DATA/boxes.csv" if default else section.key("boxes")
    if not path.exists():  # a file, or a folder of 3D Slicer ROI files
        raise InputError(
            f"{path}: no boxes; draw a box on each training image and give boxes.csv in DATA, or by --boxes or "
            f"prepare.<folder>.boxes a COCO or Label Studio JSON export, 3D Slicer ROIs (.mrk.json, or a folder of "
            f"them) or a napari Shapes CSV (this path: {named})"
        )
    if path.suffix.lower() == ".csv":
        if label is not None:
            raise InputError(
                f"--label {label}: {path.name} has no labels; leave --label out, or give a COCO or Label Studio export"
            )
        if section.label is not None:
            raise InputError(
                f"{section.key('label')}: {path.name} has no labels; remove label, or give a COCO or Label Studio "
                "export"
            )
    log.info("boxes: %s (%s)", path, named)
    return path


def folder_settings(settings: Settings, boxes: Path, label: str | None, class_name: str | None) -> Settings:
    """``settings`` for one folder dataset named ``data``: its ``prepare`` section (the params file's only folder
    section, or the defaults) reading ``boxes`` (``boxes_source`` chooses it), split by boxes; the task ``data``;
    the runs on every boxed image."""
    section = folder_section(settings)
    changes = {"boxes": str(boxes), "split": "boxes"}
    if label is not None:
        changes["label"] = label
    if class_name is not None:
        changes["class"] = class_name
    data = settings.model_dump(by_alias=True, exclude={"prepare", "tasks", "datasets", "simulate"})
    prepare = settings.prepare.model_dump(by_alias=True, exclude={"datasets"})
    prepare[DATASET] = {**section.model_dump(by_alias=True), **changes}
    spec = TaskSpec.model_validate({"dataset": DATASET, "class": prepare[DATASET]["class"], "column": DATASET})
    data.update(datasets=[DATASET], tasks={DATASET: spec.model_dump(by_alias=True)}, prepare=prepare)
    out = settings_from(data, settings.source)
    if any(section is s for s in settings.prepare.datasets.values()):  # messages name the file's keys: prepare.mine
        same_place(out.prepare.datasets[DATASET], section)
    return out


def _inputs_stamp(root: Path, section: FolderPrepare, names: list[str]) -> str:
    """What the prepared store depends on: the settings, the boxes file and each boxed image file (size, time)."""
    entries = [section.model_dump_json(), *_stat(Path(section.boxes))]
    for name in names:
        entries += _stat(root / folder.IMAGES / name)
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _stat(path: Path) -> list[str]:
    if path.is_dir():  # a DICOM series folder: each of its files
        return [entry for part in sorted(path.iterdir()) for entry in _stat(part)]
    stat = path.stat()
    return [str(path), str(stat.st_size), str(stat.st_mtime_ns)]


def work_layout(work: Path, data: Path) -> Path:
    """``work/raw``: the folder's images (a link to them), and no masks: training reads boxes only."""
    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    link = raw / folder.IMAGES
    if link.is_symlink() and link.resolve() != (data / folder.IMAGES).resolve():
        link.unlink()
    if not link.exists():
        os.symlink((data / folder.IMAGES).resolve(), link, target_is_directory=True)
    return raw


def prepare_boxed(raw: Path, section: FolderPrepare, work: Path, seed: int) -> None:
    """The prepared store of the boxed images, written again only where an input changed."""
    boxes = read_boxes(Path(section.boxes), raw / folder.IMAGES, section.label)
    stamp = _inputs_stamp(raw, section, sorted(boxes))
    store, index, marker = work / "prepared.zarr", work / "prepared.csv", work / "prepared.stamp"
    if store.exists() and index.exists() and marker.exists() and marker.read_text() == stamp:
        log.info("%s: %d boxed images, unchanged since they were prepared", raw, len(boxes))
        return
    prepared, attrs = prepare_dataset(DATASET, section, raw, seed, "stop", keep=lambda f: f.paths[0].name in boxes)
    write_prepared(store, index, prepared, attrs)
    write_text(marker, stamp)


def choose_on_training_boxes(
    model: Model, settings: Settings, task_files: TaskFiles
) -> tuple[float | None, float | None, str]:
    """The re-prompt margin of the ``reprompt`` section and its box threshold (None: the mask's), chosen where it
    says ``auto`` on the training images' own boxes (see the module's docstring); and how, in words."""
    reprompt = settings.reprompt
    threshold = settings.evaluate.threshold
    box_thresholds = reprompt.thresholds(threshold)
    if not reprompt.auto:
        return reprompt.margin, recorded_box_threshold(box_thresholds[0], threshold), "reprompt.margin as set"
    spec = settings.task(DATASET)
    task = load_task(DATASET, spec, task_files, settings.prepare.min_foreground, settings.encode.backbone)
    rows = task.rows("train")
    device = select_device(settings.train.device, settings.train.key("device"))
    decoder = backbones.build_prompt_decoder(settings.encode.backbone, task_checkpoint(task, settings.encode))
    embeddings, boxes, batch = task.load_embeddings(rows), task.boxes(rows), settings.train.predict_batch_size
    heads = model.build_heads()
    mean = sum(decode(decoder, embeddings, task.label_size, batch, device, head=h) for h in heads) / len(heads)
    chosen = choose_margin(
        decoder, embeddings, boxes, mean, list(reprompt.candidates), threshold, batch, device, box_thresholds
    )
    if chosen.margin is None:
        log.info("re-prompting off: the heads' own masks match the training boxes best (mean box IoU %.4f)",
                 chosen.scores["off"])  # fmt: skip
    else:
        best, off = max(chosen.scores.values()), chosen.scores["off"]
        log.info("re-prompt margin %g, boxes above %g: mean box IoU %.4f with the training boxes (not re-prompted: "
                 "%.4f)", chosen.margin, chosen.box_threshold, best, off)  # fmt: skip
    log.debug("mean box IoU by choice: %s", chosen.scores)
    how = f"auto, on the {len(rows)} training boxes"
    return chosen.margin, recorded_box_threshold(chosen.box_threshold, threshold), how


def encode_for(encode: EncodeSettings, numerics: Numerics) -> EncodeSettings:
    """The encoder's settings under ``numerics``: on the fast path with bfloat16, OpenVINO's bfloat16 encoder (where
    OpenVINO runs: ``runtime`` auto or openvino); else ``encode`` as it is."""
    if numerics.precision != "bfloat16" or encode.runtime == "torch" or not runtimes.openvino_available():
        return encode
    if encode.cpu_precision != "bfloat16":
        log.info("encoder: OpenVINO in bfloat16, the fast path's (encode.cpu_precision %s is what --exact uses)",
                 encode.cpu_precision)  # fmt: skip
    return encode.model_copy(update={"cpu_precision": "bfloat16"})


def read_folder(images: Path, section: FolderPrepare) -> tuple[list[Wanted], np.ndarray, np.ndarray]:
    """Every image and volume slice of ``images``: what each is, the N x S x S uint8 slices prepared as ``train``
    prepares them, and each one's relative position in its volume (0 first, 1 last; ``suggest.CENTRE`` for a 2D
    image or a volume of one slice)."""
    steps = preprocessing(section)
    wanted: list[Wanted] = []
    slices, positions = [], []
    for name, path in tqdm(image_files(images).items(), desc="read", unit="image"):
        stack = as_stack(read_image(path))
        framed = frame_slices(stack, steps).slices
        depth = len(framed)
        for k, plane in enumerate(framed):
            wanted.append(Wanted(path.name, None if stack.is_2d else k, case_id(name, k, stack.is_2d)))
            slices.append(plane)
            positions.append(k / (depth - 1) if depth > 1 else suggest.CENTRE)
    return wanted, np.stack(slices), np.asarray(positions, np.float32)


def encode_folder(
    ids: list[str], slices: np.ndarray, settings: Settings, work: Path, donors: list[Path] | None = None
) -> Path:
    """``slices`` (N x S x S uint8, ids ``ids``) encoded into the work folder's suggest store; rows whose pixels a
    store there holds already (suggest's former one, ``train``'s, ``donors``) are copied, not encoded. Returns the
    store."""
    keys = tuple(pixels_sha256(plane) for plane in slices)
    source = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    found = identity(settings.encode, source, tuple(ids), keys)
    out = suggest_store(work)
    previous = embeddings.set_aside(out, found)
    stores = [work / "embeddings.zarr", *(d for d in donors or [] if Path(d).resolve() != out.resolve())]
    donor = embeddings.Donor(previous, found, stores)
    encode_store(out, found, lambda rows: slices[rows], settings.encode, "suggest", (0, 1), donor)
    if previous is not None and out.exists():
        shutil.rmtree(previous)
    return out


def train_folder(data: Path, out: Path, work: Path, settings: Settings, numerics: Numerics = EXACT_NUMERICS) -> Summary:
    """Train a model on the boxed images of the folder ``data`` (``settings``: ``folder_settings``'s) into the file
    ``out``, keeping every step's work in ``work``. ``numerics``: how the encoder and the training step compute on a
    CPU (``autoprompt.device.Numerics``; the default is the pipeline's exact path)."""
    section = settings.prepare.dataset(DATASET)
    assert isinstance(section, FolderPrepare), "folder_settings gives a folder section"
    settings = settings.model_copy(update={"encode": encode_for(settings.encode, numerics)})
    encode = settings.encode
    checkpoints.resolve_checkpoint(encode.backbone, encode.checkpoint, "--checkpoint")  # before any long work
    with hold(work, f"autoprompt train {data}", "autoprompt-train"):
        clear_stale(work)
        return _train_held(data, out, work, settings, section, numerics)


def encode_boxed(data: Path, work: Path, settings: Settings) -> TaskFiles:
    """The work folder's prepared images encoded (its ``embeddings.zarr``), copying what a store there holds already:
    the former store's rows and ``autoprompt suggest``'s (``suggest_store`` of ``work`` and of ``DATA.work``)."""
    files = TaskFiles(work / "prepared.zarr", work / "prepared.csv", work / "embeddings.zarr")
    donors = list(dict.fromkeys([suggest_store(work), suggest_store(default_work(data))]))
    encode_prepared(files.prepared, files.embeddings, settings.encode, DATASET, (0, 1), reuse=True, donors=donors)
    return files


def _train_held(
    data: Path, out: Path, work: Path, settings: Settings, section: FolderPrepare, numerics: Numerics
) -> Summary:
    """``train_folder``'s steps, once the work folder is held."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    raw = work_layout(work, data)
    prepare_boxed(raw, section, work, settings.prepare.seed)
    seconds["prepare"] = time.perf_counter() - start

    start = time.perf_counter()
    files = encode_boxed(data, work, settings)
    group, table = read_index(files.prepared, files.index)
    train_ids = table.loc[table["split"] == "train", "id"].tolist()
    train = settings.train.model_copy(update={"shots": len(train_ids), "subsets": 1, "all_images": False})
    store = embeddings.open_embeddings(files.embeddings)  # train.draw: suggest reads it
    tasks = {DATASET: settings.task(DATASET).class_name}
    ids = fewshot_ids(table, tasks, settings.prepare.min_foreground, train, store)
    views = work / "views.zarr"
    if settings.augment.count:
        encode_views(group, table, ids, views, settings.encode, settings.augment, f"{DATASET} views", (0, 1), True)
    seconds["encode"] = time.perf_counter() - start

    start = time.perf_counter()
    spec = settings.task(DATASET)
    task = load_task(DATASET, spec, files, settings.prepare.min_foreground, settings.encode.backbone)
    jobs, trained = train_task(
        task,
        train,
        settings.encode,
        settings.augment,
        work / "models",
        views if settings.augment.count else None,
        numerics,
    )
    seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    model = from_runs(run_folders(work / "models"))
    margin, box_threshold, how = choose_on_training_boxes(model, settings, files)
    seconds["margin"] = time.perf_counter() - start
    harvested = None
    if second_round(settings.train.self_training, work / "raw" / folder.IMAGES, len(train_ids)):
        start = time.perf_counter()
        first = model.with_policy(policy.from_settings(settings.reprompt, margin, how, box_threshold))
        extra, harvested = pseudo_boxed(data, work, settings, section, first, table, numerics)
        seconds["pseudo-boxes"] = time.perf_counter() - start
        if extra is None:
            log.warning("self-training: %s; the model is the first round's", harvested.describe())
        else:
            start = time.perf_counter()
            jobs, trained = train_task(
                task, train, settings.encode, settings.augment, work / SECOND_ROUND,
                views if settings.augment.count else None, numerics, extra,
            )  # fmt: skip
            model = from_runs(run_folders(work / SECOND_ROUND))
            margin, box_threshold, how = choose_on_training_boxes(model, settings, files)
            seconds["second round"] = time.perf_counter() - start
    export_model(model.with_policy(policy.from_settings(settings.reprompt, margin, how, box_threshold)), out)
    return Summary(out, len(train_ids), len(jobs), trained, margin, how, seconds, harvested, box_threshold)


def second_round(rule: SelfTraining, images: Path, boxed: int) -> bool:
    """Whether ``train.self_training``'s second round runs on the folder ``images`` of which ``boxed`` images and
    slices have a box (``SelfTraining.wants_second_round``), logged with why; the slices are counted from the files'
    headers, so that a folder too small for ``auto`` is not read."""
    if rule.enabled is False:
        log.info("self-training: off (train.self_training.enabled or --no-self-training)")
        return False
    unboxed = sum(stack_size(path)[2] for path in image_files(images).values()) - boxed
    wanted = rule.wants_second_round(unboxed)
    if rule.enabled is True:
        log.info("self-training: on (train.self_training.enabled or --self-training): %d images and slices without "
                 "a box", unboxed)  # fmt: skip
    elif wanted:
        log.info("self-training: on (auto): %d images and slices without a box, a second round learns from them "
                 "(--no-self-training skips it)", unboxed)  # fmt: skip
    else:
        log.info(
            "self-training: off (auto): %d images and slices without a box, fewer than train.self_training.min_unboxed "
            "(%d); --self-training runs the second round anyway", unboxed, rule.min_unboxed,
        )  # fmt: skip
    return wanted


def judging_rule(rule: SelfTraining) -> Presence:
    """How ``train.self_training`` judges a slice's evidence (``inference.pseudo_boxes``): the runs' agreement and,
    in a volume, the box's fit to the sequence, at the section's thresholds; 2D images judged too."""
    return Presence(("agreement", "sequence"), min_agreement=rule.min_agreement, min_box_iou=rule.min_box_iou,
                    max_growth=rule.max_growth, images=True)  # fmt: skip


def judging_predictor(model: Model, settings: Settings, numerics: Numerics) -> Predictor:
    """``model`` run as ``predict`` runs it (re-prompted at its margin, volumes fitted) but with no presence rule, so
    that each slice's evidence is judged by the caller (``judging_rule``); on ``settings``' train device."""
    return Predictor(
        model, select_device(settings.train.device, settings.train.key("device")), settings.train.predict_batch_size,
        runtime=settings.encode.runtime, cache_dir=settings.encode.runtime_cache, reprompt_margin=model.reprompt_margin,
        threshold=settings.evaluate.threshold, volume_min_iou=model.volume_min_iou, numerics=numerics,
        box_threshold=model.reprompt_box_threshold,
    )  # fmt: skip


def folder_inputs(wanted: list[Wanted]) -> list[list[int]]:
    """Each file's rows of ``read_folder``'s list, in slice order: the inputs a model segments one at a time."""
    inputs: dict[str, list[int]] = {}
    for row, w in enumerate(wanted):
        inputs.setdefault(w.file, []).append(row)
    return list(inputs.values())


def embedding_reader(store: Path) -> Callable[[list[int]], torch.Tensor]:
    """The store's embeddings of consecutive rows (``len(rows) x 256 x 64 x 64``): one input of ``folder_inputs``, as
    ``harvest`` and ``doubts`` read them."""
    group = zarr.open_group(store, mode="r")

    def read(rows: list[int]) -> torch.Tensor:
        return torch.from_numpy(np.asarray(group["embeddings"][rows[0] : rows[-1] + 1]))

    return read


def pseudo_boxed(
    data: Path,
    work: Path,
    settings: Settings,
    section: FolderPrepare,
    first: Model,
    table: pd.DataFrame,
    numerics: Numerics,
) -> tuple[PseudoBoxes | None, Harvest]:
    """``train.self_training``'s pseudo-boxes: every image and slice of ``data`` read and encoded (``suggest``'s
    store in ``work``, copying what a store there or in ``DATA.work`` holds), the ``first`` round's model run on the
    unboxed ones (``inference.pseudo_boxes``), and the slices that pass its rule with their embeddings (None where
    none does)."""
    rule = settings.train.self_training
    wanted, slices, _ = read_folder(work / "raw" / folder.IMAGES, section)
    ids = [w.id for w in wanted]
    store = encode_folder(ids, slices, settings, work, [suggest_store(default_work(data))])
    boxed_ids = set(table.loc[table["split"] == "train", "id"])
    boxed = {row for row, i in enumerate(ids) if i in boxed_ids}
    judge, judged = judging_predictor(first, settings, numerics), judging_rule(rule)
    harvested = harvest(judge, folder_inputs(wanted), embedding_reader(store), boxed, judged)
    if not harvested.rows:
        return None, harvested  # the caller says so, once
    log.info("self-training: %s; runs agreeing at %g", harvested.describe(), rule.min_agreement)
    extra = PseudoBoxes(
        harvested.embeddings,
        harvested.boxes,
        None,
        rule.weight,
        rule.per_epoch or len(boxed),
        {
            "rule": judged.describe(),
            "min_agreement": rule.min_agreement,
            "looked": harvested.looked,
            "left_out": dict(harvested.left_out),
        },
    )
    return extra, harvested
