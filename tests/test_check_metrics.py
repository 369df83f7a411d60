"""CI's metric check: which changes in `dvc metrics diff --all --json HEAD` fail a build."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "check_metrics.py"
spec = importlib.util.spec_from_file_location("check_metrics", SCRIPT)
check_metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_metrics)

LIMITS = {"max_drop": 1.0, "max_drop_nsd": 2.0, "max_drop_entry": 4.0}


def diff_of(changes: dict[str, dict[str, tuple]]) -> dict:
    """``{task: {name: (old, new)}}`` in the layout of `dvc metrics diff --json`."""
    return {
        f"demo/metrics/{task}.json": {name: {"old": old, "new": new} for name, (old, new) in metrics.items()}
        for task, metrics in changes.items()
    }


def failed_rows(diff: dict) -> list[str]:
    return [failure.split(" ")[0] for failure in check_metrics.drops(diff, **LIMITS)]


def test_noise_in_one_task_passes_and_a_drop_of_the_row_fails():
    noise = {  # one task moves by 1.4, the others barely: the row's average moves by 0.3
        "acdc-lv": {"dice.workshop.all.mean": (95.1, 93.7)},
        "acdc-rv": {"dice.workshop.all.mean": (60.0, 60.2)},
        "camus-la": {"dice.workshop.all.mean": (90.0, 89.9)},
        "camus-lv": {"dice.workshop.all.mean": (96.5, 96.5)},
        "hc18": {"dice.workshop.all.mean": (93.0, 93.1)},
    }
    assert failed_rows(diff_of(noise)) == []
    regression = {task: {name: (old, old - 1.2) for name, (old, _) in m.items()} for task, m in noise.items()}
    assert failed_rows(diff_of(regression)) == ["dice.workshop.all.mean:"]


def test_nsd_rows_have_their_own_limit_and_hd95_and_spreads_are_not_checked():
    diff = diff_of(
        {
            "hc18": {
                "nsd.tight_box.mean": (80.0, 78.5),  # 1.5 NSD points: under the NSD limit
                "nsd.followup.fewshot.mean": (80.0, 77.5),  # 2.5: over it
                "hd95_mm.tight_box.mean": (2.0, 9.0),  # millimetres: reported, not checked
                "dice.workshop.fewshot.std": (1.0, 5.0),
            }
        }
    )
    assert failed_rows(diff) == ["nsd.followup.fewshot.mean:"]


def test_a_large_drop_of_one_entry_or_a_missing_entry_fails():
    diff = diff_of(
        {
            "acdc-rv": {
                "dice.augmented.fewshot.mean": (70.0, 65.0),  # 5 points: over the entry limit
                "dice_3d.augmented.fewshot.mean": (70.0, 67.0),  # 3 points: noise; dice_3d has no row check
                "nsd.augmented.fewshot.mean": (70.0, 60.0),  # NSD entries are checked only through their row
                "dice_3d.followup.all.mean": (70.0, None),
            },
            "acdc-lv": {
                "dice.augmented.fewshot.mean": (90.0, 96.0),  # the rows' averages rose
                "nsd.augmented.fewshot.mean": (70.0, 82.0),
            },
            "hc18": {"dice.workshop.all.mean": (None, 50.0)},  # a new metric passes
        }
    )
    failures = check_metrics.drops(diff, **LIMITS)
    assert len(failures) == 2
    assert failures[0].startswith("demo/metrics/acdc-rv.json: dice.augmented.fewshot.mean 70.0 -> 65.0")
    assert failures[1].startswith("demo/metrics/acdc-rv.json: dice_3d.followup.all.mean 70.0 -> None")


def test_baselines_trained_from_scratch_have_wider_limits_than_the_head():
    """A UNet entry may move by what last bits move it (7.5 measured), not by more; the head keeps its limits."""
    diff = diff_of(
        {
            "acdc-rv": {"dice.unet.fewshot.mean": (80.0, 72.0), "dice.head_masks.fewshot.mean": (80.0, 75.0)},
            "camus-la": {"dice.transunet.fewshot.mean": (80.0, 68.0)},  # 12 points: over the baselines' entry limit
            "hc18": {"dice.unet.fewshot.mean": (80.0, 80.0)},  # the UNet row's average fell by 4: under its limit
        }
    )
    failures = check_metrics.drops(diff, **LIMITS)
    assert any("head_masks" in f for f in failures) and any("transunet" in f for f in failures)
    assert not any("unet.fewshot" in f and "transunet" not in f for f in failures)


def test_each_demo_is_checked_over_its_own_tasks():
    """CI checks the first demo (HC18) and the cardiac one apart: a row is averaged over one demo's tasks."""
    diff = {
        "demo/metrics/hc18.json": {"dice.workshop.fewshot.mean": {"old": 80.0, "new": 78.0}},
        "demo/cardiac/metrics/camus-lv.json": {"dice.workshop.fewshot.mean": {"old": 90.0, "new": 92.0}},
    }
    assert failed_rows(diff) == [], "averaged over both demos the 2-point drop hides behind the 2-point rise"
    hc18 = check_metrics.under(diff, "demo/metrics")
    assert list(hc18) == ["demo/metrics/hc18.json"]
    assert failed_rows(hc18) == ["dice.workshop.fewshot.mean:"]
    assert list(check_metrics.under(diff, "demo/cardiac/metrics/")) == ["demo/cardiac/metrics/camus-lv.json"]


