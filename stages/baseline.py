"""baseline@<task>: Table 1's baselines, on the same prepared data, splits and few-shot subsets as the prompt head.

UNet, TransUNet, AutoSAM and the prompt head trained with masks train on ``train.shots`` images (the head's own
subsets and seeds) and, with ``baseline.all_images``, on every training image; PerSAM takes one reference image
per run (``baseline.persam.references`` of them). Every run needs masks: a run whose images lack one (users' own
data with boxes only) is left out, with a warning. Runs are kept and fingerprinted like the head's, so the stage
resumes and a new shot count retrains only the few-shot runs; ``evaluate`` scores them beside the head.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from dvclive import Live
from tqdm import tqdm

import stages
from autoprompt import stage
from autoprompt.data import embeddings, prepared, tasks
from autoprompt.data.tasks import Task, load_task
from autoprompt.errors import InputError
from autoprompt.io import atomic_path
from autoprompt.model import backbones, decoding, head
from autoprompt.model import baselines as methods
from autoprompt.model.baselines import METHODS, autosam, persam, transunet, unet
from autoprompt.model.decoding import PromptDecoder
from autoprompt.stage import load_params, pin_cpu_numerics, run, select_device, task_checkpoint, task_parser
from autoprompt.training import augment, baselines, fewshot, loop, runs
from autoprompt.training.baselines import BaselineConfig
from autoprompt.training.fewshot import Run, draw_subset, plan_runs
from autoprompt.training.loop import HeadStart
from autoprompt.training.pseudo_labels import array_sha256

log = logging.getLogger("baseline")

# Every module a baseline run's result depends on: a change to any of them trains the run again.
BASELINE_CODE = (
    baselines, methods, unet, transunet, autosam, persam, decoding, head, loop, augment, fewshot, runs, backbones,
    tasks, prepared, embeddings, stage, stages,
)  # fmt: skip
ONESHOT = "oneshot"


@dataclass(frozen=True)
class Job:
    """One baseline run to have: its key (``method/regime/run``), method, run and fingerprinted config."""

    key: str
    method: str
    run: Run
    record: dict


def plan_method(task: Task, params: dict, name: str) -> list[Run]:
    """A method's runs: PerSAM one per reference image (drawn among the training images with a mask); the others
    the head's few-shot subsets x seeds, then every training image x seeds when ``baseline.all_images``."""
    train, settings = params["train"], params["baseline"]
    rows = task.rows("train")
    if name == "persam":
        ids = rows.loc[rows["has_mask"].astype(bool), "id"].tolist()
        if not ids:
            return []
        count = int(settings["persam"]["references"])
        return [Run(ONESHOT, f"ref{i}", 0, draw_subset(ids, 1, i, int(train["subset_seed"]))) for i in range(count)]
    return plan_runs(
        rows["id"].tolist(),
        train["shots"],
        int(train["subsets"]),
        [int(s) for s in train["seeds"]],
        int(train["subset_seed"]),
        bool(settings["all_images"]),
        task.name,
    )


def run_config(task: Task, name: str, settings: dict, run_: Run, masks_sha256: str, code: str) -> dict:
    """Everything a baseline run's result depends on; its fingerprint decides whether a saved run can be kept."""
    weights = settings.get("weights")
    return {
        **task.identity(),
        "method": name,
        "title": methods.title(name, settings, weights is not None),
        "settings": settings,
        "weights_sha256": backbones.file_sha256(Path(weights)) if weights else None,
        "run": run_.key,
        "seed": run_.seed,
        "ids": list(run_.ids),
        "masks_sha256": masks_sha256,
        "code_sha256": code,
    }


