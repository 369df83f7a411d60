"""The baselines' share of the demo's spread, without a whole demo run: the ``baseline`` and ``evaluate`` stages of
every demo task again, under the other CPU code paths of ``spread.py``, on the committed demo's prepared data,
embeddings and head runs; then the same comparison as ``spread.py`` (the head's rows move only by what
``evaluate``'s own arithmetic moves):

    python .ci/calibrate/spread_baselines.py [--out /tmp/spread-baselines] [--compare-only]

Writes ``bench/results/spread_baselines.json``. Needs the demo's outputs (``dvc repro demo/dvc.yaml`` first).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml
from metrics_spread import PERTURBATION, means, spread

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the benchmarks' library: the machine record and the result file
from bench.lib import common  # noqa: E402

log = logging.getLogger("bench.spread_baselines")

DEMO = REPO / "demo"


def perturbed_env() -> dict[str, str]:
    """This environment with ``PERTURBATION``'s variables set (``stages/__init__.py`` leaves them alone)."""
    pairs = dict(item.split("=", 1) for item in PERTURBATION.split())
    return {**os.environ, **pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/spread-baselines"), help="scratch folder")
    parser.add_argument("--compare-only", action="store_true", help="compare --out's metrics, run no stage")
    args, machine = common.parse_and_start(parser)
    params = yaml.safe_load((DEMO / "params.yaml").read_text())
    backbone, env = params["encode"]["backbone"], perturbed_env()
    for task, spec in params["tasks"].items() if not args.compare_only else ():
        dataset = spec["dataset"]
        data = ["--task", task, "--prepared", f"data/prepared/{dataset}.zarr", "--index",
                f"data/prepared/{dataset}.csv", "--embeddings", f"embeddings/{backbone}/{dataset}.zarr"]  # fmt: skip
        runs = args.out / "baselines" / task
        metrics = args.out / "metrics"
        log.info("%s: baseline and evaluate under %s", task, PERTURBATION)
        for stage in (
            ["stages.baseline", *data, "--out", str(runs)],
            ["stages.evaluate", *data, "--models", f"models/{task}", "--baselines", str(runs),
             "--metrics", str(metrics / f"{task}.json"), "--per-image", str(metrics / task / "per_image.csv"),
             "--figure", str(metrics / task / "examples.png")],
        ):  # fmt: skip
            subprocess.run([sys.executable, "-m", *stage], cwd=DEMO, env=env, check=True)
    result = {
        "what": "change of the demo's metrics (points; HD95 in mm) when the baseline and evaluate stages run again "
        "under other CPU code paths (the head runs, embeddings and prepared data are the committed demo's)",
        "perturbation": PERTURBATION,
        "command": "python .ci/calibrate/spread_baselines.py",
        "machine": machine,
        "spread": spread(means(DEMO / "metrics"), means(args.out / "metrics")),
    }
    for family, numbers in result["spread"].items():
        log.info("%s: %s", family, {k: v for k, v in numbers.items() if k != "rows"})
    common.write_result("spread_baselines", result)


if __name__ == "__main__":
    main()
