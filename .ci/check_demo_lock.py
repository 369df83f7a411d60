"""Whether the committed metrics of the demos (``demo/dvc.yaml``, ``demo/cardiac/dvc.yaml``) come from their inputs.

CI reruns the demo and compares its metrics with the committed ones (``check_metrics.py``). That comparison only
means something when the committed metrics were computed from the same params and data: a changed param or a
replaced image with the old metrics still committed reads as a drop (or hides one). ``dvc status`` knows, from
each demo's ``dvc.lock``, which params and files each committed output was computed from; this script fails on any
of them that has changed since. Code is left out, and so are its fingerprints (``<demo>/fingerprints/<module>.json``,
what the stages depend on: ``stages/fingerprint.py``): a refactor that keeps the numbers need not rerun the demo, and
one that moves them fails the metric check itself.

Run from the repository root: ``python .ci/check_demo_lock.py`` (exit 1, one line per stale input).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

PIPELINES = ("demo/dvc.yaml", "demo/cardiac/dvc.yaml")  # the README's first command, then the cardiac phantoms

CODE = ("autoprompt", "stages")  # the package's Python code: checked by the metric comparison, not here
FINGERPRINTS = "fingerprints"  # the folder where each pipeline's fingerprint stage writes the hashes of that code
STALE = {"modified", "new", "deleted"}  # an input changed or removed since the lock, or one the lock never saw


def is_code(path: str) -> bool:
    """A Python file or package folder of the project's code (its data, ``autoprompt/reference``, is not code), or
    the fingerprint of a stage's code (``demo/fingerprints/stages.train.json``)."""
    parts = path.split("/")
    if parts[-2:-1] == [FINGERPRINTS] and path.endswith(".json"):
        return True
    data = parts[:2] == ["autoprompt", "reference"]
    return parts[0] in CODE and not data and (path.endswith(".py") or "." not in parts[-1])


def stale_inputs(status: dict, outputs: set[str]) -> list[str]:
    """``dvc status --json`` of the demo -> one line per param or data input changed since ``dvc.lock``.

    ``outputs``: what the stages write (``demo_outputs``); those are missing from a clone and may be left over from
    an older run in a workspace, and are checked through the inputs they were computed from."""
    lines = []
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):  # "changed checksum", "always changed": a stage the lock lacks
                lines.append(f"{stage}: {change}")
                continue
            for path, state in change.get("changed deps", {}).items():
                if isinstance(state, dict):  # a params file: {section: "modified" | "new" | "deleted"}
                    lines += [f"{stage}: {path}: {key} {value}" for key, value in state.items()]
                elif state in STALE and not is_code(path) and path not in outputs:
                    lines.append(f"{stage}: {path} {state}")
    return lines


def demo_outputs(repo: Path, pipeline: str = PIPELINES[0]) -> set[str]:
    """Every path a demo's stages write, as ``dvc status`` names them (from the repository root)."""
    folder = Path(pipeline).parent
    lock = yaml.safe_load((repo / folder / "dvc.lock").read_text())
    return {f"{folder.as_posix()}/{out['path']}" for stage in lock["stages"].values() for out in stage.get("outs", [])}


def demo_status(repo: Path, pipeline: str = PIPELINES[0]) -> dict:
    """``dvc status --json`` of a demo's ``dvc.yaml``, run in ``repo`` with this Python's DVC."""
    run = [sys.executable, "-m", "dvc", "status", pipeline, "--json"]
    out = subprocess.run(run, cwd=repo, capture_output=True, text=True, check=True).stdout
    return json.loads(out or "{}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository root (default: .)")
    parser.add_argument("pipelines", nargs="*", default=PIPELINES, help=f"default: {' '.join(PIPELINES)}")
    args = parser.parse_args()
    stale = 0
    for pipeline in args.pipelines:
        folder = Path(pipeline).parent.as_posix()
        lines = stale_inputs(demo_status(args.repo, pipeline), demo_outputs(args.repo, pipeline))
        for line in lines:
            print(f"stale: {line}", file=sys.stderr)
        if lines:
            print(
                f"{folder}/metrics and {folder}/dvc.lock are older than the demo's params or data: rerun "
                f"`dvc repro {pipeline}` and commit {folder}/metrics and {folder}/dvc.lock",
                file=sys.stderr,
            )
        else:
            print(f"{folder}/metrics and {folder}/dvc.lock match the demo's params and data")
        stale += len(lines)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
