"""The spread between two runs of the demo: each metric family's change, per task entry and per row averaged over the
tasks, as ``.ci/check_metrics.py`` groups them; what ``spread.py`` and ``spread_baselines.py`` compare."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import mean

FAMILIES = ("dice", "dice_3d", "nsd", "hd95_mm")
PERTURBATION = "ATEN_CPU_CAPABILITY=avx512 MKL_CBWR=AUTO ONEDNN_MAX_CPU_ISA=ALL NPY_DISABLE_CPU_FEATURES="


def means(folder: Path) -> dict[str, dict[str, float]]:
    """``family.recipe.regime -> task -> mean`` from a metrics folder's ``<task>.json``."""
    rows: dict[str, dict[str, float]] = defaultdict(dict)
    for path in sorted(folder.glob("*.json")):
        metrics = json.loads(path.read_text())
        for family in FAMILIES:
            for predictor, regimes in metrics.get(family, {}).items():
                flat = {"": regimes} if "mean" in regimes else {f".{k}": v for k, v in regimes.items()}
                for regime, summary in flat.items():
                    rows[f"{family}.{predictor}{regime}"][path.stem] = summary["mean"]
    return rows


def spread(committed: dict, other: dict) -> dict:
    """Per family: the largest and mean absolute change of an entry, and the largest of a row's average."""
    out = {}
    for family in FAMILIES:
        entries, averages, rows = [], [], {}
        for row, tasks in committed.items():
            if row.split(".")[0] != family:
                continue
            changes = {  # an undefined value (HD95 of an empty mask) on either side is left out
                task: round(other[row][task] - value, 2)
                for task, value in tasks.items()
                if value is not None and other.get(row, {}).get(task) is not None
            }
            if not changes:
                continue
            entries += changes.values()
            averages.append(mean(changes.values()))
            rows[row] = changes
        out[family] = {
            "entry_max_abs": round(max(map(abs, entries)), 2),
            "entry_mean_abs": round(mean(map(abs, entries)), 2),
            "entry_largest_drop": round(-min(entries), 2),
            "row_average_max_abs": round(max(map(abs, averages)), 2),
            "row_average_largest_drop": round(-min(averages), 2),
            "rows": rows,
        }
    return out
