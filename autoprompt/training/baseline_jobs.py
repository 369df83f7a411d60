"""Table 1's baselines of one task, planned and trained on the head's splits and few-shot subsets: the baseline stage.

UNet, TransUNet, AutoSAM and the prompt head trained with masks train on ``train.shots`` images (the head's own
subsets and seeds) and, with ``baseline.all_images``, on every training image; PerSAM takes one reference image per
run (``baseline.persam.references`` of them). Every run needs masks: a run whose images lack one (a user's own data
with boxes only) is left out, with a warning. Runs are fingerprinted as the head's are (``head_jobs``), so the stage
resumes and a new shot count retrains only the few-shot runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from autoprompt.data.tasks import Task
from autoprompt.device import select_device
from autoprompt.io import atomic_path, file_sha256
from autoprompt.model import backbones
from autoprompt.model import baselines as methods
from autoprompt.model.baselines import METHODS
from autoprompt.model.decoding import PromptDecoder
from autoprompt.settings import BaselineSettings, EncodeSettings, TrainSettings
from autoprompt.sources import sources_sha256
from autoprompt.training import runs
from autoprompt.training.baselines import BaselineConfig, make_model, train_baseline
from autoprompt.training.fewshot import Run, draw_areas, draw_features, draw_subset, plan_runs
from autoprompt.training.inputs import task_checkpoint
from autoprompt.training.pseudo_labels import array_sha256

log = logging.getLogger(__name__)

ONESHOT = "oneshot"


@dataclass(frozen=True)
class BaselineJob:
    """One baseline run to have: its key (``method/regime/run``), method, run and fingerprinted record."""

    key: str
    method: str
    run: Run
    record: dict


def plan_method(task: Task, baseline: BaselineSettings, train: TrainSettings, name: str) -> list[Run]:
    """A method's runs: PerSAM one per reference image (drawn among the training images with a mask); the others
    the head's few-shot subsets x seeds, then every training image x seeds when ``baseline.all_images``."""
    rows = task.rows("train")
    if name == "persam":
        ids = rows.loc[rows["has_mask"].astype(bool), "id"].tolist()
        if not ids:
            return []
        count = baseline.persam.references
        return [Run(ONESHOT, f"ref{i}", 0, draw_subset(ids, 1, i, train.subset_seed)) for i in range(count)]
    return plan_runs(
        rows["id"].tolist(),
        train.shots,
        train.subsets,
        train.seeds,
        train.subset_seed,
        baseline.all_images,
        task.name,
        train.key("shots"),
        draw_areas(rows, train),
        draw_features(rows, train, task.embeddings),
    )


def run_record(task: Task, name: str, baseline: BaselineSettings, run: Run, masks_sha256: str, code: str) -> dict:
    """Everything a baseline run's result depends on; its fingerprint decides whether a saved run can be kept."""
    section = baseline.method(name)
    weights = getattr(section, "weights", None)
    return {
        **task.identity(),
        "method": name,
        "title": methods.title(name, section),
        "settings": section.model_dump(mode="json"),
        "weights_sha256": file_sha256(Path(weights)) if weights else None,
        "run": run.key,
        "seed": run.seed,
        "ids": list(run.ids),
        "masks_sha256": masks_sha256,
        "code_sha256": code,
    }


def plan_baseline_jobs(task: Task, baseline: BaselineSettings, train: TrainSettings) -> list[BaselineJob]:
    """Every run of every method whose images all have masks; the others are named in a warning."""
    code = sources_sha256(__name__)
    with_mask = dict(zip(task.table["id"], task.table["has_mask"].astype(bool), strict=True))
    jobs = []
    for name in baseline.methods:
        for run in plan_method(task, baseline, train, name):
            missing = [i for i in run.ids if not with_mask[i]]
            if missing:
                log.warning("%s: %s %s left out: %d of its images have no mask", task.name, name, run.key, len(missing))
                continue
            masks = task.load_masks(task.rows(ids=run.ids))
            record = run_record(task, name, baseline, run, array_sha256(masks), code)
            jobs.append(BaselineJob(f"{name}/{run.key}", name, run, record))
    return jobs


def train_baseline_job(
    job: BaselineJob,
    task: Task,
    baseline: BaselineSettings,
    train: TrainSettings,
    decoder: PromptDecoder,
    device: torch.device,
    out: Path,
) -> None:
    """Train (or, for PerSAM, fit) one run into ``out/<key>``, whole or not at all, with its dvclive logs."""
    section = baseline.method(job.method)
    rows = task.rows(ids=job.run.ids)
    method = METHODS[job.method]
    masks, boxes = task.load_masks(rows), task.boxes(rows)
    images = task.load_images(rows) if method.images else None
    features = task.load_embeddings(rows) if method.embeddings else None
    trained = method.trained
    config = BaselineConfig.from_settings(section, job.run.regime) if trained else None
    with (
        atomic_path(out / job.key) as folder,
        tqdm(total=config.epochs if config else 1, desc=f"{job.method} {task.name} {job.run.key}", unit="epoch") as bar,
    ):
        folder.mkdir()
        live = runs.open_log(folder)
        live.log_params({"method": job.method, "run": job.run.key, "seed": job.run.seed, "images": len(rows)})

        def on_epoch(epoch: int, terms: dict[str, float]) -> None:
            for term, value in terms.items():
                live.log_metric(f"train/{term}", value)
            live.next_step()
            bar.set_postfix(loss=f"{terms['total']:.4f}")
            bar.update()

        model = make_model(job.method, section, decoder, job.run.seed, boxes, task.label_size, train.init)
        model = train_baseline(
            job.method, model, decoder, images, features, masks, config, job.run.seed, device, on_epoch
        )
        live.end()
        runs.save_model(folder, {k: v.cpu() for k, v in model.state_dict().items()}, job.record)
        bar.update(0 if trained else 1)


def train_task(
    task: Task, baseline: BaselineSettings, train: TrainSettings, encode: EncodeSettings, out: Path
) -> list[BaselineJob]:
    """Train every planned baseline run of ``task`` that ``out`` does not hold already, then remove the run folders
    of earlier plans; returns the plan. ``out`` is made even for a plan of no runs (``baseline.methods: []``, or no
    run with masks), which deletes nothing (``runs.remove_stale``): the stage's output exists, and ``evaluate``
    scores no baseline (it scores the planned methods only)."""
    jobs = plan_baseline_jobs(task, baseline, train)
    out.mkdir(parents=True, exist_ok=True)
    todo = [job for job in jobs if not runs.is_done(out / job.key, job.record, runs.MODEL)]
    log.info(
        "%s: %d baseline runs planned, %d already trained, %d to train", task.name, len(jobs), len(jobs) - len(todo),
        len(todo),
    )  # fmt: skip
    if todo:
        checkpoint = task_checkpoint(task, encode)
        device = select_device(baseline.device, baseline.key("device"))
        decoder = backbones.build_prompt_decoder(encode.backbone, checkpoint).to(device)
        for job in todo:
            train_baseline_job(job, task, baseline, train, decoder, device, out)
    why = f"{baseline.key('methods')} is empty" if not baseline.methods else "no run of baseline.methods has masks"
    removed = runs.remove_stale(out, {job.key for job in jobs}, why)
    if removed:
        log.info("%s: removed runs of earlier params: %s", task.name, ", ".join(removed))
    return jobs
