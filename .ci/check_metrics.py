"""Fail on a drop of Dice or NSD in `dvc metrics diff --all --json HEAD`: of a table row, or of one task's entry.

The demo's per-task entries rest on 3-10 test images and one or two runs, so a change in the last bits of the
floats (another CPU, another library build) moves one of them by up to 3 Dice points and 6 NSD points (measured:
README, determinism). A real regression moves a whole row, or one task by more. So the check fails when:

- a Dice or NSD row (``dice.<recipe>.<regime>.mean``), averaged over the five tasks, dropped by more than
  ``--max-drop`` Dice points (the spread measured: 0.67) or ``--max-drop-nsd`` NSD points (0.85);
- one task's Dice (``dice``, or ``dice_3d`` of the ACDC patients) dropped by more than ``--max-drop-entry``
  (the spread measured: 2.94);
- a checked mean disappeared.

The baselines trained from scratch in a few steps (UNet, TransUNet, AutoSAM: ``FROM_SCRATCH``) move far more under the
same change (measured: ``bench/results/spread_baselines.json``: a row's average by up to 1.89 Dice and 5.11 NSD
points, one task's Dice entry by up to 7.47; between an Intel and an AMD CPU,
``bench/results/spread_amd_vs_intel.json``: a Dice row's average by up to 6.62, one entry by up to 29.5), so their
rows have limits of their own: ``--max-drop-scratch`` for a Dice or NSD row's average, ``--max-drop-scratch-entry``
for one task's Dice.

Each CPU kind computes its own last bits, and a few-shot run amplifies them past these limits (between an Intel and
an AMD CPU: ``bench/results/spread_amd_vs_intel_cardiac.json``). So ``--references .ci/reference`` compares against
the metrics this CPU kind computes: ``.ci/reference/<vendor>/``, written by ``.ci/calibrate/reference.py``. It uses
them only while they were made for the committed metrics the diff starts from; otherwise, and for a kind with no
reference, it compares against the committed metrics and says so.

HD95 (millimetres) is reported, not checked. ``--under`` keeps one pipeline's metrics files (``demo/metrics/``, the
first demo; ``demo/cardiac/metrics/``, the cardiac one), so that a row is averaged over that demo's tasks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import NamedTuple

from dvc.utils.flatten import flatten

log = logging.getLogger("check_metrics")

CHECKED = ("dice", "dice_3d", "nsd")  # percentages where higher is better: a disappeared one fails
ROWS = ("dice", "nsd")  # averaged over the tasks
ENTRIES = ("dice", "dice_3d")  # checked task by task
FROM_SCRATCH = ("unet", "transunet", "autosam")  # baselines whose few training steps amplify the last bits
PAIRED = "paired.json"  # in a reference folder: the machine, and the committed means its metrics were made for


def cpu_kind() -> str:
    """This machine's CPU vendor as ``/proc/cpuinfo`` names it (``GenuineIntel``, ``AuthenticAMD``)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    vendors = [line.split(":", 1)[1].strip() for line in lines if line.startswith("vendor_id")]
    return vendors[0] if vendors else "unknown"


def is_checked(name: str) -> bool:
    """A mean of a percentage CI checks: ``dice.<recipe>.<regime>.mean``, ``dice_3d...``, ``nsd...``."""
    return name.split(".")[0] in CHECKED and name.endswith(".mean")


def checked_means(diff: dict) -> dict[str, dict[str, tuple[float | None, float | None]]]:
    """``row -> task file -> (old, new)`` for every checked ``.mean`` in the diff."""
    rows: dict[str, dict[str, tuple[float | None, float | None]]] = defaultdict(dict)
    for path, metrics in diff.items():
        for name, change in metrics.items():
            if is_checked(name):
                rows[name][path] = (change.get("old"), change.get("new"))
    return rows


def under(diff: dict, folder: str | None) -> dict:
    """The diff's metrics files under ``folder`` (a path from the repository root); all of them for None."""
    if folder is None:
        return diff
    prefix = folder.rstrip("/") + "/"
    return {path: metrics for path, metrics in diff.items() if path.startswith(prefix)}


def committed_means(diff: dict) -> dict[str, dict[str, object]]:
    """``task file -> checked mean -> committed value``: the diff's old side, which a reference is paired with."""
    return {
        path: {name: change.get("old") for name, change in sorted(metrics.items()) if is_checked(name)}
        for path, metrics in sorted(diff.items())
    }


class Against(NamedTuple):
    """What a diff is checked against: the diff to check, in words, and whether a kind's reference went unused."""

    diff: dict
    what: str
    stale: bool = False


