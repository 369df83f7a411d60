"""train@<task>: the prompt head's runs (few-shot subsets x seeds, and all images x seeds) from cached embeddings.

Only embeddings and tight boxes are read; the image encoder is never built. Finished runs whose config is
unchanged are kept (the stage's output persists), so a killed stage resumes and a new ``train.shots`` retrains
only the few-shot runs.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from dvclive import Live
from tqdm import tqdm

from autoprompt import backbones, decoding, losses, runs, training
from autoprompt import head as prompt_head
from autoprompt.errors import InputError
from autoprompt.fewshot import Run, plan_runs
from autoprompt.io import atomic_path
from autoprompt.stage import load_params, run, select_device, task_parser
from autoprompt.tasks import Task, load_task
from autoprompt.training import TrainConfig, train_head

log = logging.getLogger("train")

TRAINING_CODE = (training, prompt_head, losses, decoding)  # the modules a run's result depends on


def run_config(task: Task, run_: Run, config: TrainConfig, code_sha256: str) -> dict:
    """Everything a run's result depends on; its fingerprint decides whether a saved run can be kept."""
    attrs = task.embeddings.attrs
    return {
        "task": task.name,
        "class": task.class_name,
        "label_size": task.label_size,
        "backbone": attrs["backbone"],
        "checkpoint_sha256": attrs["checkpoint_sha256"],
        "source_sha256": attrs["source_sha256"],
        "run": run_.key,
        "seed": run_.seed,
        "ids": list(run_.ids),
        "train": dataclasses.asdict(config),
        "code_sha256": code_sha256,
    }


def main(argv: list[str] | None = None) -> None:
    args = task_parser(__doc__)
    args.add_argument("--out", type=Path, required=True, help="folder of the task's runs")
    args = args.parse_args(argv)
    params = load_params(args.params)
    train, encode = params["train"], params["encode"]

    task = load_task(params, args.task, args.prepared, args.index, args.embeddings)
    config = TrainConfig.from_params(train)
    plan = plan_runs(
        task.rows("train")["id"].tolist(),
        train["shots"],
        int(train["subsets"]),
        [int(s) for s in train["seeds"]],
        int(train["subset_seed"]),
        bool(train["all_images"]),
        args.task,
    )
    checkpoint = backbones.resolve_checkpoint(encode["backbone"], encode.get("checkpoint"))
    if backbones.file_sha256(checkpoint) != task.embeddings.attrs["checkpoint_sha256"]:
        raise InputError(
            f"{args.embeddings}: encoded with another checkpoint than {checkpoint}; "
            "run the encode stage again (dvc repro)"
        )
    code = runs.code_sha256(list(TRAINING_CODE))
    configs = {r.key: run_config(task, r, config, code) for r in plan}
    todo = [r for r in plan if not runs.is_done(args.out / r.key, configs[r.key])]
    log.info(
        "%s: %d runs planned, %d already trained, %d to train", args.task, len(plan), len(plan) - len(todo), len(todo)
    )

    if todo:
        device = select_device(train["device"])
        decoder = backbones.build_prompt_decoder(encode["backbone"], checkpoint)
        needed = task.rows(ids=tuple(sorted({i for r in todo for i in r.ids})))
        cached = dict(zip(needed["id"], task.load_embeddings(needed), strict=True))
        for r in todo:
            rows = task.rows(ids=r.ids)
            embeddings = torch.stack([cached[i] for i in r.ids])
            with (
                atomic_path(args.out / r.key) as folder,
                tqdm(total=config.epochs, desc=f"train {args.task} {r.key}", unit="epoch") as bar,
            ):
                folder.mkdir()
                live = Live(dir=str(folder), dvcyaml=None, save_dvc_exp=False, report=None)
                live.log_params({"run": r.key, "seed": r.seed, "images": len(r.ids)})

                def on_epoch(epoch: int, terms: dict[str, float], live: Live = live, bar: tqdm = bar) -> None:
                    for name, value in terms.items():
                        live.log_metric(f"train/{name}", value)
                    live.next_step()
                    bar.set_postfix(loss=f"{terms['total']:.4f}")
                    bar.update()

                head = train_head(
                    embeddings, task.boxes(rows), task.label_size, decoder, config, r.seed, device, on_epoch
                )
                live.end()
                runs.save_head(folder, head, configs[r.key])
    removed = runs.remove_stale(args.out, set(configs))
    if removed:
        log.info("%s: removed runs of earlier params: %s", args.task, ", ".join(removed))


if __name__ == "__main__":
    run(main)