def test_a_cpu_kinds_own_reference_is_compared_only_while_it_matches_the_committed_metrics(tmp_path: Path) -> None:
    task, row = "demo/cardiac/metrics/acdc-rv.json", "dice_3d.augmented.fewshot_presence.mean"
    committed, other_cpu = 70.87, 60.33  # the head's ACDC RV entry: an Intel CPU's committed value, an AMD CPU's
    diff = {task: {row: {"old": committed, "new": other_cpu}}}
    assert check_metrics.drops(diff, **LIMITS), "against the committed metrics, the other CPU's bits fail the check"
    folder = tmp_path / "AuthenticAMD"
    (folder / task).parent.mkdir(parents=True)
    (folder / task).write_text(json.dumps({"dice_3d": {"augmented": {"fewshot_presence": {"mean": other_cpu}}}}))
    (folder / "paired.json").write_text(json.dumps({"committed": {task: {row: committed}}}))

    checked, against, stale = check_metrics.against_reference(diff, tmp_path, "AuthenticAMD")
    assert check_metrics.drops(checked, **LIMITS) == [] and str(folder) in against and not stale
    lower = {task: {row: {"old": committed, "new": other_cpu - 5}}}
    assert check_metrics.drops(check_metrics.against_reference(lower, tmp_path, "AuthenticAMD").diff, **LIMITS), (
        "a real drop still fails against the reference"
    )

    rerun = {task: {row: {"old": 75.0, "new": other_cpu}}}
    checked, against, stale = check_metrics.against_reference(rerun, tmp_path, "AuthenticAMD")
    assert checked == rerun and stale and "python .ci/calibrate/reference.py" in against, (
        "a reference made for other committed metrics is not used, and the message says how to make it again"
    )
    added = {**diff, "demo/cardiac/metrics/new-task.json": {row: {"old": 80.0, "new": 80.0}}}
    checked, against, stale = check_metrics.against_reference(added, tmp_path, "AuthenticAMD")
    assert checked == added and stale and "has no demo/cardiac/metrics/new-task.json" in against, (
        "a task the reference lacks makes the whole reference stale, not half-used"
    )
    checked, against, stale = check_metrics.against_reference(diff, tmp_path, "GenuineIntel")
    assert checked == diff and not stale and "no reference for GenuineIntel CPUs" in against
    assert check_metrics.cpu_kind(), "the vendor is read on any machine ('unknown' without /proc/cpuinfo)"


def test_a_bad_diff_or_references_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    def run(*argv: object) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, SCRIPT, *map(str, argv)], capture_output=True, text=True)

    (tmp_path / "bad.json").write_text("dvc failed")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "diff.json").write_text("{}")
    for name, says in [("bad.json", "not JSON"), ("list.json", "not a metrics diff"), ("none.json", "cannot be read")]:
        result = run(tmp_path / name)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith(f"{tmp_path / name}: {says}"), (
            f"{name}: one line, no traceback"
        )
        assert "dvc metrics diff --all --json" in lines[0], "the fix is named"
    result = run(tmp_path / "diff.json", "--references", tmp_path)
    assert result.returncode != 0 and "--references needs --under" in result.stderr
    result = run(tmp_path / "diff.json", "--references", tmp_path / "nope", "--under", "demo/metrics")
    assert result.returncode != 0 and result.stderr.strip() == (
        f"--references {tmp_path / 'nope'}: no such folder; give the folder holding <vendor>/paired.json"
    ), "a mistyped folder is not taken for a kind without a reference"
