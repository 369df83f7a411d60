"""The prompt head's runs of one task, planned and trained: what the train stage and ``autoprompt train`` run.

Every recipe of ``train.recipe`` trains ``subsets`` x ``seeds`` few-shot runs and, where ``all_images`` says so, runs
on every training image. Each run is a job with a record of everything its result depends on: the task's data (class,
preprocessing, the embeddings' backbone, checkpoint and runtime), the run's images and seed, its optimisation config,
the hashes of its boxes, pseudo-labels and views, and the hash of the code that trains it (``autoprompt.sources``:
this module's import closure). ``train_task`` trains the jobs whose run folder does not hold that record's
fingerprint, each written whole, so a killed call resumes and a changed box retrains only the runs that use it.
Only embeddings (and encoded views) and tight boxes are read: the image encoder is never built.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import zarr
from tqdm import tqdm

from autoprompt.data import embeddings, views
from autoprompt.data.tasks import Task
from autoprompt.device import EXACT, EXACT_NUMERICS, Numerics, select_device
from autoprompt.errors import InputError
from autoprompt.io import atomic_path
from autoprompt.model import backbones, checkpoints
from autoprompt.settings import AugmentSettings, EncodeSettings, TrainSettings
from autoprompt.sources import sources_sha256
from autoprompt.training import fewshot, runs
from autoprompt.training.fewshot import Run, draw_areas, draw_features, plan_runs
from autoprompt.training.inputs import TaskInputs, task_checkpoint
from autoprompt.training.loop import PseudoBoxes, TrainConfig, train_head
from autoprompt.training.pseudo_labels import array_sha256, box_prompted_masks, save_inputs
from autoprompt.training.validation import ValidationSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadJob:
    """One run to have: its key (``recipe/regime/run``), the run, its optimisation config and its fingerprinted
    record (everything its result depends on)."""

    key: str
    run: Run
    config: TrainConfig
    record: dict


def run_record(
    task: Task,
    recipe: str,
    run: Run,
    config: TrainConfig,
    hashes: dict[str, str],
    code: str,
    numerics: Numerics = EXACT_NUMERICS,
) -> dict:
    """Everything a run's result depends on; its fingerprint decides whether a saved run can be kept. The fast CPU
    numerics are part of it (their numbers depend on the CPU); the exact path adds nothing, so records from before
    the fast path existed still match."""
    fast = {} if numerics.mode == EXACT else {"numerics": numerics.record()}
    return {
        **task.identity(),
        "recipe": recipe,
        "run": run.key,
        "seed": run.seed,
        "ids": list(run.ids),
        "train": dataclasses.asdict(config),
        "inputs_sha256": hashes,
        "code_sha256": code,
        **fast,
    }


def uses_views(config: TrainConfig, run: Run, data: TaskInputs) -> bool:
    """A few-shot run of a recipe that draws views, and the views of its images are in the store."""
    return bool(config.augment.views) and run.regime == fewshot.FEWSHOT and data.has_views(run.ids)


def view_hashes(data: TaskInputs, ids: tuple[str, ...]) -> dict[str, str]:
    """What a run's views are: the views store's inputs and encoder, and the views' boxes and pseudo-labels."""
    drawn = data.views(ids)
    attrs = data.view_store.attrs
    return {
        "views_store": "/".join(str(attrs[k]) for k in embeddings.IDENTITY_KEYS),
        "view_boxes": array_sha256(drawn.boxes),
        "view_pseudo_labels": array_sha256(drawn.pseudo),
    }


def extra_record(extra: PseudoBoxes) -> dict:
    """What a second round's pseudo-boxed images add to its runs' records: how they were chosen, how many, their
    weight and share of each epoch, and the hashes of their embeddings and boxes."""
    return {
        **extra.source,
        "images": len(extra.boxes),
        "weight": extra.weight,
        "per_epoch": extra.per_epoch,
        "embeddings_sha256": array_sha256(extra.embeddings),
        "boxes_sha256": array_sha256(extra.boxes),
    }


def plan_head_jobs(
    task: Task,
    train: TrainSettings,
    data: TaskInputs,
    numerics: Numerics = EXACT_NUMERICS,
    extra: PseudoBoxes | None = None,
) -> list[HeadJob]:
    """Every run of every recipe, with the hashes of its boxes, pseudo-labels and (for ``best``) validation boxes;
    ``extra``: a second round's pseudo-boxed images, which every run trains on too (their record is ``extra_record``).
    """
    code = sources_sha256(__name__)
    second = extra_record(extra) if extra is not None else None
    val_ids = tuple(task.rows("val")["id"])
    if train.select == "best" and (not val_ids or not train.validate_every):
        raise InputError(
            f"{train.key('select')} is best, which needs validation images and validate_every > 0; task "
            f"{task.name} has {len(val_ids)} validation images: use last"
        )
    jobs = []
    rows = task.rows("train")
    areas, spread = draw_areas(rows, train), draw_features(rows, train, task.embeddings)
    for recipe in train.recipe:
        plan = plan_runs(
            rows["id"].tolist(),
            train.shots,
            train.subsets,
            train.seeds,
            train.subset_seed,
            train.trains_all_images(recipe),
            task.name,
            train.key("shots"),
            areas,
            spread,
        )
        for run in plan:
            config = TrainConfig.from_settings(train, recipe, run.regime)
            hashes = {"boxes": array_sha256(data.boxes(run.ids))}
            if config.loss.pseudo_label:
                hashes["pseudo_labels"] = array_sha256(data.pseudo(run.ids))
            if uses_views(config, run, data):
                hashes.update(view_hashes(data, run.ids))
            if config.select == "best" and val_ids:
                hashes["validation_boxes"] = array_sha256(data.boxes(val_ids))
            record = run_record(task, recipe, run, config, hashes, code, numerics)
            if second is not None:
                record["self_training"] = second
            jobs.append(HeadJob(f"{recipe}/{run.key}", run, config, record))
    return jobs


