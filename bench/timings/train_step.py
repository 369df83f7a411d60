"""Time of one training step, lever by lever: PromptHead + the frozen LiteMedSAM decoder + box losses at 640,
backward, Adam, as ``training.loop.train_head`` runs it (``loop.step_logits`` under ``device.Numerics``).

Each lever runs in its own process (the CPU code paths are read when torch loads), and the processes take turns:
every round runs every lever once, in a rotated order, so a change in the machine's load falls on all of them.

- ``exact``: the pipeline's path and ``--exact``'s: float32, code paths pinned to AVX2, oneDNN off;
- ``native``: float32 on the CPU's own instructions with oneDNN (no pin);
- ``bfloat16``: ``native`` under bfloat16 autocast (float32 weights, losses and Adam);
- ``compile``: ``native`` through ``torch.compile`` (inductor, ``loop.COMPILE_OPTIONS``), float32, channels-last;
- ``fast``: bfloat16, compiled, channels-last: what ``autoprompt train`` runs where the CPU has AVX-512 BF16 or AMX;
- ``fast_contiguous``: ``fast`` with the embeddings in the default memory format;
- ``fast_attention_fused``: ``fast`` compiled with inductor's default options, whose pattern matcher replaces the
  decoder's attention by the CPU flash-attention kernel;
- ``fast_fused3``: ``fast`` with the three runs of an ensemble in one decoder batch (3 heads x the batch), its
  seconds divided by 3 (per run's step).

The first steps of a compiled lever are its compile: ``compile_seconds`` gives the first step of the first round (an
empty inductor cache) and of the later ones (the cache that ``autoprompt train`` keeps across calls). Embeddings are
random normal, stored as float16 and cast to float32 in the step, as the loop does with cached embeddings; boxes are
tight boxes of real HC18 images (640 x 640 crops). Whether a lever keeps the held-out Dice is
``bench/studies/own_data.py``'s question (``--exact`` against the default).

    python -m bench.timings train_step [--hc18 /path/to/hc18-sample] [--rounds 3] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.lib import common

log = common.log.getChild("train_step")

LABEL_SIZE = 640
LEVERS = {  # name: (pinned, precision, compile, channels_last, fused runs, inductor's default options)
    "exact": (True, "float32", False, False, 1, False),
    "native": (False, "float32", False, False, 1, False),
    "bfloat16": (False, "bfloat16", False, False, 1, False),
    "compile": (False, "float32", True, True, 1, False),
    "fast": (False, "bfloat16", True, True, 1, False),
    "fast_contiguous": (False, "bfloat16", True, False, 1, False),
    "fast_attention_fused": (False, "bfloat16", True, True, 1, True),
    "fast_fused3": (False, "bfloat16", True, True, 3, False),
}
BASELINE = "exact"


def worker(name: str, args: argparse.Namespace) -> dict:
    """One lever's steps in this process: warm-up (the compile), then ``args.steps`` timed steps."""
    import torch

    from autoprompt.device import EXACT, FAST, Numerics, cpu_bfloat16, numerics
    from autoprompt.model import backbones, checkpoints, losses
    from autoprompt.model.decoding import head_logits, to_label_size
    from autoprompt.training import loop

    pinned, precision, compiled, channels_last, fused, default_options = LEVERS[name]
    device = torch.device("cpu")
    base = numerics(EXACT if pinned else FAST, device, args.threads)
    if precision == "bfloat16" and not cpu_bfloat16():
        return {"skipped": "this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX)"}
    chosen = Numerics(base.mode, precision, compiled, base.isa)
    data = json.loads(Path(args.data).read_text())
    boxes = torch.tensor(data["boxes"])
    embeddings16 = torch.randn(len(boxes), 256, 64, 64, generator=torch.Generator().manual_seed(0)).half()
    decoder = backbones.build_prompt_decoder("lite_medsam", checkpoints.resolve_checkpoint("lite_medsam", None))
    decoder = decoder.eval().requires_grad_(False)
    heads = [loop.make_head(decoder, "whole_box", 0.01, seed=s) for s in range(fused)]
    params = [p for head in heads for p in head.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4)
    weights = losses.LossWeights()
    options = {} if default_options else loop.COMPILE_OPTIONS
    logits_fn = loop.step_logits(chosen, options, channels_last)

    if fused > 1:  # the heads' prompts side by side, one decoder call over all of them

        def fused_logits(x: torch.Tensor) -> torch.Tensor:
            prompts = [head(x) for head in heads]
            sparse = torch.cat([p[0] for p in prompts])
            dense = torch.cat([p[1] for p in prompts])
            return decoder(x.repeat(fused, 1, 1, 1), sparse, dense)

        forward = torch.compile(fused_logits, dynamic=True, options=options) if compiled else fused_logits

        def low_res(x: torch.Tensor) -> torch.Tensor:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with chosen.autocast(device):
                return forward(x).float()

        all_boxes = boxes.repeat(fused, 1)
    else:

        def low_res(x: torch.Tensor) -> torch.Tensor:
            return logits_fn(heads[0], decoder, x)

        all_boxes = boxes

    phases: dict[str, list[float]] = {}
    seconds: list[float] = []

    def step() -> float:
        start = t = time.perf_counter()
        logits = to_label_size(low_res(embeddings16.float()), LABEL_SIZE)
        marks = {"forward": time.perf_counter()}
        total = losses.box_loss(logits, all_boxes, weights)["total"]
        marks["losses"] = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        marks["backward"] = time.perf_counter()
        optimizer.step()
        marks["optimizer"] = time.perf_counter()
        for label, at in marks.items():
            phases.setdefault(label, []).append((at - t) / fused)
            t = at
        return (t - start) / fused

    first = [round(step(), 3) for _ in range(args.warmup)]
    phases.clear()
    seconds = [step() for _ in range(args.steps)]
    with torch.no_grad():  # how far this lever's logits are from the exact float32 ones, same head
        exact = to_label_size(head_logits(heads[0], decoder, embeddings16.float()), LABEL_SIZE)
        approx = to_label_size(logits_fn(heads[0], decoder, embeddings16.float()), LABEL_SIZE)
    return {
        "numerics": chosen.record(),
        "threads": torch.get_num_threads(),
        "warmup_seconds": first,
        "seconds": [round(s, 4) for s in seconds],
        "phases": {label: common.median(v) for label, v in phases.items()},
        "logits_relative_max_diff_after_training": float((approx - exact).abs().max() / exact.abs().max()),
    }


