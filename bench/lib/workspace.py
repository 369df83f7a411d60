"""The kept work folder of the studies that train heads on the real HC18 sample (``bench.studies.accuracy`` and
``bench.studies.draw``): the sample prepared, encoded and its few-shot images' views encoded by the pipeline's own
stages, the runs trained in worker processes, and the options and records those studies share.
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import time
from pathlib import Path

import torch
import yaml

from autoprompt.data.tasks import Task, TaskFiles, load_task
from autoprompt.device import pin_cpu_numerics
from autoprompt.model import backbones, checkpoints
from autoprompt.model.decoding import PromptDecoder, decode
from autoprompt.settings import load_settings
from autoprompt.training.fewshot import Run
from autoprompt.training.head_jobs import open_views
from autoprompt.training.inputs import TaskInputs
from autoprompt.training.loop import TrainConfig, train_head
from autoprompt.training.pseudo_labels import box_prompted_masks
from autoprompt.training.validation import ValidationSet
from bench.lib import common
from stages import augment, encode, prepare

log = logging.getLogger("bench.workspace")

BACKBONE = "lite_medsam"
THRESHOLD = 0.5
CPU = torch.device("cpu")


def workspace(work: Path, hc18: Path, params: dict, shots: int, subsets: int) -> Path:
    """Prepare and encode the sample, and encode the views of its few-shot images, under ``work`` (kept between
    runs; the stages skip what is done)."""
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "raw"
    if not raw.exists():
        raw.symlink_to(hc18.resolve())
    settings = copy.deepcopy(params)
    settings["datasets"] = ["hc18"]
    settings["tasks"] = {"hc18": params["tasks"]["hc18"]}
    settings["encode"].update({"backbone": BACKBONE, "checkpoint": None, "device": "cpu", "threads": 2})
    settings["train"].update({"shots": shots, "subsets": subsets, "subset_seed": 0})
    (work / "params.yaml").write_text(yaml.safe_dump(settings))
    p = ["--params", str(work / "params.yaml")]
    store, index, emb = work / "prepared.zarr", work / "prepared.csv", work / "embeddings.zarr"
    if not store.exists():
        prepare.main([*p, "--dataset", "hc18", "--raw", str(raw), "--store", str(store), "--index", str(index)])
    encode.main([*p, "--dataset", "hc18", "--store", str(store), "--out", str(emb)])
    views = ["--store", str(store), "--index", str(index), "--out", str(work / "views.zarr"), "--embeddings", str(emb)]
    augment.main([*p, "--dataset", "hc18", *views])
    return work


@functools.cache
def load_workspace(work: Path) -> tuple[Task, PromptDecoder, ValidationSet, TaskInputs]:
    """The task, the frozen decoder, the validation set and the training inputs (views included), once per
    process."""
    settings = load_settings(work / "params.yaml")
    files = TaskFiles(work / "prepared.zarr", work / "prepared.csv", work / "embeddings.zarr")
    task = load_task("hc18", settings.task("hc18"), files, settings.prepare.min_foreground, BACKBONE)
    decoder = backbones.build_prompt_decoder(BACKBONE, checkpoints.resolve_checkpoint(BACKBONE, None))
    val = task.rows("val")
    embeddings = task.load_embeddings(val)
    masks = box_prompted_masks(decoder, embeddings, task.boxes(val), task.label_size, 8, CPU)
    views = settings.augment
    inputs = TaskInputs(task, decoder, CPU, 8, open_views(work / "views.zarr", task, views), views)
    return task, decoder, ValidationSet(embeddings, masks, task.load_masks(val), batch_size=8), inputs


def train_one(work: Path, config: TrainConfig, recipe: str, run: Run) -> dict:
    """One run of a recipe (in a worker process): its test probabilities with the last and the best head."""
    common.setup_logging()
    pin_cpu_numerics(1)  # the pipeline's CPU numerics, one thread per worker
    task, decoder, validation, inputs = load_workspace(work)
    rows = task.rows(ids=run.ids)
    embeddings, boxes = task.load_embeddings(rows), task.boxes(rows)
    pseudo = None
    if config.loss.pseudo_label:
        pseudo = box_prompted_masks(decoder, embeddings, boxes, task.label_size, 8, CPU)
    start = time.perf_counter()
    views = inputs.views(run.ids) if config.augment.views and inputs.has_views(run.ids) else None
    result = train_head(
        embeddings, boxes, task.label_size, decoder, config, run.seed, CPU, pseudo, validation, views=views
    )
    seconds = time.perf_counter() - start
    probs = {}
    for split in ("test", "val"):
        inputs = task.load_embeddings(task.rows(split))
        probs[split] = {
            name: decode(decoder, inputs, task.label_size, 8, CPU, head=head).half()
            for name, head in (("last", result.last), ("best", result.head))
        }
    log.info("%s %s trained in %.0f s (best epoch %d)", recipe, run.key, seconds, result.epoch)
    return {
        "recipe": recipe,
        "run": run,
        "probs": probs["test"],
        "val_probs": probs["val"],
        "best_epoch": result.epoch,
        "seconds": seconds,
    }


def workspace_parser(description: str, name: str, subsets: int, subsets_help: str) -> argparse.ArgumentParser:
    """The options of a study that trains heads on the real HC18 sample in a kept work folder (``workspace``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="real HC18 in the official layout")
    parser.add_argument("--params", type=Path, default=common.REPO / "params.yaml")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="a key of --params changed for this study (dotted, a YAML value: augment.zoom=0.25)",
    )
    parser.add_argument("--work", type=Path, default=common.BENCH / ".work" / name, help="kept between runs")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--subsets", type=int, default=subsets, help=subsets_help)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, one torch thread each")
    return parser


def start(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, dict]:
    """Parse, log the machine, and refuse a missing HC18 sample or a malformed ``--set`` in one line."""
    args, machine = common.parse_and_start(parser)
    if not (args.hc18 / "training_set").is_dir():
        raise SystemExit(f"{args.hc18}: real HC18 sample not found (no training_set/); pass --hc18 PATH")
    bad = [pair for pair in args.set if "=" not in pair or not pair.split("=", 1)[0]]
    if bad:
        raise SystemExit(f"--set {' '.join(bad)}: give KEY=VALUE, the key dotted (augment.zoom=0.25)")
    return args, machine


def study_params(args: argparse.Namespace) -> dict:
    """``--params`` read, with each ``--set KEY=VALUE`` applied (the value read as YAML)."""
    params = yaml.safe_load(args.params.read_text())
    for pair in args.set:
        key, value = pair.split("=", 1)
        *parents, last = key.split(".")
        section = params
        for part in parents:
            section = section.setdefault(part, {})
        section[last] = yaml.safe_load(value)
    return params


def data_record(task: Task) -> dict:
    """What a result says of the data: the sample, its split and the images of each part."""
    return {
        "source": "real HC18 sample (../shared/data/hc18-sample), first image of each subject",
        "split": "the authors' lists (autoprompt/reference/splits)",
        "images": {s: len(task.rows(s)) for s in ("train", "val", "test")},
    }
