"""train@<task>: the prompt head's runs, per recipe: few-shot subsets x seeds, and all images x seeds.

Only embeddings (and the ``augment`` stage's encoded views) and tight boxes are read; the image encoder is never
built. Finished runs whose fingerprint is unchanged are kept (the stage's output persists), so a killed stage
resumes and a new ``train.shots`` retrains only the few-shot runs (``autoprompt.training.head_jobs``).
"""

from __future__ import annotations

from pathlib import Path

from autoprompt.console import run
from autoprompt.data.tasks import TaskFiles, load_task
from autoprompt.device import pin_cpu_numerics
from autoprompt.settings import load_settings
from autoprompt.training.head_jobs import train_task
from stages import task_parser


def main(argv: list[str] | None = None) -> None:
    args = task_parser(__doc__)
    args.add_argument("--out", type=Path, required=True, help="folder of the task's runs")
    args.add_argument("--views", type=Path, help="the augment stage's views store (none: no views)")
    args = args.parse_args(argv)
    settings = load_settings(args.params)
    pin_cpu_numerics(settings.train.threads)
    files = TaskFiles(args.prepared, args.index, args.embeddings)
    task = load_task(
        args.task, settings.task(args.task), files, settings.prepare.min_foreground, settings.encode.backbone
    )
    train_task(task, settings.train, settings.encode, settings.augment, args.out, args.views)


if __name__ == "__main__":
    run(main)
