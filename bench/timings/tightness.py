"""The project's tightness prior (``losses.tightness_prior``, two sums along the box's axes) against a reference
that builds one full H x W mask per band, as the original authors' code does.

Reference (written here, from the definition in method-facts.md): for each box, its rows are cut into bands of
d lines (the last band takes the remainder) and each band becomes a float32 H x W mask of that band within the
box's columns; likewise its columns. As in the authors' data loader, each image's masks are zero-padded to
H//d + W//d bands (their collation), the padding is dropped before the loss, and the loss multiplies the masks
with the probabilities repeated once per band. Penalty: the extended log-barrier of (band width - sum p * mask),
summed per image, averaged over the batch. Unlike the authors' code, every line of a box is covered (theirs leaves
the last one out when (lines - 1) % d == 0), so both implementations compute the same number.

Timed cases, interleaved round by round: ``ours`` and ``reference_prebuilt`` (masks built beforehand, as the
authors' loader hands them to the loss), forward and forward+backward; ``reference`` (masks built in the call)
forward+backward, in the first ``--build-repeats`` rounds only (building the masks is slow). Peak memory: each
case in a fresh subprocess, the increase of peak RSS (VmHWM, reset through /proc/self/clear_refs after the inputs
exist) over one forward+backward; on a GPU, torch.cuda.max_memory_allocated.

    python -m bench.timings tightness
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import resource
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from autoprompt.model import losses
from bench.lib import common

log = logging.getLogger("bench.tightness")

MEMORY_METHOD = (
    "CPU: each case in a fresh subprocess (python -m bench.timings tightness --memory-worker CASE); the inputs are "
    "built (and, for reference_prebuilt, the padded masks of the whole batch), then the peak RSS high-water mark is "
    "reset (/proc/self/clear_refs = 5) and one forward+backward runs; peak_rss_increase_mib = VmHWM after - VmRSS "
    "before. reference_prebuilt's masks are resident before the baseline, so its number excludes them (see "
    "reference_mask_bytes_per_image_padded); reference builds them inside the measured call. GPU: "
    "torch.cuda.max_memory_allocated - memory_allocated before, the same three cases, in process."
)
CONFORMANCE = common.REPO.parent / "shared" / "conformance" / "loss_reference.json"


# --- the reference: one full H x W mask per band ------------------------------------------------------------


def reference_penalty(z: Tensor, t: float) -> Tensor:
    """Extended log-barrier: ``-log(-z)/t`` if ``z <= -1/t^2``, else ``t*z - log(1/t^2)/t + 1/t``."""
    ceil = -1.0 / t**2
    offset = -torch.log(torch.tensor(1.0 / t**2)).item() / t + 1.0 / t
    return torch.where(z <= ceil, -torch.log(-z.clamp(max=ceil)) / t, t * z + offset)


def reference_masks(box: list[int], height: int, width: int, d: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(bands x H x W float32 masks, bands band widths) of one box, zero-padded to H//d + W//d bands."""
    x0, y0, x1, y1 = box
    masks, widths = [], []
    for start in range(y0, y1 + 1, d):  # bands of rows, within the box's columns
        stop = min(start + d, y1 + 1)
        mask = torch.zeros(height, width, device=device)
        mask[start:stop, x0 : x1 + 1] = 1
        masks.append(mask)
        widths.append(stop - start)
    for start in range(x0, x1 + 1, d):  # bands of columns, within the box's rows
        stop = min(start + d, x1 + 1)
        mask = torch.zeros(height, width, device=device)
        mask[y0 : y1 + 1, start:stop] = 1
        masks.append(mask)
        widths.append(stop - start)
    padded = height // d + width // d
    assert len(masks) <= padded, f"box {box} has {len(masks)} bands, more than the padding's {padded}"
    stacked = torch.stack(masks)
    stacked = torch.cat([stacked, stacked.new_zeros(padded - len(masks), height, width)])
    widths_t = torch.tensor(widths + [0] * (padded - len(widths)), dtype=torch.float32, device=device)
    return stacked, widths_t


def build_all_masks(probs: Tensor, boxes: Tensor, d: int) -> list[tuple[Tensor, Tensor]]:
    _, height, width = probs.shape
    return [reference_masks(box, height, width, d, probs.device) for box in boxes.tolist()]