def against_reference(diff: dict, references: Path, kind: str) -> Against:
    """``references/<kind>/``'s metrics as the diff's old side, where they were made for every metrics file of the
    diff and for the committed values the diff starts from; the diff itself (the committed metrics) otherwise."""
    folder = references / kind
    record = folder / PAIRED
    if not record.is_file():
        return Against(diff, f"the committed metrics (no reference for {kind} CPUs: {folder} has no {PAIRED})")
    paired = json.loads(record.read_text())["committed"]
    now = committed_means(diff)
    stale = [path for path in sorted(diff) if paired.get(path) != now[path]]
    if stale:
        why = "has no" if stale[0] not in paired else "was made for other committed values of"
        return Against(
            diff,
            f"the committed metrics: {folder} {why} {stale[0]}; make it again on a machine whose CPU vendor is {kind} "
            "(`python .ci/calibrate/reference.py`, docs/determinism.md)",
            stale=True,
        )
    checked = {}
    for path, metrics in diff.items():
        old = flatten(json.loads((folder / path).read_text()))
        names = set(old) | set(metrics)
        checked[path] = {name: {"old": old.get(name), "new": metrics.get(name, {}).get("new")} for name in names}
    return Against(checked, f"the metrics {kind} CPUs compute for the committed ones ({folder})")


def drops(
    diff: dict,
    max_drop: float,
    max_drop_nsd: float,
    max_drop_entry: float,
    max_drop_scratch: float = 8.0,
    max_drop_scratch_entry: float = 30.0,
) -> list[str]:
    """Every row whose average over the tasks fell by more than its threshold, every Dice entry that fell by more
    than its own (``max_drop_entry``; ``max_drop_scratch_entry`` for the ``FROM_SCRATCH`` baselines), and every
    checked mean that disappeared."""
    failures = []
    for row, tasks in sorted(checked_means(diff).items()):
        family = row.split(".")[0]
        scratch = row.split(".")[1] in FROM_SCRATCH
        entry_limit = max_drop_scratch_entry if scratch else max_drop_entry
        for path, (old, new) in tasks.items():
            if old is not None and (new is None or (family in ENTRIES and old - new > entry_limit)):
                failures.append(f"{path}: {row} {old} -> {new} (one task's entry)")
        both = [(old, new) for old, new in tasks.values() if old is not None and new is not None]
        if family not in ROWS or not both:
            continue
        old_mean, new_mean = mean(o for o, _ in both), mean(n for _, n in both)
        limit = max_drop_scratch if scratch else max_drop_nsd if family == "nsd" else max_drop
        if old_mean - new_mean > limit:
            over = f"{len(both)} task" if len(both) == 1 else f"{len(both)} tasks"
            failures.append(f"{row}: {old_mean:.2f} -> {new_mean:.2f} (average of {over}; limit {limit})")
    return failures


def read_diff(path: Path) -> dict:
    """``dvc metrics diff --all --json``'s output (an empty file: no metrics), or exit with one line saying why not."""
    fix = "give the output of `dvc metrics diff --all --json REV`"
    try:
        diff = json.loads(path.read_text() or "{}")
    except OSError as error:
        sys.exit(f"{path}: cannot be read ({error.strerror}); {fix}")
    except json.JSONDecodeError:
        sys.exit(f"{path}: not JSON; {fix}")
    if not isinstance(diff, dict) or not all(isinstance(metrics, dict) for metrics in diff.values()):
        sys.exit(f"{path}: not a metrics diff (metrics file -> metric -> old and new); {fix}")
    return diff


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("diff", type=Path)
    args.add_argument("--max-drop", type=float, default=1.0, help="Dice points, a row averaged over the tasks")
    args.add_argument("--max-drop-nsd", type=float, default=2.0, help="NSD points, a row averaged over the tasks")
    args.add_argument("--max-drop-entry", type=float, default=4.0, help="Dice points, one task's entry")
    args.add_argument("--max-drop-scratch", type=float, default=8.0, help="a FROM_SCRATCH baseline's row")
    args.add_argument("--max-drop-scratch-entry", type=float, default=30.0, help="a FROM_SCRATCH baseline's entry")
    args.add_argument("--under", help="check only the metrics files under this folder (e.g. demo/cardiac/metrics)")
    args.add_argument(
        "--references",
        type=Path,
        help="folder of per-CPU reference metrics, <vendor>/paired.json in it (e.g. .ci/reference); needs --under",
    )
    parser, args = args, args.parse_args()
    if args.references is not None and args.under is None:
        parser.error("--references needs --under: a reference holds the demos' metrics, checked one demo at a time")
    if args.references is not None and not args.references.is_dir():
        sys.exit(f"--references {args.references}: no such folder; give the folder holding <vendor>/{PAIRED}")
    diff = under(read_diff(args.diff), args.under)
    if args.under and not diff:
        sys.exit(f"{args.diff}: no metrics under {args.under}")
    if args.references is not None:
        diff, against, stale = against_reference(diff, args.references, cpu_kind())
        (log.warning if stale else log.info)("comparing against %s", against)
    for row, tasks in sorted(checked_means(diff).items()):
        for path, (old, new) in sorted(tasks.items()):
            log.info("%s %s: %s -> %s", path, row, old, new)
    failures = drops(
        diff, args.max_drop, args.max_drop_nsd, args.max_drop_entry, args.max_drop_scratch, args.max_drop_scratch_entry
    )
    for failure in failures:
        log.error("dropped: %s", failure)
    if failures:
        sys.exit(1)
    log.info(
        "no row dropped by more than %.1f Dice or %.1f NSD points, no Dice entry by more than %.1f (%d means compared)",
        args.max_drop,
        args.max_drop_nsd,
        args.max_drop_entry,
        sum(len(tasks) for tasks in checked_means(diff).values()),
    )


if __name__ == "__main__":
    main()
