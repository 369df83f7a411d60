"""Where a demo's time goes: ``dvc repro demo/dvc.yaml`` (or ``--pipeline``) in a fresh clone, timed stage by stage.

The repository is cloned from its committed state into a scratch folder and the demo runs there with this
environment's packages (the install is not timed), as the README's first command does. Every line DVC and the stages
print is stamped as it arrives; a stage's time runs from its "Running stage" line to the next one, so it includes
the process's start. The result gives the total, each stage, each stage kind (prepare, train, ...), and the training
runs each kind trained, to show what a shorter demo would have to give up.

    python -m bench.timings demo_time                                     # the README's first command: demo_time.json
    python -m bench.timings demo_time --pipeline demo/cardiac/dvc.yaml    # the cardiac demo: demo_time_cardiac.json
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from bench.lib import common

log = common.log.getChild("demo_time")

STAGE = re.compile(r"Running stage '([^']+)'")
PLANNED = re.compile(r"(\d+) (?:baseline )?runs planned")
FIRST = "demo/dvc.yaml"  # the README's first command


def stage_times(lines: list[tuple[float, str]]) -> tuple[dict[str, float], dict[str, int]]:
    """Each stage's seconds (its "Running stage" line to the next, or to the end) and the runs it planned."""
    times: dict[str, float] = {}
    runs: dict[str, int] = {}
    current, since = None, 0.0
    for at, line in lines:
        found = STAGE.search(line)
        if found or at == lines[-1][0]:
            if current is not None:
                times[current] = round(at - since, 1)
            if found:
                current, since = found.group(1).split(":")[-1], at
        planned = PLANNED.search(line)
        if planned and current is not None:
            runs[current] = int(planned.group(1))
    return times, runs


def by_kind(times: dict[str, float], runs: dict[str, int]) -> dict[str, dict]:
    """Stage times and planned runs summed over each stage kind (``train@hc18`` -> ``train``)."""
    kinds: dict[str, dict] = defaultdict(lambda: {"stages": 0, "seconds": 0.0, "runs": 0})
    for stage, seconds in times.items():
        kind = kinds[stage.split("@")[0]]
        kind["stages"] += 1
        kind["seconds"] = round(kind["seconds"] + seconds, 1)
        kind["runs"] += runs.get(stage, 0)
    return dict(sorted(kinds.items(), key=lambda item: -item[1]["seconds"]))


def result_name(pipeline: str) -> str:
    """``demo/dvc.yaml`` -> ``demo_time``; ``demo/cardiac/dvc.yaml`` -> ``demo_time_cardiac``."""
    folder = Path(pipeline).parent
    return "demo_time" if folder == Path(FIRST).parent else f"demo_time_{folder.name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="clone into this folder and keep it (default: a scratch folder)")
    parser.add_argument("--pipeline", default=FIRST, help=f"the pipeline to time (default: {FIRST}, the first command)")
    args, machine = common.parse_and_start(parser)
    pipeline = args.pipeline
    with tempfile.TemporaryDirectory() as scratch:
        clone = args.keep or Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", str(common.REPO), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout
        log.info("running the demo in %s (this takes a while; progress in the stage logs)", clone)
        if not (clone / pipeline).is_file():
            sys.exit(f"{pipeline}: no such pipeline in the committed repository")
        lines, status = common.timed_lines([sys.executable, "-m", "dvc", "repro", pipeline], clone)
    if status != 0:
        sys.exit("\n".join(line for _, line in lines[-20:]) + f"\ndvc repro {pipeline} failed (exit {status})")
    times, runs = stage_times(lines)
    total = round(lines[-1][0], 1)
    log.info("%s: %.0f s in %d stages", pipeline, total, len(times))
    common.write_result(
        result_name(pipeline),
        {
            "what": f"dvc repro {pipeline} in a fresh clone, install excluded; a stage's seconds include its start",
            "pipeline": pipeline,
            "commit": commit.strip(),
            "total_seconds": total,
            "stages": len(times),
            "by_kind": by_kind(times, runs),
            "by_stage": times,
            "machine": machine,
        },
    )