def reference_loss(probs: Tensor, masks: list[tuple[Tensor, Tensor]], t: float) -> Tensor:
    total = probs.new_zeros(())
    for b, (band_masks, widths) in enumerate(masks):
        n = int((widths > 0).sum())  # drop the collation padding
        band_masks, widths = band_masks[:n], widths[:n]
        repeated = probs[b][None].repeat(n, 1, 1)
        sums = (band_masks * repeated).sum(dim=(-2, -1))
        total = total + reference_penalty(widths - sums, t).sum()
    return total / len(masks)


def reference_tightness(probs: Tensor, boxes: Tensor, d: int, t: float) -> Tensor:
    return reference_loss(probs, build_all_masks(probs, boxes, d), t)


# --- inputs ---------------------------------------------------------------------------------------------------


def make_inputs(batch: int, size: int, box_min: int, box_max: int, seed: int, device: torch.device):
    """Boxes of ``box_min``..``box_max`` px per side, and probabilities of a soft ellipse inscribed in each box
    plus noise (so some bands sit on the barrier's linear part and most on its log part)."""
    generator = torch.Generator().manual_seed(seed)
    boxes = []
    for _ in range(batch):
        w, h = (int(v) for v in torch.randint(box_min, box_max + 1, (2,), generator=generator))
        x0 = int(torch.randint(0, size - w + 1, (1,), generator=generator))
        y0 = int(torch.randint(0, size - h + 1, (1,), generator=generator))
        boxes.append([x0, y0, x0 + w - 1, y0 + h - 1])
    boxes_t = torch.tensor(boxes, dtype=torch.int64)
    grid = torch.arange(size, dtype=torch.float32)
    probs = []
    for x0, y0, x1, y1 in boxes:
        u = (grid[None, :] - (x0 + x1) / 2) / ((x1 - x0 + 1) / 2)
        v = (grid[:, None] - (y0 + y1) / 2) / ((y1 - y0 + 1) / 2)
        logits = 8.0 * (1.0 - u**2 - v**2) + torch.randn(size, size, generator=generator)
        probs.append(torch.sigmoid(logits))
    return torch.stack(probs).to(device), boxes_t.to(device)


# --- cases ----------------------------------------------------------------------------------------------------


def make_case(
    name: str, probs: Tensor, boxes: Tensor, d: int, t: float, masks: list[tuple[Tensor, Tensor]] | None = None
) -> Callable[[bool], Tensor]:
    """A call computing the loss (and its backward when asked) the way ``name`` does.

    ``reference_prebuilt`` uses ``masks`` (built here when not given); ``reference`` builds them in every call.
    """
    if name == "reference_prebuilt" and masks is None:
        masks = build_all_masks(probs, boxes, d)

    def call(backward: bool) -> Tensor:
        leaf = probs.detach().requires_grad_(backward)
        if name == "ours":
            loss = losses.tightness_prior(leaf, boxes, d, t)
        elif name == "reference_prebuilt":
            loss = reference_loss(leaf, masks, t)
        else:
            loss = reference_tightness(leaf, boxes, d, t)
        if backward:
            loss.backward()
        return loss.detach()

    return call


CASES = [  # (implementation, backward), in the order each round runs them
    ("ours", False),
    ("reference_prebuilt", False),
    ("ours", True),
    ("reference_prebuilt", True),
    ("reference", True),
]


def check_equal(probs: Tensor, boxes: Tensor, masks: list[tuple[Tensor, Tensor]], d: int, t: float) -> dict:
    """Both give the same value (within 1e-4 relative) and close gradients, on the benchmark's inputs."""
    grads, values = {}, {}
    for name in ("ours", "reference"):
        leaf = probs.detach().clone().requires_grad_(True)
        value = losses.tightness_prior(leaf, boxes, d, t) if name == "ours" else reference_loss(leaf, masks, t)
        value.backward()
        values[name], grads[name] = float(value.detach()), leaf.grad
    rel = abs(values["ours"] - values["reference"]) / max(abs(values["reference"]), 1e-12)
    assert rel <= 1e-4, f"tightness values differ: ours {values['ours']}, reference {values['reference']}"
    grad_rel = float((grads["ours"] - grads["reference"]).abs().max() / grads["reference"].abs().max())
    assert grad_rel <= 1e-4, f"tightness gradients differ (max diff / max |grad| = {grad_rel:.2e})"
    log.info(
        "same value: ours %.6f, reference %.6f (relative diff %.1e; gradient %.1e)",
        values["ours"],
        values["reference"],
        rel,
        grad_rel,
    )
    return {
        "ours": values["ours"],
        "reference": values["reference"],
        "relative_diff": rel,
        "gradient_max_diff_over_max_abs": grad_rel,
    }


