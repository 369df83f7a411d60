"""Fail when a Dice or NSD mean in `dvc metrics diff --json` dropped by more than --max-drop points against HEAD."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("check_metrics")


CHECKED = ("dice", "dice_3d", "nsd")  # percentages where higher is better; HD95 (mm) is reported, not checked


def drops(diff: dict, max_drop: float) -> list[str]:
    """Every checked mean whose value fell by more than ``max_drop`` points, or that disappeared."""
    failures = []
    for path, metrics in diff.items():
        for name, change in metrics.items():
            if name.split(".")[0] not in CHECKED or not name.endswith(".mean"):
                continue
            old, new = change.get("old"), change.get("new")
            if old is not None and (new is None or old - new > max_drop):
                failures.append(f"{path}: {name} {old} -> {new}")
    return failures


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("diff", type=Path)
    args.add_argument("--max-drop", type=float, default=1.0)
    args = args.parse_args()
    diff = json.loads(args.diff.read_text() or "{}")
    for path, metrics in diff.items():
        for name, change in metrics.items():
            log.info("%s %s: %s -> %s", path, name, change.get("old"), change.get("new"))
    failures = drops(diff, args.max_drop)
    for failure in failures:
        log.error("dropped by more than %.1f points: %s", args.max_drop, failure)
    if failures:
        sys.exit(1)
    log.info(
        "no Dice or NSD mean dropped by more than %.1f points (%d metrics compared)",
        args.max_drop,
        sum(len(m) for m in diff.values()),
    )


if __name__ == "__main__":
    main()
