"""Where torch computes: the device a setting names, and CPU numerics that every x86 machine reproduces."""

from __future__ import annotations

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
    the same settings give the same numbers on any x86 machine with the same thread count.

    oneDNN picks its convolution kernels and blocking by the CPU's cache sizes, so its sums differ between
    machines; without it convolutions run as im2col + MKL GEMM, which ``MKL_CBWR`` (``autoprompt.cpu_paths``) makes
    reproducible. The CPU cost is measured by ``bench/onednn.py``; GPU runs are unaffected."""
    if threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.mkldnn.enabled = False
