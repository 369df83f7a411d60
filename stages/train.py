"""train@<task>: the prompt head's runs, per recipe: few-shot subsets x seeds, and all images x seeds.

Only embeddings (and the ``augment`` stage's encoded views) and tight boxes are read; the image encoder is never
built. Finished runs whose fingerprint is unchanged are kept (the stage's output persists), so a killed stage
resumes and a new ``train.shots`` retrains only the few-shot runs. The fingerprint covers the params, the run's
boxes and pseudo-labels (and its views'), and the code.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import zarr
from dvclive import Live
from tqdm import tqdm

import stages
from autoprompt import stage
from autoprompt.data import embeddings, prepared, tasks, views
from autoprompt.data.tasks import Task, load_task
from autoprompt.data.views import ViewSettings
from autoprompt.errors import InputError
from autoprompt.evaluation import metrics
from autoprompt.io import atomic_path
from autoprompt.model import backbones, decoding, head, losses
from autoprompt.stage import load_params, pin_cpu_numerics, run, select_device, task_checkpoint, task_parser
from autoprompt.training import augment, fewshot, inputs, loop, pseudo_labels, runs, validation
from autoprompt.training.fewshot import Run, plan_runs
from autoprompt.training.inputs import TaskInputs
from autoprompt.training.loop import TrainConfig, recipe_names, train_head, trains_all_images
from autoprompt.training.pseudo_labels import array_sha256, save_inputs
from autoprompt.training.validation import ValidationSet

log = logging.getLogger("train")

# Every module a run's result depends on: a change to any of them trains the run again.
TRAINING_CODE = (
    loop, augment, validation, pseudo_labels, inputs, fewshot, runs, head, losses, decoding, backbones, metrics,
    tasks, prepared, embeddings, views, stage, stages,
)  # fmt: skip


@dataclass(frozen=True)
class Job:
    """One run to have: its key (``recipe/regime/run``), the run, its optimisation config and its fingerprinted
    config (everything its result depends on)."""

    key: str
    run: Run
    config: TrainConfig
    record: dict


def run_config(task: Task, recipe: str, run_: Run, config: TrainConfig, hashes: dict[str, str], code: str) -> dict:
    """Everything a run's result depends on; its fingerprint decides whether a saved run can be kept."""
    return {
        **task.identity(),
        "recipe": recipe,
        "run": run_.key,
        "seed": run_.seed,
        "ids": list(run_.ids),
        "train": dataclasses.asdict(config),
        "inputs_sha256": hashes,
        "code_sha256": code,
    }


def uses_views(config: TrainConfig, run_: Run, data: TaskInputs) -> bool:
    """A few-shot run of a recipe that draws views, and the views of its images are in the store."""
    return bool(config.augment.views) and run_.regime == fewshot.FEWSHOT and data.has_views(run_.ids)


def view_hashes(data: TaskInputs, ids: tuple[str, ...]) -> dict[str, str]:
    """What a run's views are: the views store's inputs and encoder, and the views' boxes and pseudo-labels."""
    views = data.views(ids)
    attrs = data.view_store.attrs
    return {
        "views_store": "/".join(str(attrs[k]) for k in embeddings.IDENTITY_KEYS),
        "view_boxes": array_sha256(views.boxes),
        "view_pseudo_labels": array_sha256(views.pseudo),
    }


def plan_jobs(task: Task, train: dict, data: TaskInputs) -> list[Job]:
    """Every run of every recipe, with the hashes of its boxes, pseudo-labels and (for ``best``) validation boxes."""
    code = runs.code_sha256([*TRAINING_CODE, sys.modules[__name__]])  # this stage module too
    val_ids = tuple(task.rows("val")["id"])
    jobs = []
    for recipe in recipe_names(train):
        plan = plan_runs(
            task.rows("train")["id"].tolist(),
            train["shots"],
            int(train["subsets"]),
            [int(s) for s in train["seeds"]],
            int(train["subset_seed"]),
            trains_all_images(train, recipe),
            task.name,
        )
        for r in plan:
            config = TrainConfig.from_params(train, recipe, r.regime)
            hashes = {"boxes": array_sha256(data.boxes(r.ids))}
            if config.loss.pseudo_label:
                hashes["pseudo_labels"] = array_sha256(data.pseudo(r.ids))
            if uses_views(config, r, data):
                hashes.update(view_hashes(data, r.ids))
            if config.select == "best" and val_ids:
                hashes["validation_boxes"] = array_sha256(data.boxes(val_ids))
            jobs.append(Job(f"{recipe}/{r.key}", r, config, run_config(task, recipe, r, config, hashes, code)))
    return jobs


