"""The ``autoprompt`` command: ``predict`` with a trained model, ``export`` a model to one file.

autoprompt predict -m MODEL -i INPUT [INPUT ...] -o OUTPUT_DIR [--device auto] [--batch-size N] [--overlay]
    [--reprompt-margin 0.1 | --reprompt-from metrics/<task>.json]
autoprompt export -m RUN_OR_TASK_FOLDER -o model.pt

On a CPU the command computes as the stages do (``autoprompt.cpu_paths``, ``device.pin_cpu_numerics``): the same
masks on any x86 machine with AVX2 for the same ``--threads``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autoprompt.cpu_paths import pin_code_paths

MODEL_HELP = "a run folder, a folder of runs (their ensemble, e.g. models/hc18/augmented/fewshot) or an exported file"


def predict_command(args: argparse.Namespace) -> None:
    from autoprompt.device import pin_cpu_numerics, select_device
    from autoprompt.inference import predict

    if select_device(args.device, "--device").type == "cpu":
        pin_cpu_numerics(args.threads)

    summary = predict(
        args.model,
        args.input,
        args.output,
        device=args.device,
        batch_size=args.batch_size,
        threshold=args.threshold,
        probabilities=args.probabilities,
        label_value=args.label_value,
        overlays=args.overlay,
        overwrite=args.overwrite,
        on_error=args.on_error,
        checkpoint=args.checkpoint,
        runtime=args.runtime,
        cache_dir=args.runtime_cache,
        part_id=args.part_id,
        num_parts=args.num_parts,
        reprompt_margin=args.reprompt_margin,
        reprompt_from=args.reprompt_from,
    )
    if summary.failed:
        raise SystemExit(f"{len(summary.failed)} unreadable inputs were skipped (listed in the warnings above)")


def export_command(args: argparse.Namespace) -> None:
    from autoprompt.inference import export_model, load_model

    export_model(load_model(args.model), args.output)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoprompt", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help="segment images and volumes with a trained model")
    predict.add_argument("-m", "--model", type=Path, required=True, help=MODEL_HELP)
    predict.add_argument("-i", "--input", type=Path, nargs="+", required=True, help="image files or folders")
    predict.add_argument("-o", "--output", type=Path, required=True, help="folder for the masks")
    predict.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1, ...")
    predict.add_argument("--batch-size", type=int, default=8, help="slices per encoder call (default 8)")
    predict.add_argument("--threshold", type=float, default=0.5, help="probability threshold of the masks")
    predict.add_argument("--probabilities", action="store_true", help="write float32 probabilities, not masks")
    predict.add_argument(
        "--label-value",
        type=label_value,
        nargs="?",
        const="model",
        default=None,
        help="value inside the masks (default 1); bare: the class's value in the training labels",
    )
    predict.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png to look at")
    predict.add_argument("--overwrite", action="store_true", help="redo inputs whose output exists")
    predict.add_argument("--on-error", choices=("stop", "skip"), default="stop", help="on an unreadable input")
    predict.add_argument("--checkpoint", type=Path, help="backbone checkpoint, if not where the model was trained")
    predict.add_argument(
        "--runtime", default="auto", choices=("auto", "torch", "openvino"), help="encoder (auto: OpenVINO on a CPU)"
    )
    predict.add_argument("--runtime-cache", type=Path, help="converted encoders (default ~/.cache/autoprompt)")
    predict.add_argument(
        "--threads", type=threads, help="CPU threads (default: all); the same count gives the same masks on any machine"
    )
    reprompting = predict.add_mutually_exclusive_group()
    reprompting.add_argument(
        "--reprompt-margin",
        type=float,
        help="prompt the decoder again with the box of each mask, each side moved out by this fraction of the box "
        "(the pipeline's reprompt.margin; default: off)",
    )
    reprompting.add_argument(
        "--reprompt-from",
        type=Path,
        metavar="METRICS_JSON",
        help="the margin that the evaluate stage chose for the model's recipe and regime (reprompt.margin: auto)",
    )
    predict.add_argument("--part-id", type=int, default=0, help="this process's part of the inputs (0-based)")
    predict.add_argument("--num-parts", type=int, default=1, help="parts the inputs are split into")
    predict.set_defaults(handler=predict_command)

    export = commands.add_parser("export", help="write a run or an ensemble of runs to one model file")
    export.add_argument("-m", "--model", type=Path, required=True, help=MODEL_HELP)
    export.add_argument("-o", "--output", type=Path, required=True, help="model file to write (model.pt)")
    export.set_defaults(handler=export_command)
    return parser


def label_value(text: str) -> int | str:
    """``--label-value N``: an integer 1-255; bare ``--label-value`` means ``model``."""
    if text == "model":
        return text
    value = int(text)
    if not 1 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{value} does not fit a uint8 mask; give 1 to 255")
    return value


def threads(text: str) -> int:
    """``--threads N``: a count of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} threads; give 1 or more, or leave --threads out to use all")
    return value


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.handler(args)


def entry() -> None:
    """The console script: the CPU code paths pinned before torch loads, then ``main`` with one-line errors."""
    pin_code_paths()
    from autoprompt.console import run

    run(main)


if __name__ == "__main__":
    entry()
