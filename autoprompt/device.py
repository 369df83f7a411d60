"""Where torch computes: the device a setting names, and CPU numerics that every machine of one CPU kind reproduces."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import torch

from autoprompt.errors import InputError


def select_device(setting: str = "auto", key: str = "device") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; or a device torch knows (``cpu``, ``cuda``, ``cuda:1``).
    A GPU that is not there is refused in one line naming ``key`` (``--device``, ``params.yaml: train.device``)."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise InputError(f"{key} is {setting!r}; give auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"{key} is {setting}, but torch sees no CUDA GPU on this machine; use auto or cpu")
        if device.index is not None and device.index >= count:
            raise InputError(f"{key} is {setting}, but this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{key} is mps, but Apple's Metal backend is not available here; use auto or cpu")
    return device


def pin_cpu_numerics(threads: int | None) -> None:
    """Fix torch's CPU threads (None: torch's default), ask for deterministic algorithms and turn oneDNN off, so that
    the same settings give the same numbers on any machine of one CPU kind with the same thread count
    (an Intel and an AMD CPU still differ in the last bits: docs/determinism.md).

    oneDNN picks its convolution kernels and blocking by the CPU's cache sizes, so its sums differ between
    machines; without it convolutions run as im2col + MKL GEMM, which ``MKL_CBWR`` (``autoprompt.cpu_paths``) makes
    reproducible. The CPU cost is measured by ``bench/timings/onednn.py``; GPU runs are unaffected."""
    if threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.mkldnn.enabled = False


# ------------------------------------------------------------------------------------------------------- numerics
EXACT, FAST = "exact", "fast"


def cpu_bfloat16() -> bool:
    """Whether torch can compute bfloat16 on this CPU at speed: oneDNN on, and AVX-512 BF16 or AMX (oneDNN's own
    check; an ``ONEDNN_MAX_CPU_ISA`` cap below them answers no)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpp_compiler() -> str | None:
    """The C++ compiler ``torch.compile`` builds CPU kernels with (``$CXX``, else ``g++``/``clang++``), or None."""
    for name in (os.environ.get("CXX"), "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


@dataclass(frozen=True)
class Numerics:
    """How the head's training step and ``predict`` compute on a CPU, resolved once per process by ``numerics``.

    ``exact``: float32, the CPU code paths pinned to AVX2 and oneDNN off (``autoprompt.cpu_paths``,
    ``pin_cpu_numerics``): the same bits on any machine of one CPU kind with the same threads. The pipeline's
    stages run so.
    ``fast``: the CPU's own instructions and oneDNN; ``precision`` bfloat16 autocast where the CPU has AVX-512 BF16 or
    AMX (float32 weights, losses and optimiser), and ``compile`` the decoder's forward and backward through
    ``torch.compile`` where a C++ compiler is found. Its numbers depend on the CPU, and are recorded with what they
    made (``record``). On a GPU both are the device's float32 path. ``bench/timings/train_step.py`` times each lever.
    """

    mode: str = EXACT
    precision: str = "float32"
    compile: bool = False
    isa: str = ""

    def autocast(self, device: torch.device):
        """The context the decoder's forward runs in: bfloat16 autocast on the CPU when ``precision`` says so."""
        return torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=device.type == "cpu" and self.precision == "bfloat16"
        )

    def record(self) -> dict:
        return {"mode": self.mode, "precision": self.precision, "compile": self.compile, "isa": self.isa}

    def describe(self, training: bool = False) -> str:
        """In words, for the log; ``training`` adds whether the training step is compiled."""
        if self.mode == EXACT:
            return "exact CPU numerics (float32, AVX2, oneDNN off: the same on any machine of this CPU kind)"
        step = ""
        if training:
            step = ", the step compiled" if self.compile else ", the step not compiled (no C++ compiler found)"
        return f"fast CPU numerics ({self.precision} on {self.isa}{step}: this CPU's numbers)"


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve large blocks from its heap and keep what is freed, rather than map fresh pages for
    every tensor and return them: a decoder call allocates and frees megabytes hundreds of times, each fresh page a
    fault (``bench/results/predict.json``). The process's memory then stays at its peak. False where there is no glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 25) and mallopt(m_trim_threshold, 1 << 30))


EXACT_NUMERICS = Numerics()  # the default of every function that takes numerics: the pipeline's path


def numerics(mode: str, device: torch.device, threads: int | None = None) -> Numerics:
    """Resolve ``mode`` (``exact`` or ``fast``) on ``device`` and set the process up for it: ``pin_cpu_numerics`` for
    exact; for fast, the thread count, oneDNN on, no pre-filled tensors and ``keep_freed_memory`` (settings that change
    no number). A GPU gets the exact path (its own float32 numerics, unpinned). The CPU code paths themselves are
    pinned, or not, before torch loads (``cli.entry``)."""
    if mode not in (EXACT, FAST):
        raise InputError(f"CPU numerics {mode!r}; give exact or fast")
    if device.type != "cpu":
        return EXACT_NUMERICS
    if mode == EXACT:
        pin_cpu_numerics(threads)
        torch.utils.deterministic.fill_uninitialized_memory = True  # torch's default, as the stages run
        return Numerics(isa=torch.backends.cpu.get_cpu_capability())
    if threads:
        torch.set_num_threads(int(threads))
    torch.backends.mkldnn.enabled = True  # oneDNN: bfloat16 on AMX or AVX-512 BF16, and its float32 kernels
    torch.use_deterministic_algorithms(True, warn_only=True)
    # deterministic mode also fills every new tensor before use: hundreds of fills per decoder call, no other effect
    torch.utils.deterministic.fill_uninitialized_memory = False
    keep_freed_memory()
    bf16 = cpu_bfloat16()
    return Numerics(
        FAST,
        "bfloat16" if bf16 else "float32",
        cpp_compiler() is not None,
        torch.backends.cpu.get_cpu_capability() + (" + oneDNN bfloat16" if bf16 else ""),
    )