def train_job(
    job: Job, task: Task, data: TaskInputs, validation: ValidationSet | None, out: Path, checkpoint: str | None
) -> None:
    """Train one run into ``out/<key>`` (whole or not at all), with its dvclive logs and its inputs.
    ``checkpoint``: the configured backbone checkpoint path, recorded for ``predict`` (None for packaged weights)."""
    pseudo = data.pseudo(job.run.ids) if job.config.loss.pseudo_label else None
    with (
        atomic_path(out / job.key) as folder,
        tqdm(total=job.config.epochs, desc=f"train {task.name} {job.key}", unit="epoch") as bar,
    ):
        folder.mkdir()
        live = Live(dir=str(folder), dvcyaml=None, save_dvc_exp=False, report=None)
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
        )
        live.end()
        save_inputs(folder, list(job.run.ids), data.boxes(job.run.ids), pseudo)
        runs.save_head(folder, result.head, job.record, selected_epoch=result.epoch, checkpoint=checkpoint)


def open_views(path: Path, task: Task, settings: ViewSettings) -> zarr.Group:
    """The augment stage's store, refused if made from other images, settings or encoder than the task's."""
    if not Path(path).exists():
        raise InputError(f"{path}: views store not found; run `dvc repro` (the augment stage) first")
    store = embeddings.open_embeddings(path)
    expected = views.source_sha256(task.prepared.attrs["source_sha256"], settings)
    attrs, encoded = dict(store.attrs), task.identity()
    if attrs.get("source_sha256") != expected:
        raise InputError(f"{path}: views made from other images or augment settings; run the augment stage again")
    for key in ("backbone", "checkpoint_sha256", "runtime", "precision"):
        if attrs.get(key) != encoded[key]:
            raise InputError(f"{path}: views encoded with another {key} than the embeddings; run augment again")
    return store


def main(argv: list[str] | None = None) -> None:
    args = task_parser(__doc__)
    args.add_argument("--out", type=Path, required=True, help="folder of the task's runs")
    args.add_argument("--views", type=Path, help="the augment stage's views store (none: no views)")
    args = args.parse_args(argv)
    params = load_params(args.params)
    train, encode = params["train"], params["encode"]
    pin_cpu_numerics(train)

    task = load_task(params, args.task, args.prepared, args.index, args.embeddings)
    if task.preprocessing is None:
        raise InputError(f"{args.prepared}: made before stores recorded their preprocessing; run prepare again")
    checkpoint = task_checkpoint(task, encode, args.embeddings)
    device = select_device(train["device"])
    decoder = backbones.build_prompt_decoder(encode["backbone"], checkpoint).to(device)
    settings = ViewSettings.from_params(params.get("augment", {}))  # no section: no views
    store = open_views(args.views, task, settings) if args.views else None
    data = TaskInputs(task, decoder, device, int(train["predict_batch_size"]), store, settings)
    jobs = plan_jobs(task, train, data)
    todo = [job for job in jobs if not runs.is_done(args.out / job.key, job.record)]
    log.info(
        "%s: %d runs planned, %d already trained, %d to train", args.task, len(jobs), len(jobs) - len(todo), len(todo)
    )
    validation = data.validation(with_masks=True) if todo and int(train["validate_every"]) else None
    configured = None if backbones.get_spec(encode["backbone"]).packaged_checkpoint else encode.get("checkpoint")
    for job in todo:
        train_job(job, task, data, validation, args.out, configured)
    removed = runs.remove_stale(args.out, {job.key for job in jobs})
    if removed:
        log.info("%s: removed runs of earlier params: %s", args.task, ", ".join(removed))


if __name__ == "__main__":
    run(main)
