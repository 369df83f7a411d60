"""The CPU code paths every CPU run pins, so that machines of one CPU kind compute the same bits, whatever
wider instructions each has. An Intel and an AMD CPU still differ in the last bits (docs/determinism.md).

``pin_code_paths`` sets NumPy's, PyTorch's kernels', MKL's and oneDNN's (OpenVINO's CPU kernels honour it too) to
AVX2, whatever wider instructions the CPU also has, unless the environment already sets them. The libraries read
these variables once, when they load: call it before the first ``import torch`` (``stages/__init__.py``, the
``autoprompt`` command). With the thread count fixed and oneDNN off in torch (``autoprompt.device.pin_cpu_numerics``)
a CPU run is then reproducible across machines (docs/determinism.md). This module imports nothing heavy.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version


def _numpy_avx512_features() -> str:
    """The names of NumPy's AVX-512 dispatch targets (exp, arctan2, ... have AVX-512 kernels with other roundings)."""
    try:
        major, minor = (int(part) for part in version("numpy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return ""
    if (major, minor) >= (2, 4):
        return "X86_V4 AVX512_ICL AVX512_SPR"
    return "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"


CPU_CODE_PATHS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": _numpy_avx512_features(),
}


def pin_code_paths() -> None:
    """Set every variable of ``CPU_CODE_PATHS`` that the environment does not set already."""
    for name, value in CPU_CODE_PATHS.items():
        os.environ.setdefault(name, value)