def check_conformance(path: Path) -> dict | str:
    """The reference (and ours) against the values the authors' own loss classes give (shared conformance file)."""
    if not path.is_file():
        log.warning("conformance file not found at %s; reference not checked against the authors' values", path)
        return f"not run: {path} not found"
    worst = {"reference": 0.0, "ours": 0.0}
    for case in json.loads(path.read_text())["cases"]:
        probs = torch.tensor(case["foreground_prob"], dtype=torch.float32)
        boxes = torch.tensor(case["boxes_xyxy_inclusive"], dtype=torch.int64)
        expected = case["expected"]["tightness"]
        got = {
            "reference": reference_tightness(probs, boxes, case["d"], case["t"]),
            "ours": losses.tightness_prior(probs, boxes, case["d"], case["t"]),
        }
        for name, value in got.items():
            worst[name] = max(worst[name], abs(float(value) - expected) / abs(expected))
    log.info(
        "conformance (authors' values): worst relative error reference %.1e, ours %.1e",
        worst["reference"],
        worst["ours"],
    )
    assert worst["reference"] <= 1e-4, f"the reference does not reproduce the authors' values ({worst})"
    return {"file": str(path), "cases": "tightness of every case", "worst_relative_error": worst}


def time_cases(probs: Tensor, boxes: Tensor, masks: list[tuple[Tensor, Tensor]], args: argparse.Namespace) -> dict:
    """Rounds of every case; ``ours`` runs ``args.inner`` calls per timing; ``reference`` only in the first
    ``args.build_repeats`` rounds (building the masks is slow), and none of it warms up (the other cases did)."""
    device = probs.device
    calls = {name: make_case(name, probs, boxes, args.d, args.t, masks) for name in {n for n, _ in CASES}}
    inner = {"ours": args.inner}
    for name, backward in CASES:
        if name != "reference":
            calls[name](backward)  # warm-up
    seconds: dict[str, list[float]] = {}
    for round_index in range(args.repeats):
        for name, backward in CASES:
            if name == "reference" and round_index >= args.build_repeats:
                continue
            n = inner.get(name, 1)
            elapsed, _ = common.time_call(lambda c=calls[name], b=backward, n=n: [c(b) for _ in range(n)], device)
            seconds.setdefault(f"{name}/{'forward_backward' if backward else 'forward'}", []).append(elapsed / n)
    medians = {key: common.median(values) for key, values in seconds.items()}
    ratios = {
        "forward": medians["reference_prebuilt/forward"] / medians["ours/forward"],
        "forward_backward": medians["reference_prebuilt/forward_backward"] / medians["ours/forward_backward"],
        "forward_backward_with_mask_building": medians["reference/forward_backward"] / medians["ours/forward_backward"],
    }
    for key, value in medians.items():
        log.info("%s %s: %.5f s per call", device.type, key, value)
    log.info("%s speed-up of ours over the reference: %s", device.type, {k: round(v, 1) for k, v in ratios.items()})
    return {
        "calls_per_timing": {name: inner.get(name, 1) for name in calls},
        "seconds_per_call": {key: [round(v, 6) for v in values] for key, values in seconds.items()},
        "median_seconds_per_call": {key: round(v, 6) for key, v in medians.items()},
        "speedup_reference_over_ours": {k: round(v, 2) for k, v in ratios.items()},
        "target": "ours at least 50x faster than the reference (forward+backward, masks prebuilt)",
        "target_met": ratios["forward_backward"] >= 50.0,
    }


# --- memory -----------------------------------------------------------------------------------------------------


def _vm_hwm_kib() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_worker(args: argparse.Namespace) -> None:
    """In a fresh process: the peak RSS increase of one forward+backward of ``args.memory_worker``."""
    probs, boxes = make_inputs(args.batch, args.size, args.box_min, args.box_max, args.seed, torch.device("cpu"))
    call = make_case(args.memory_worker, probs, boxes, args.d, args.t)  # builds prebuilt masks, if any
    reset = _reset_hwm()
    before_current = int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    before = _vm_hwm_kib() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    call(True)
    after = _vm_hwm_kib() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(args.memory_out).write_text(
        json.dumps(
            {
                "rss_before_mib": round(before_current / 1024, 1),
                "peak_rss_increase_mib": round((after - max(before, before_current)) / 1024, 1),
                "hwm_reset": reset,
            }
        )
    )


