"""One module per DVC stage: parse paths, read the params section, call the library.

Importing this package pins the CPU code paths of NumPy, PyTorch's kernels and MKL to AVX2 before either library
loads, unless the environment already sets them. With the thread count fixed in params.yaml and oneDNN off
(``autoprompt.stage.pin_cpu_numerics``), a CPU run then computes the same bits on any x86 machine with AVX2,
whatever wider instructions it also has (README: determinism).
"""

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
for _name, _value in CPU_CODE_PATHS.items():
    os.environ.setdefault(_name, _value)
