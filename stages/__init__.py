"""One module per DVC stage: parse paths, read the params file once (``autoprompt.settings``), call the library.

Importing this package pins the CPU code paths of NumPy, PyTorch's kernels, MKL and oneDNN to AVX2 before either
library loads, unless the environment already sets them (``autoprompt.cpu_paths``). With the thread count fixed in
params.yaml and oneDNN off (``autoprompt.device.pin_cpu_numerics``), a CPU run then computes the same bits on
any machine of one CPU kind, whatever wider instructions it also has (docs/determinism.md: an Intel and an AMD CPU
differ).
"""

import argparse
from pathlib import Path

from autoprompt.cpu_paths import pin_code_paths

pin_code_paths()


def parser(description: str) -> argparse.ArgumentParser:
    """A stage's arguments: ``--params`` and, added by the stage, its paths."""
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (params.yaml)")
    return arguments


def task_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of a stage that works on one task: its name, prepared data and embeddings."""
    arguments = parser(description)
    arguments.add_argument("--task", required=True)
    arguments.add_argument("--prepared", type=Path, required=True, help="prepared Zarr store of the task's dataset")
    arguments.add_argument("--index", type=Path, required=True, help="prepared CSV index")
    arguments.add_argument("--embeddings", type=Path, required=True, help="embedding Zarr store")
    return arguments
