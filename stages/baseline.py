"""baseline@<task>: Table 1's baselines, on the same prepared data, splits and few-shot subsets as the prompt head.

UNet, TransUNet, AutoSAM and the prompt head trained with masks train on the head's subsets and seeds (and, with
``baseline.all_images``, on every training image); PerSAM takes one reference image per run. Runs are kept and
fingerprinted like the head's, so the stage resumes (``autoprompt.training.baseline_jobs``); ``evaluate`` scores
them beside the head.
"""

from __future__ import annotations

from pathlib import Path

from autoprompt.console import run
from autoprompt.data.tasks import TaskFiles, load_task
from autoprompt.device import pin_cpu_numerics
from autoprompt.settings import load_settings
from autoprompt.training.baseline_jobs import train_task
from stages import task_parser


def main(argv: list[str] | None = None) -> None:
    args = task_parser(__doc__)
    args.add_argument("--out", type=Path, required=True, help="folder of the task's baseline runs")
    args = args.parse_args(argv)
    settings = load_settings(args.params)
    pin_cpu_numerics(settings.baseline.threads)
    files = TaskFiles(args.prepared, args.index, args.embeddings)
    task = load_task(
        args.task, settings.task(args.task), files, settings.prepare.min_foreground, settings.encode.backbone
    )
    train_task(task, settings.baseline, settings.train, settings.encode, args.out)


if __name__ == "__main__":
    run(main)