def train_head_job(
    job: HeadJob,
    task: Task,
    data: TaskInputs,
    validation: ValidationSet | None,
    out: Path,
    checkpoint: str | None,
    numerics: Numerics = EXACT_NUMERICS,
    extra: PseudoBoxes | None = None,
) -> None:
    """Train one run into ``out/<key>`` (whole or not at all), with its dvclive logs and its inputs.
    ``checkpoint``: the configured backbone checkpoint path, recorded for ``predict`` (None for packaged weights).
    ``numerics``: how the training step computes on a CPU; ``extra``: a second round's pseudo-boxed images, with
    their box-prompted masks where the recipe's pseudo-label loss needs them."""
    pseudo = data.pseudo(job.run.ids) if job.config.loss.pseudo_label else None
    if extra is not None and pseudo is None:
        extra = dataclasses.replace(extra, masks=None)
    with (
        atomic_path(out / job.key) as folder,
        tqdm(total=job.config.epochs, desc=f"train {task.name} {job.key}", unit="epoch") as bar,
    ):
        folder.mkdir()
        live = runs.open_log(folder)
        live.log_params({"run": job.key, "seed": job.run.seed, "images": len(job.run.ids)})

        def on_epoch(epoch: int, terms: dict[str, float]) -> None:
            for name, value in terms.items():
                live.log_metric(f"val/{name[4:]}" if name.startswith("val_") else f"train/{name}", value)
            live.next_step()
            bar.set_postfix(loss=f"{terms['total']:.4f}", **{k: f"{v:.3f}" for k, v in terms.items() if "val" in k})
            bar.update()

        result = train_head(
            data.embeddings(job.run.ids),
            data.boxes(job.run.ids),
            task.label_size,
            data.decoder,
            job.config,
            job.run.seed,
            data.device,
            pseudo=pseudo,
            validation=validation,
            on_epoch=on_epoch,
            views=data.views(job.run.ids) if uses_views(job.config, job.run, data) else None,
            numerics=numerics,
            extra=extra,
        )
        live.end()
        save_inputs(folder, list(job.run.ids), data.boxes(job.run.ids), pseudo)
        runs.save_head(folder, result.head, job.record, selected_epoch=result.epoch, checkpoint=checkpoint)


def open_views(path: Path, task: Task, augment: AugmentSettings) -> zarr.Group:
    """The augment stage's store, refused if made from other images, settings or encoder than the task's."""
    if not Path(path).exists():
        raise InputError(f"{path}: views store not found; run `dvc repro` (the augment stage) first")
    store = embeddings.open_embeddings(path)
    expected = views.source_sha256(task.prepared.attrs["source_sha256"], augment)
    attrs, encoded = dict(store.attrs), task.identity()
    if attrs.get("source_sha256") != expected:
        raise InputError(f"{path}: views made from other images or augment settings; run the augment stage again")
    for key in ("backbone", "checkpoint_sha256", "runtime", "precision"):
        if attrs.get(key) != encoded[key]:
            raise InputError(f"{path}: views encoded with another {key} than the embeddings; run augment again")
    return store


def train_task(
    task: Task,
    train: TrainSettings,
    encode: EncodeSettings,
    augment: AugmentSettings,
    out: Path,
    views_store: Path | None = None,
    numerics: Numerics = EXACT_NUMERICS,
    extra: PseudoBoxes | None = None,
) -> tuple[list[HeadJob], int]:
    """Train every planned run of ``task`` that ``out`` does not hold already, then remove the run folders of earlier
    plans; returns the plan and how many of its runs were trained. ``views_store``: the augment stage's encoded views
    (None: no views). ``numerics``: the training step's CPU numerics (the stages keep the exact default).
    ``extra``: a second round's pseudo-boxed images (``autoprompt train``'s ``train.self_training``), which every
    run also trains on."""
    if task.preprocessing is None:
        raise InputError(f"{task.files.prepared}: made before stores recorded their preprocessing; prepare it again")
    checkpoint = task_checkpoint(task, encode)
    device = select_device(train.device, train.key("device"))
    decoder = backbones.build_prompt_decoder(encode.backbone, checkpoint).to(device)
    store = open_views(views_store, task, augment) if views_store else None
    data = TaskInputs(task, decoder, device, train.predict_batch_size, store, augment)
    jobs = plan_head_jobs(task, train, data, numerics, extra)
    todo = [job for job in jobs if not runs.is_done(out / job.key, job.record)]
    if extra is not None and todo and any(job.config.loss.pseudo_label for job in todo):
        masks = box_prompted_masks(decoder, extra.embeddings, extra.boxes, task.label_size, data.batch_size, device)
        extra = dataclasses.replace(extra, masks=masks)
    log.info("%s: %d run%s planned, %d already trained, %d to train", task.name, len(jobs),
             "" if len(jobs) == 1 else "s", len(jobs) - len(todo), len(todo))  # fmt: skip
    validation = data.validation(with_masks=True) if todo and train.validate_every else None
    configured = None if checkpoints.is_packaged(encode.backbone) else encode.checkpoint
    for job in todo:
        train_head_job(job, task, data, validation, out, configured, numerics, extra)
    removed = runs.remove_stale(out, {job.key for job in jobs})
    if removed:
        log.info("%s: removed runs of earlier params: %s", task.name, ", ".join(removed))
    return jobs, len(todo)
