"""How far the demo's metrics move when the last bits of the floats change: the spread CI's thresholds must clear.

Runs the demo once more in another checkout of the same commit under other CPU code paths (PyTorch's AVX-512
kernels, MKL's automatic path, NumPy's AVX-512 kernels: what an unpinned machine would compute), then compares its
metrics with the committed ones, per task and as each row's average over the tasks (``.ci/check_metrics.py``):

    git worktree add /tmp/spread HEAD && cd /tmp/spread && ATEN_CPU_CAPABILITY=avx512 MKL_CBWR=AUTO \\
        ONEDNN_MAX_CPU_ISA=ALL NPY_DISABLE_CPU_FEATURES= dvc repro demo/dvc.yaml && cd - && \\
        python .ci/calibrate/spread.py /tmp/spread/demo/metrics

Writes ``bench/results/spread.json``. The same comparison measures what any other change of the last bits moves,
given as ``--perturbation`` and written under ``--name``; the move of the demo's encoder from torch to OpenVINO
(the torch-era metrics are those of commit 0abe3ca):

    git worktree add /tmp/torch-era 0abe3ca && python .ci/calibrate/spread.py /tmp/torch-era/demo/metrics \
        --perturbation "encoder: torch -> OpenVINO float32" --name spread_runtime
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from metrics_spread import PERTURBATION, means, spread

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the benchmarks' library: the machine record and the result file
from bench.lib import common  # noqa: E402

log = logging.getLogger("bench.spread")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", type=Path, help="demo/metrics of the run under the perturbed code paths")
    parser.add_argument("--perturbation", default=PERTURBATION, help="what differs between the two runs")
    parser.add_argument("--name", default="spread", help="result file: bench/results/<name>.json")
    args, machine = common.parse_and_start(parser)
    committed = means(REPO / "demo" / "metrics")
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
