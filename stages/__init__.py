"""One module per DVC stage: parse paths, read the params section, call the library.

Importing this package pins the CPU code paths of NumPy, PyTorch's kernels, MKL and oneDNN to AVX2 before either
library loads, unless the environment already sets them (``autoprompt.cpu_paths``). With the thread count fixed in
params.yaml and oneDNN off (``autoprompt.stage.pin_cpu_numerics``), a CPU run then computes the same bits on any x86
machine with AVX2, whatever wider instructions it also has (README: determinism).
"""

from autoprompt.cpu_paths import pin_code_paths

pin_code_paths()