def plan_jobs(task: Task, params: dict, names: list[str]) -> list[Job]:
    """Every run of every method whose images all have masks; the others are named in a warning."""
    code = runs.code_sha256([*BASELINE_CODE, sys.modules[__name__]])  # this stage module too
    with_mask = dict(zip(task.table["id"], task.table["has_mask"].astype(bool), strict=True))
    jobs = []
    for name in names:
        settings = params["baseline"][name]
        for r in plan_method(task, params, name):
            missing = [i for i in r.ids if not with_mask[i]]
            if missing:
                log.warning("%s: %s %s left out: %d of its images have no mask", task.name, name, r.key, len(missing))
                continue
            masks = task.load_masks(task.rows(ids=r.ids))
            record = run_config(task, name, settings, r, array_sha256(masks), code)
            jobs.append(Job(f"{name}/{r.key}", name, r, record))
    return jobs


def train_job(job: Job, task: Task, params: dict, decoder: PromptDecoder, device, out: Path) -> None:
    """Train (or, for PerSAM, fit) one run into ``out/<key>``, whole or not at all, with its dvclive logs."""
    settings = params["baseline"][job.method]
    rows = task.rows(ids=job.run.ids)
    method = METHODS[job.method]
    masks, boxes = task.load_masks(rows), task.boxes(rows)
    images = task.load_images(rows) if method.images else None
    features = task.load_embeddings(rows) if method.embeddings else None
    trained = method.trained
    config = BaselineConfig.from_params(settings, job.run.regime) if trained else None
    init = params["train"]["init"]
    with (
        atomic_path(out / job.key) as folder,
        tqdm(total=config.epochs if config else 1, desc=f"{job.method} {task.name} {job.run.key}", unit="epoch") as bar,
    ):
        folder.mkdir()
        live = Live(dir=str(folder), dvcyaml=None, save_dvc_exp=False, report=None)
        live.log_params({"method": job.method, "run": job.run.key, "seed": job.run.seed, "images": len(rows)})

        def on_epoch(epoch: int, terms: dict[str, float]) -> None:
            for term, value in terms.items():
                live.log_metric(f"train/{term}", value)
            live.next_step()
            bar.set_postfix(loss=f"{terms['total']:.4f}")
            bar.update()

        start = HeadStart(str(init["prompt"]), float(init["scale"]))
        model = baselines.make_model(job.method, settings, decoder, job.run.seed, boxes, task.label_size, start)
        model = baselines.train_baseline(
            job.method, model, decoder, images, features, masks, config, job.run.seed, device, on_epoch
        )
        live.end()
        runs.save_model(folder, {k: v.cpu() for k, v in model.state_dict().items()}, job.record)
        bar.update(0 if trained else 1)


def main(argv: list[str] | None = None) -> None:
    args = task_parser(__doc__)
    args.add_argument("--out", type=Path, required=True, help="folder of the task's baseline runs")
    args = args.parse_args(argv)
    params = load_params(args.params)
    if "baseline" not in params:
        raise InputError(f"{args.params}: no baseline section; copy it from the repository's params.yaml")
    settings, encode = params["baseline"], params["encode"]
    pin_cpu_numerics(settings)
    names = methods.check_methods(list(settings["methods"]), loop.recipe_names(params["train"]))

    task = load_task(params, args.task, args.prepared, args.index, args.embeddings)
    checkpoint = task_checkpoint(task, encode, args.embeddings)
    device = select_device(settings["device"])
    decoder = backbones.build_prompt_decoder(encode["backbone"], checkpoint).to(device)
    jobs = plan_jobs(task, params, names)
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [job for job in jobs if not runs.is_done(args.out / job.key, job.record, runs.MODEL)]
    log.info(
        "%s: %d baseline runs planned, %d already trained, %d to train",
        args.task,
        len(jobs),
        len(jobs) - len(todo),
        len(todo),
    )
    for job in todo:
        train_job(job, task, params, decoder, device, args.out)
    removed = runs.remove_stale(args.out, {job.key for job in jobs})
    if removed:
        log.info("%s: removed runs of earlier params: %s", args.task, ", ".join(removed))


if __name__ == "__main__":
    run(main)
