"""The pull-request comment: two metrics files' changes as a Markdown table, with the drops the check fails on; and
the workflow that a fork runs calls .ci/run and posts that table."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import yaml

from tests.helpers import REPO

DATA = REPO / "tests" / "data" / "metrics"


def test_two_metrics_files_give_the_table_and_the_drops() -> None:
    run = [sys.executable, str(REPO / ".ci/metrics_table.py"), "--base", "main", "--old", *sorted(DATA.glob("base/*"))]
    run += ["--new", *sorted(DATA.glob("change/*"))]
    text = subprocess.run([str(part) for part in run], capture_output=True, text=True, check=True).stdout
    assert text.startswith("### Demo metrics: this change against main\n")
    assert "| `dice.workshop.fewshot` | 2 | 89.00 | 87.75 | -1.25 |" in text, "a row: the mean over the tasks"
    assert "| acdc-lv | `dice.workshop.fewshot` | 88.00 | 82.00 | -6.00 |" in text, "an entry that moved"
    assert "| hc18 | `dice.workshop.fewshot` | 90.00 | 93.50 | +3.50 |" in text
    assert "3 rows unchanged." in text and "`dice.tight_box`" not in text.split("rows unchanged")[0]
    drops = text.split("**Drops past the limits of `.ci/check_metrics.py`:**")[1]
    assert "acdc-lv.json: dice.workshop.fewshot.mean 88.0 -> 82.0 (one task's entry)" in drops
    assert "unet" not in drops, "a from-scratch baseline's 1-point move is within its limits"
    same = [sys.executable, str(REPO / ".ci/metrics_table.py"), "--old", *sorted(DATA.glob("base/*"))]
    same += ["--new", *sorted(DATA.glob("base/*"))]
    text = subprocess.run([str(part) for part in same], capture_output=True, text=True, check=True).stdout
    assert "All 5 rows unchanged." in text and text.rstrip().endswith("none.")


def test_the_workflow_runs_ci_and_comments_the_table() -> None:
    workflow = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    steps = workflow["jobs"]["ci"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert ".ci/run" in commands and "dvc metrics diff --all --json" in commands
    assert ".ci/metrics_table.py metrics-diff.json" in commands and "gh pr comment" in commands
    assert ".ci/check_metrics.py metrics-diff.json" in commands, "a drop against the base fails the check"
    assert "zizmor --offline .github/workflows/" in (REPO / ".ci/run").read_text(), "CI lints the workflow"


def test_a_changed_param_or_image_under_committed_demo_metrics_is_named() -> None:
    spec = importlib.util.spec_from_file_location("check_demo_lock", REPO / ".ci/check_demo_lock.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    status = {
        "demo/dvc.yaml:prepare@hc18": [
            {"changed deps": {"demo/data/raw/hc18": "modified", "demo/params.yaml": {"prepare.hc18": "modified"}}},
            {"changed outs": {"demo/data/prepared/hc18.zarr": "not in cache"}},
        ],
        "demo/dvc.yaml:fingerprint": [{"changed deps": {"autoprompt": "modified", "stages": "modified"}}],
        "demo/dvc.yaml:train@hc18": [
            {"changed deps": {"demo/fingerprints/stages.train.json": "modified", "demo/embeddings/x.zarr": "deleted"}},
        ],
        "demo/cardiac/dvc.yaml:report": [{"changed deps": {"demo/cardiac/fingerprints/stages.report.json": "deleted"}}],
        "demo/dvc.yaml:report": [{"changed deps": {"autoprompt/training/loop.py": "modified"}}],
        "demo/dvc.yaml:prepare@camus": [
            {"changed deps": {"autoprompt/reference/splits": "modified", "demo/data/raw/camus": "deleted"}},
        ],
    }
    outputs = {"demo/data/prepared/hc18.zarr", "demo/embeddings/x.zarr", "demo/models/hc18", "demo/data/raw/camus"}
    status["demo/dvc.yaml:encode@hc18"] = [{"changed deps": {"demo/data/prepared/hc18.zarr": "modified"}}]
    assert check.stale_inputs(status, outputs) == [
        "demo/dvc.yaml:prepare@hc18: demo/data/raw/hc18 modified",
        "demo/dvc.yaml:prepare@hc18: demo/params.yaml: prepare.hc18 modified",
        "demo/dvc.yaml:prepare@camus: autoprompt/reference/splits modified",
    ], (
        "code, its fingerprints, and outputs missing or left from an older run, are not stale; a replaced image and a "
        "changed param are"
    )


@pytest.mark.parametrize("pipeline", ["demo/dvc.yaml", "demo/cardiac/dvc.yaml"])
def test_the_committed_demo_metrics_come_from_the_committed_params_and_data(pipeline: str) -> None:
    spec = importlib.util.spec_from_file_location("check_demo_lock", REPO / ".ci/check_demo_lock.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert pipeline in check.PIPELINES, "check_demo_lock.py checks every demo by default"
    folder = pipeline.rsplit("/", 1)[0]
    assert check.stale_inputs(check.demo_status(REPO, pipeline), check.demo_outputs(REPO, pipeline)) == [], (
        f"{folder}/metrics were computed from other params or data: rerun `dvc repro {pipeline}` and commit "
        f"{folder}/metrics and {folder}/dvc.lock"
    )


def test_the_comment_compares_with_this_cpu_kinds_reference(tmp_path) -> None:
    """On a runner whose CPU kind has a reference, the table's base side is that kind's metrics, not the committed."""
    spec = importlib.util.spec_from_file_location("check_metrics", REPO / ".ci/check_metrics.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    spec = importlib.util.spec_from_file_location("metrics_table", REPO / ".ci/metrics_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    task, row = "demo/metrics/hc18.json", "dice.workshop.fewshot.mean"
    diff = {task: {row: {"old": 90.0, "new": 80.0}}}
    folder = tmp_path / check.cpu_kind() / "demo" / "metrics"
    folder.mkdir(parents=True)
    (folder / "hc18.json").write_text('{"dice": {"workshop": {"fewshot": {"mean": 80.0}}}}')
    (tmp_path / check.cpu_kind() / "paired.json").write_text(f'{{"committed": {{"{task}": {{"{row}": 90.0}}}}}}')
    assert "hc18.json: dice.workshop.fewshot.mean 90.0 -> 80.0" in table.table(diff), "against the committed"
    compared = table.table(diff, references=tmp_path)
    assert "All 1 rows unchanged." in compared and compared.rstrip().endswith("none.")
    assert f"Compared with the metrics {check.cpu_kind()} CPUs compute" in compared