def spawn(name: str, args: argparse.Namespace, data: Path, cache: Path) -> dict:
    """Run ``worker(name)`` in a new process with the environment its lever needs."""
    env = common.numerics_env(LEVERS[name][0], TORCHINDUCTOR_CACHE_DIR=str(cache))
    command = common.timing_command("train_step", "--worker", name, "--data", data, "--steps", args.steps)
    command += ["--warmup", str(args.warmup)] + (["--threads", str(args.threads)] if args.threads else [])
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"lever {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="HC18 sample, official layout")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every lever once")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each lever in each round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (a compiled lever compiles here)")
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument("--worker", choices=list(LEVERS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    if "--worker" in sys.argv:
        parser.add_argument("--threads", type=int)
        args = parser.parse_args()
        print(json.dumps(worker(args.worker, args)))
        return
    args, machine = common.parse_and_start(parser)

    with tempfile.TemporaryDirectory() as scratch:
        data = common.load_hc18(args.hc18, args.batch_size, LABEL_SIZE, Path(scratch))
        data_file = Path(scratch) / "boxes.json"
        data_file.write_text(json.dumps({"boxes": data["boxes"].tolist()}))
        cache = Path(scratch) / "inductor"  # empty at the first round: the first compile is a cold one
        runs: dict[str, list[dict]] = {name: [] for name in args.levers}
        for round_ in range(args.rounds):
            order = args.levers[round_ % len(args.levers) :] + args.levers[: round_ % len(args.levers)]
            for name in order:
                runs[name].append(spawn(name, args, data_file, cache))
                log.info("round %d, %s: %s", round_ + 1, name, runs[name][-1].get("seconds"))

    result: dict[str, dict] = {}
    for name, rounds in runs.items():
        if "skipped" in rounds[0]:
            result[name] = rounds[0]
            continue
        seconds = [s for r in rounds for s in r["seconds"]]
        result[name] = {
            "numerics": rounds[0]["numerics"],
            "median_seconds": round(common.median(seconds), 4),
            "seconds": seconds,
            "phase_median_seconds": {
                label: round(common.median([r["phases"][label] for r in rounds]), 4) for label in rounds[0]["phases"]
            },
            "compile_seconds": {
                "cold_cache": rounds[0]["warmup_seconds"][0],
                "warm_cache": [r["warmup_seconds"][0] for r in rounds[1:]],
            }
            if LEVERS[name][2]
            else None,
            "logits_relative_max_diff": round(max(r["logits_relative_max_diff_after_training"] for r in rounds), 6),
        }
    base = result[BASELINE]["median_seconds"] if BASELINE in result else None
    for name, entry in result.items():
        if base and "median_seconds" in entry:
            entry["speedup_over_exact"] = round(base / entry["median_seconds"], 2)
        log.info("%s: %s", name, {k: v for k, v in entry.items() if k not in ("seconds", "numerics")})

    common.write_result(
        "train_step",
        {
            "benchmark": "train_step",
            "what": "one training step (float16 -> float32 embeddings, PromptHead, frozen LiteMedSAM decoder, bilinear "
            "resize to 640, box_loss, backward, Adam step), each lever in its own process, the levers taking turns "
            "round by round; median over every round's timed steps",
            "machine": machine,
            "settings": {
                **{
                    k: (str(v) if isinstance(v, Path) else v)
                    for k, v in vars(args).items()
                    if k not in ("worker", "data")
                },
                "label_size": LABEL_SIZE,
                "backbone": "lite_medsam",
                "loss": "losses.LossWeights() (the workshop recipe)",
                "init": "loop.make_head(whole_box, scale 0.01, seed 0)",
                "embeddings": "torch.randn (seed 0) stored float16, cast to float32 in the step",
            },
            "data": {"source": data["source"], "ids": data["ids"], "boxes": data["boxes"].tolist()},
            "levers": result,
        },
    )
