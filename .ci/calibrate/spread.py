"""How far the demo's metrics move when the last bits of the floats change: the spread CI's thresholds must clear.

Runs the demo once more in another checkout of the same commit under other CPU code paths (PyTorch's AVX-512
kernels, MKL's automatic path, NumPy's AVX-512 kernels: what an unpinned machine would compute), then compares its
metrics with the committed ones, per task and as each row's average over the tasks (``.ci/check_metrics.py``):

    git worktree add /tmp/spread HEAD && cd /tmp/spread && ATEN_CPU_CAPABILITY=avx512 MKL_CBWR=AUTO \\
        ONEDNN_MAX_CPU_ISA=ALL NPY_DISABLE_CPU_FEATURES= dvc repro demo/dvc.yaml && cd - && \\
        python bench/spread.py /tmp/spread/demo/metrics

Writes ``bench/results/spread.json``. The same comparison measures what any other change of the last bits moves,
given as ``--perturbation`` and written under ``--name``; the move of the demo's encoder from torch to OpenVINO
(the torch-era metrics are those of commit 0abe3ca):

    git worktree add /tmp/torch-era 0abe3ca && python bench/spread.py /tmp/torch-era/demo/metrics \
        --perturbation "encoder: torch -> OpenVINO float32" --name spread_runtime
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path
from statistics import mean

import common

log = logging.getLogger("bench.spread")

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", type=Path, help="demo/metrics of the run under the perturbed code paths")
    parser.add_argument("--perturbation", default=PERTURBATION, help="what differs between the two runs")
    parser.add_argument("--name", default="spread", help="result file: bench/results/<name>.json")
    args, machine = common.parse_and_start(parser)
    committed = means(common.REPO / "demo" / "metrics")
    result = {
        "what": "change of the demo's metrics (points; HD95 in mm) between the committed run and another",
        "perturbation": args.perturbation,
        "machine": machine,
        "spread": spread(committed, means(args.other)),
    }
    for family, numbers in result["spread"].items():
        log.info("%s: %s", family, {k: v for k, v in numbers.items() if k != "rows"})
    common.write_result(args.name, result)


if __name__ == "__main__":
    main()