def measure_cpu_memory(args: argparse.Namespace) -> dict:
    out = {}
    for name in ("ours", "reference_prebuilt", "reference"):
        with tempfile.NamedTemporaryFile(suffix=".json") as handle:
            command = [
                *common.timing_command("tightness"),
                "--memory-worker",
                name,
                "--memory-out",
                handle.name,
                "--batch",
                str(args.batch),
                "--size",
                str(args.size),
                "--box-min",
                str(args.box_min),
                "--box-max",
                str(args.box_max),
                "--seed",
                str(args.seed),
                "--d",
                str(args.d),
                "--t",
                str(args.t),
            ]
            if args.threads:
                command += ["--threads", str(args.threads)]
            subprocess.run(command, check=True)
            out[name] = json.loads(Path(handle.name).read_text())
        log.info("cpu peak RSS increase, %s forward+backward: %.1f MiB", name, out[name]["peak_rss_increase_mib"])
    return out


def measure_gpu_memory(probs: Tensor, boxes: Tensor, args: argparse.Namespace) -> dict:
    device = probs.device
    out = {}
    for name in ("ours", "reference_prebuilt", "reference"):
        torch.cuda.empty_cache()
        call = make_case(name, probs, boxes, args.d, args.t)
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call(True)
        torch.cuda.synchronize(device)
        out[name] = {"peak_allocated_increase_mib": round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)}
        del call
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=640, help="label side H = W")
    parser.add_argument("--box-min", type=int, default=300, help="smallest box side, px")
    parser.add_argument("--box-max", type=int, default=500, help="largest box side, px")
    parser.add_argument("--d", type=int, default=5, help="band width in lines")
    parser.add_argument("--t", type=float, default=5.0, help="log-barrier t")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; every case once per round")
    parser.add_argument("--build-repeats", type=int, default=2, help="rounds that also time `reference` (slow)")
    parser.add_argument("--inner", type=int, default=10, help="calls of ours per timing (it is fast)")
    parser.add_argument("--conformance", type=Path, default=CONFORMANCE, help="authors' loss values (JSON)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--memory-worker", choices=["ours", "reference_prebuilt", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--memory-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    common.setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(args)
        return
    machine = common.machine_info()
    log.info("machine: %s", machine)

    conformance = check_conformance(args.conformance)
    cpu_probs, boxes = make_inputs(args.batch, args.size, args.box_min, args.box_max, args.seed, torch.device("cpu"))
    log.info("boxes (x0, y0, x1, y1): %s", boxes.tolist())
    build_seconds, masks = common.time_call(lambda: build_all_masks(cpu_probs, boxes, args.d), torch.device("cpu"))
    log.info("reference masks of the batch built in %.2f s", build_seconds)
    equal = check_equal(cpu_probs, boxes, masks, args.d, args.t)
    bands = [len(range(y0, y1 + 1, args.d)) + len(range(x0, x1 + 1, args.d)) for x0, y0, x1, y1 in boxes.tolist()]
    padded = args.size // args.d * 2
    cpu = {"timing": time_cases(cpu_probs, boxes, masks, args), "first_mask_building_seconds": round(build_seconds, 3)}
    del masks
    cpu["memory"] = measure_cpu_memory(args)

    device = common.gpu_device()
    if device is None:
        log.info("GPU: %s", common.NO_GPU)
        gpu: dict | str = common.NO_GPU
    else:
        gpu_probs = cpu_probs.to(device)
        gpu_masks = build_all_masks(gpu_probs, boxes.to(device), args.d)
        gpu = {"timing": time_cases(gpu_probs, boxes.to(device), gpu_masks, args)}
        del gpu_masks
        gpu["memory"] = measure_gpu_memory(gpu_probs, boxes.to(device), args)

    common.write_result(
        "tightness",
        {
            "benchmark": "tightness",
            "what": "losses.tightness_prior (O(H x W) sums along the box axes) vs a reference building one full H x W "
            "float32 mask per band, as the authors' code does; seconds per call (median of rounds)",
            "machine": machine,
            "settings": {
                **{
                    k: (str(v) if isinstance(v, Path) else v)
                    for k, v in vars(args).items()
                    if k not in ("memory_worker", "memory_out")
                }
            },
            "inputs": {
                "boxes_xyxy_inclusive": boxes.tolist(),
                "bands_per_image": bands,
                "padded_bands_per_image": padded,
                "reference_mask_bytes_per_image_padded": padded * args.size * args.size * 4,
                "probs": "sigmoid(8 (1 - u^2 - v^2) + N(0, 1)): a soft ellipse inscribed in each box, seeded",
            },
            "same_value": equal,
            "conformance": conformance,
            "memory_method": MEMORY_METHOD,
            "cpu": cpu,
            "gpu": gpu,
        },
    )
