"""One module per DVC stage: parse paths, read the params section, call the library.

Importing this package pins the CPU code paths of PyTorch's kernels, MKL and oneDNN to AVX2 before torch loads,
unless the environment already sets them: with the thread count fixed in params.yaml, a CPU run then computes
the same numbers on any x86 machine with AVX2, whatever wider instructions it also has (README: determinism).
"""

import os

CPU_CODE_PATHS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
for _name, _value in CPU_CODE_PATHS.items():
    os.environ.setdefault(_name, _value)
