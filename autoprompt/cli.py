"""The autoprompt command: train a model from boxes on a folder of images, segment images with it, score the masks.

On a CPU, ``train`` and ``predict`` compute on the fast path by default (the CPU's own instructions, bfloat16 where
it has AVX-512 BF16 or AMX, the training step compiled: ``autoprompt.device.Numerics``); with ``--exact``, and for
every other command, as the pipeline's stages do (the same numbers on any machine of one CPU kind for the
same --threads: autoprompt/cpu_paths.py). Heavy libraries are imported only once a command runs, so that --help answers
at once.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from autoprompt import __version__
from autoprompt.cpu_paths import pin_code_paths

log = logging.getLogger("autoprompt")

NUMERICS_VARIABLE = "AUTOPROMPT_NUMERICS"  # train's and predict's default CPU numerics: fast (unset) or exact

MODEL_HELP = (
    "a model file (autoprompt train's, or autoprompt export's), a run folder, or a folder of runs (an ensemble)"
)


class Parser(argparse.ArgumentParser):
    """argparse, with a wrong option answered in one line (no usage block), as every other bad input is."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help in plain words: the description and example as written, each option's default shown where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default not in (None, False, argparse.SUPPRESS)
            and "%(default)" not in text
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def command(commands: argparse._SubParsersAction, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    return commands.add_parser(
        name, help=summary, description=summary, epilog=f"example:\n  {example}", formatter_class=Formatter
    )


def threads(text: str) -> int:
    """``--threads N``: a count of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} threads; give 1 or more, or leave --threads out to use all")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}; give 1 or more")
    return value


def _real(accept, fix: str):
    """An option's type: a number that ``accept`` takes, else one line ending in ``give {fix}``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {fix}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{value}; give {fix}")
        return value

    return parse


fraction = _real(lambda v: 0 <= v < float("inf"), "a fraction >= 0 of the box's side")  # --reprompt-margin
unit = _real(lambda v: 0 <= v <= 1, "a box IoU from 0 to 1")  # --volume-min-iou
probability = _real(lambda v: 0 <= v <= 1, "a probability from 0 to 1")  # --threshold
millimetres = _real(lambda v: 0 < v < float("inf"), "a distance in mm above 0")  # --tolerance


def label_value(text: str) -> int | str:
    """``--label-value N``: an integer 1-255; bare ``--label-value`` means ``model``."""
    if text == "model":
        return text
    value = int(text)
    if not 1 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{value} does not fit a uint8 mask; give 1 to 255")
    return value


# ----------------------------------------------------------------------------------------------------------- train
def command_settings(args: argparse.Namespace, source: str):
    """The settings of ``train`` or ``suggest``: ``--params`` (else the defaults), with the options given on the
    command line (backbone, checkpoint, device, threads; train's recipe, runs and self-training)."""
    from autoprompt.errors import InputError
    from autoprompt.model.runtimes import default_cache_dir
    from autoprompt.settings import load_settings, settings_from

    defaults = {"encode": {"runtime_cache": str(default_cache_dir())}}  # converted encoders, shared with predict
    settings = load_settings(args.params) if args.params else settings_from(defaults, source)
    recipe, runs = getattr(args, "recipe", None), getattr(args, "runs", None)
    if recipe is not None and recipe not in settings.train.recipes:
        raise InputError(f"--recipe {recipe}: not a recipe of {settings.source}; give one of " +
                         ", ".join(settings.train.recipes))  # fmt: skip
    sections = settings.model_dump(by_alias=True)
    changes = {
        "encode": {"backbone": args.backbone, "checkpoint": str(args.checkpoint) if args.checkpoint else None},
        "train": {"recipe": recipe, "seeds": list(range(runs)) if runs else None},
    }
    for section, values in changes.items():
        sections[section].update({k: v for k, v in values.items() if v is not None})
    if getattr(args, "self_training", None) is not None:
        sections["train"]["self_training"]["enabled"] = args.self_training
    for section in ("encode", "train", "evaluate"):
        sections[section].update({"device": args.device, "threads": args.threads or sections[section]["threads"]})
    return settings_from(sections, str(args.params) if args.params else source)


def train_command(args: argparse.Namespace) -> None:
    from autoprompt.device import numerics, select_device
    from autoprompt.errors import InputError
    from autoprompt.inference.model import is_model_file
    from autoprompt.model.checkpoints import is_packaged
    from autoprompt.outputs import refuse_foreign, refuse_overlap
    from autoprompt.own_data import boxes_source, folder_settings, train_folder

    data = args.data
    if not data.is_dir():
        raise InputError(f"{data}: folder not found; give a folder holding images/ and boxes.csv")
    if not (data / "images").is_dir():
        raise InputError(f"{data / 'images'}: folder not found; put the images to train on in DATA/images/")

    settings = command_settings(args, "autoprompt train")
    boxes = boxes_source(settings, data, args.boxes, args.label)  # --boxes, else the params', else DATA/boxes.csv
    settings = folder_settings(settings, boxes.resolve(), args.label, args.class_name)
    chosen = numerics(_numerics_mode(args), select_device(args.device, "--device"), settings.train.threads)
    log.info("training on %s", chosen.describe(training=True))
    if args.checkpoint is not None and is_packaged(settings.encode.backbone):
        raise InputError(
            f"--checkpoint {args.checkpoint}: the backbone {settings.encode.backbone} uses its packaged weights; "
            "leave --checkpoint out, or add --backbone medsam_vit_b"
        )
    out = args.output
    work = args.work or out.with_name(out.stem + ".work")
    refuse_overlap(
        {"-o": out, "--work": work},
        {"DATA/images": data / "images", "the boxes": boxes},
        "write the model and its work folder beside the data, e.g. -o model.pt",
    )
    refuse_foreign(out, is_model_file, "model file", "give a new file name (model.pt), or move that file away")
    start = time.perf_counter()
    summary = train_folder(data, out, work, settings, chosen)
    margin = "none" if summary.margin is None else f"{summary.margin:g}"
    if summary.margin is not None and summary.box_threshold is not None:
        margin += f" (boxes above {summary.box_threshold:g})"
    steps = ", ".join(f"{name} {_duration(s)}" for name, s in summary.seconds.items())
    second = f" and {len(summary.harvested.rows)} pseudo-boxed" if summary.harvested is not None else ""
    log.info(
        "wrote %s: %d run%s (%d trained now) on %d boxed images%s, re-prompt margin %s; %s (%s); work kept in %s",
        out, summary.runs, "" if summary.runs == 1 else "s", summary.trained, summary.images, second, margin,
        _duration(time.perf_counter() - start),
        steps, work,
    )  # fmt: skip


def _numerics_mode(args: argparse.Namespace) -> str:
    """``exact`` where the command has no ``--exact`` option or it is given; else ``$AUTOPROMPT_NUMERICS`` (``fast``
    where unset; ``exact`` makes ``--exact`` the default, as the test suite does)."""
    import os

    if getattr(args, "exact", True):
        return "exact"
    mode = os.environ.get(NUMERICS_VARIABLE, "fast")
    if mode not in ("exact", "fast"):
        raise SystemExit(f"{NUMERICS_VARIABLE} is {mode!r}; set it to exact or fast, or unset it")
    return mode


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


# --------------------------------------------------------------------------------------------------------- suggest
def suggest_command(args: argparse.Namespace) -> None:
    from autoprompt.device import numerics, select_device
    from autoprompt.errors import InputError
    from autoprompt.outputs import refuse_overlap
    from autoprompt.own_data import boxes_source, default_work
    from autoprompt.suggest_boxes import NEXT, STUDIO, suggest_folder, suggest_next

    data = args.input
    if data.name == "images" and not (data / "images").is_dir():  # DATA/images given: DATA is its parent
        data = data.parent
    if not (data / "images").is_dir():
        raise InputError(f"{data / 'images'}: folder not found; give the folder holding images/, as train takes it")
    settings = command_settings(args, "autoprompt suggest")
    if args.model is None and (args.boxes is not None or args.label is not None):
        raise InputError(f"{'--boxes' if args.boxes is not None else '--label'}: read only with --model, to know "
                         "which images are boxed; add --model MODEL, or leave it out")  # fmt: skip
    if args.model is not None and args.method is not None:
        raise InputError(f"--method {args.method}: chooses the first boxes only; --model lists where the model is "
                         "unsure, by k-center from the boxed images: leave --method out")  # fmt: skip
    out = args.output or (data / NEXT if args.model is not None else data)
    work = args.work or default_work(data)
    refuse_overlap(
        {"-o": out / "boxes.csv", "-o's": out / STUDIO, "--work": work},
        {"DATA/images": data / "images"},
        "write beside the images, e.g. -o DATA (the default)",
    )
    chosen = numerics(_numerics_mode(args), select_device(args.device, "--device"), settings.encode.threads)
    log.info("encoding on %s", chosen.describe(training=False))
    start = time.perf_counter()
    label = args.class_name or "structure"
    if args.model is not None:
        if not args.model.is_file():
            raise InputError(f"--model {args.model}: no such file; give the model file that autoprompt train wrote")
        boxes = boxes_source(settings, data, args.boxes, args.label)  # as train finds them
        found = suggest_next(data, out, work, settings, args.model, boxes, args.n, chosen, args.min_distance, label,
                             args.studio_root, args.label)  # fmt: skip
        log.info(
            "wrote %s: %d of the %d unboxed images and slices (the model is unsure of %d of the %d), in the order "
            "chosen (%s); to review (boxes drawn from %s: add them to %s)",
            ", ".join(str(p) for p in found.written[:2]), len(found.picks), found.candidates, found.doubtful,
            found.candidates, _duration(time.perf_counter() - start), out / "boxes.csv", boxes,
        )  # fmt: skip
        return
    method = args.method or "typical"
    found = suggest_folder(data, out, work, settings, args.n, chosen, args.min_distance, label, args.studio_root,
                           method)  # fmt: skip
    log.info(
        "wrote %s: %d of %d images and slices to box, chosen by %s, in the order chosen (%s); embeddings kept in %s "
        "for train",
        ", ".join(str(p) for p in found.written[:2]), len(found.picks), found.candidates, method,
        _duration(time.perf_counter() - start), work,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------------- predict
def predict_command(args: argparse.Namespace) -> None:
    from autoprompt.device import numerics, select_device
    from autoprompt.inference.files import Compute, Part, PostProcessing, Review, Writing, predict
    from autoprompt.inference.policy import FROM_MODEL

    chosen = numerics(_numerics_mode(args), select_device(args.device, "--device"), args.threads)
    margin = None if args.no_reprompt else args.reprompt_margin if args.reprompt_margin is not None else FROM_MODEL
    fit = None if args.no_volume_fit else args.volume_min_iou if args.volume_min_iou is not None else FROM_MODEL
    presence = None if args.no_presence else FROM_MODEL
    summary = predict(
        args.model,
        args.input,
        args.output,
        Compute(args.device, args.batch_size, args.checkpoint, args.runtime, args.runtime_cache, chosen),
        Writing(
            threshold=args.threshold,
            probabilities=args.probabilities,
            label_value=args.label_value,
            overlays=args.overlay,
            output_format=args.output_format,
            overwrite=args.overwrite,
            on_error=args.on_error,
        ),
        PostProcessing(margin, fit, presence, args.reprompt_from),
        Review(args.report, args.masks, args.boxes, args.label),
        Part(args.part_id, args.num_parts),
    )
    if summary.failed:
        raise SystemExit(f"{len(summary.failed)} unreadable inputs were skipped (listed in the warnings above)")


# -------------------------------------------------------------------------------------------------------- evaluate
def evaluate_command(args: argparse.Namespace) -> None:
    from autoprompt.evaluation.folders import evaluate_folder

    evaluate_folder(args.pred, args.masks, args.output, args.tolerance, args.boxes, args.threshold)


# ---------------------------------------------------------------------------------------------------------- export
def export_command(args: argparse.Namespace) -> None:
    from autoprompt.inference import export_model, load_model
    from autoprompt.outputs import refuse_overlap

    refuse_overlap({"-o": args.output}, {"-m": args.model}, "give a new file name beside the model, e.g. model.pt")
    export_model(load_model(args.model), args.output)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="autoprompt", description=__doc__.split("\n\n")[0], formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"autoprompt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = command(
        commands,
        "train",
        "train a model from boxes on a folder of images (DATA/images and DATA/boxes.csv; no masks needed)",
        "autoprompt train my-scans -o my-scans.pt",
    )
    train.add_argument(
        "data", type=Path, metavar="DATA", help="a folder with images/ and boxes.csv (masks/ is not read)"
    )
    train.add_argument("-o", "--output", type=Path, required=True, help="the model file to write, e.g. model.pt")
    train.add_argument(
        "--boxes",
        type=Path,
        help="the boxes: boxes.csv, a COCO or Label Studio JSON export, 3D Slicer ROIs (.mrk.json, or a folder of "
        "them), a napari Shapes CSV (default: --params' prepare.<folder>.boxes, relative to DATA, else DATA/boxes.csv)",
    )
    train.add_argument(
        "--label", help="the label to train on, where a COCO or Label Studio export holds several (boxes.csv has none)"
    )
    train.add_argument(
        "--class", dest="class_name", help="the structure's name, recorded in the model (default: structure)"
    )
    train.add_argument(
        "--work",
        type=Path,
        help="folder for the steps' work, reused by later calls (default: beside -o, named after its stem: "
        "model.work for model.pt)",
    )
    train.add_argument("--runs", type=positive, default=3, help="runs in the ensemble, one seed each")
    train.add_argument(
        "--self-training",
        action=argparse.BooleanOptionalAction,
        help="a second round: the first model segments the unboxed images, the masks its runs agree on give "
        "pseudo-boxes, and a second ensemble trains on your boxes and those (default: train.self_training.enabled "
        "of --params, else auto: on where the folder holds at least train.self_training.min_unboxed, 20, images or "
        "slices without a box)",
    )
    train.add_argument(
        "--recipe", help="how to train the head: a recipe of train.recipes (default: augmented, the best measured)"
    )
    train.add_argument(
        "--backbone", choices=("lite_medsam", "medsam_vit_b"), help="the frozen model (default: lite_medsam)"
    )
    train.add_argument("--checkpoint", type=Path, help="medsam_vit_b.pth, for --backbone medsam_vit_b")
    train.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1, ...")
    train.add_argument(
        "--threads", type=threads, help="CPU threads (default: all); the same count gives the same model"
    )
    train.add_argument("--params", type=Path, help="a params file (params.yaml's sections) for every other setting")
    train.add_argument(
        "--exact",
        action="store_true",
        help="float32 as the pipeline computes, the same model on any machine of this CPU kind for the same --threads, "
        "about 3x slower to train (default: this CPU's fastest path, bfloat16 where it has AVX-512 BF16 or AMX, "
        "float32 elsewhere; its model may differ slightly on another CPU; recorded in the model; "
        "AUTOPROMPT_NUMERICS=exact makes --exact the default)",
    )
    train.set_defaults(handler=train_command)

    suggest = command(
        commands,
        "suggest",
        "choose the images (volume slices) to box so that a few boxes cover the folder; write boxes.csv to fill in "
        "and a Label Studio project",
        "autoprompt suggest -i my-scans -n 10\n"
        "  autoprompt suggest -i my-scans -n 5 --model my-scans.pt   (where the model is unsure)",
    )
    suggest.add_argument(
        "-i", "--input", type=Path, required=True, metavar="DATA", help="a folder with images/ (or DATA/images)"
    )
    suggest.add_argument("-n", type=positive, default=10, help="images (volume slices) to box")
    suggest.add_argument(
        "-o",
        "--output",
        type=Path,
        help="folder for boxes.csv and label-studio/ (default: DATA, where train looks; with --model, DATA/next)",
    )
    suggest.add_argument(
        "--work", type=Path, help="folder for the embeddings, reused by train and later calls (default: DATA.work)"
    )
    suggest.add_argument(
        "--min-distance",
        type=_real(lambda v: 0 <= v <= 2, "a distance from 0 to 2"),
        default=0.05,
        help="skip an image that is nearly the same as one chosen already: closer than this in the embedding space "
        "(0 to 2; the default skips copies; distinct HC18 images lay 0.18 or more apart, an image and its mirror "
        "image 0.11) (default: 0.05)",
    )
    suggest.add_argument(
        "--method",
        choices=("typical", "kcenter", "cover"),
        help="typical (the default): the most central image of each of n k-means clusters; kcenter: each next image "
        "the farthest from those chosen; cover: each next image the one whose neighbourhood holds the most images not "
        "yet covered. Cannot be combined with --model, which lists where the model is unsure, by k-center from the "
        "boxed images",
    )
    suggest.add_argument(
        "--model",
        type=Path,
        help="where the model is unsure: a model autoprompt train wrote from DATA's boxes; lists the unboxed images "
        "(slices) its runs disagree on, or whose box breaks the volume's sequence, to review (default -o: DATA/next; "
        "on real HC18, boxing these did worse than boxing as many at random: docs/own-data.md)",
    )
    suggest.add_argument(
        "--boxes",
        type=Path,
        help="with --model: the boxes drawn so far, as train reads them (default: as train finds them)",
    )
    suggest.add_argument("--label", help="with --model: the boxes' label, where --boxes is a labelled export")
    suggest.add_argument("--class", dest="class_name", help="the box's label in Label Studio (default: structure)")
    suggest.add_argument(
        "--studio-root", type=Path, help="Label Studio's local files root, for the tasks' URLs (default: OUTPUT)"
    )
    suggest.add_argument(
        "--backbone", choices=("lite_medsam", "medsam_vit_b"), help="the encoder (default: lite_medsam, as train)"
    )
    suggest.add_argument("--checkpoint", type=Path, help="medsam_vit_b.pth, for --backbone medsam_vit_b")
    suggest.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1, ...")
    suggest.add_argument("--threads", type=threads, help="CPU threads (default: all)")
    suggest.add_argument(
        "--params", type=Path, help="a params file: its folder section and encode section (with --model: train's)"
    )
    suggest.add_argument(
        "--exact",
        action="store_true",
        help="encode as train --exact does (default: as train does by default, so that train reuses the embeddings)",
    )
    suggest.set_defaults(handler=suggest_command)

    predict = command(
        commands,
        "predict",
        "segment images and volumes with a trained model; each mask on its input's own grid",
        "autoprompt predict -m my-scans.pt -i my-scans/images -o masks --report",
    )
    predict.add_argument("-m", "--model", type=Path, required=True, help=MODEL_HELP)
    predict.add_argument("-i", "--input", type=Path, nargs="+", required=True, help="image files or folders")
    predict.add_argument("-o", "--output", type=Path, required=True, help="folder for the masks")
    predict.add_argument("--report", action="store_true", help="also write OUTPUT/report.html, worst inputs first")
    predict.add_argument("--masks", type=Path, help="for the report: a folder of reference masks (Dice per input)")
    predict.add_argument("--boxes", type=Path, help="for the report: boxes.csv or a JSON export (box agreement)")
    predict.add_argument("--label", help="the label of --boxes to read, where a JSON export holds several")
    predict.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1, ...")
    predict.add_argument("--batch-size", type=positive, default=8, help="slices per encoder call")
    predict.add_argument("--threshold", type=probability, default=0.5, help="probability threshold of the masks")
    predict.add_argument("--probabilities", action="store_true", help="write float32 probabilities, not masks")
    predict.add_argument(
        "--output-format",
        choices=("auto", "dicom-seg", "nifti"),
        default="auto",
        help="a DICOM series' mask: a DICOM SEG of the series (auto, dicom-seg; fractional with --probabilities) or "
        "NIfTI; other inputs keep their format",
    )
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
    predict.add_argument("--runtime-cache", type=Path, help="converted encoders (default: ~/.cache/autoprompt)")
    predict.add_argument("--threads", type=threads, help="CPU threads (default: all); the same count, the same masks")
    predict.add_argument(
        "--exact",
        action="store_true",
        help="float32 as the pipeline computes, the same masks on any machine of this CPU kind for the same --threads, "
        "about 2.5x slower (default: this CPU's fastest path, bfloat16 where it has AVX-512 BF16 or AMX, "
        "float32 elsewhere; its masks may differ slightly on another CPU; recorded in OUTPUT/predict.json; "
        "AUTOPROMPT_NUMERICS=exact makes --exact the default)",
    )
    reprompting = predict.add_mutually_exclusive_group()
    reprompting.add_argument(
        "--no-reprompt",
        action="store_true",
        help="keep the heads' masks (default: re-prompt with the model's margin and box threshold)",
    )
    reprompting.add_argument(
        "--reprompt-margin",
        type=fraction,
        help="prompt the decoder again with each mask's box (at the mask threshold, instead of the model's box "
        "threshold), each side moved out by this fraction of the box",
    )
    reprompting.add_argument(
        "--reprompt-from",
        type=Path,
        metavar="METRICS_JSON",
        help="the margin that the pipeline's evaluate stage chose for the model's recipe (a run folder's model)",
    )
    fitting = predict.add_mutually_exclusive_group()
    fitting.add_argument(
        "--volume-min-iou",
        type=unit,
        help="volumes: a slice whose mask's box overlaps neither neighbour's by this (box IoU), or whose mask is "
        "empty between two found ones, is prompted again with the box between theirs; 0 fills gaps only. Needs "
        "re-prompting (default: the value recorded at training; 0.5 for a model that holds none)",
    )
    fitting.add_argument(
        "--no-volume-fit",
        action="store_true",
        help="volumes: leave each slice's re-prompted mask as it is (without re-prompting, nothing is fitted)",
    )
    predict.add_argument(
        "--no-presence",
        action="store_true",
        help="keep every slice's mask (default: the model's presence rule empties the slices, from each end of a "
        "volume in, and the 2D images that it judges not to hold the structure; the log lists them)",
    )
    predict.add_argument("--part-id", type=int, default=0, help="this process's part of the inputs (0-based)")
    predict.add_argument("--num-parts", type=positive, default=1, help="parts the inputs are split into")
    predict.set_defaults(handler=predict_command)

    evaluate = command(
        commands,
        "evaluate",
        "score predicted masks against reference masks: Dice, NSD and HD95 in mm from each file's own spacing",
        "autoprompt evaluate --pred masks --masks my-scans/masks --boxes my-scans/boxes.csv",
    )
    evaluate.add_argument("--pred", type=Path, required=True, help="autoprompt predict's output folder")
    evaluate.add_argument("--masks", type=Path, required=True, help="the reference masks (non-zero is the structure)")
    evaluate.add_argument("--boxes", type=Path, help="the training boxes: their images are left out of the scores")
    evaluate.add_argument("-o", "--output", type=Path, help="per-image CSV to write (default: PRED/evaluation.csv)")
    evaluate.add_argument("--tolerance", type=millimetres, default=2.0, help="NSD tolerance in mm")
    evaluate.add_argument(
        "--threshold", type=probability, default=0.5, help="where predictions are probabilities: the cut"
    )
    evaluate.set_defaults(handler=evaluate_command)

    export = command(
        commands,
        "export",
        "write a run or a folder of runs (an ensemble) to one model file",
        "autoprompt export -m models/hc18/augmented/fewshot -o hc18.pt",
    )
    export.add_argument("-m", "--model", type=Path, required=True, help=MODEL_HELP)
    export.add_argument("-o", "--output", type=Path, required=True, help="model file to write (model.pt)")
    export.set_defaults(handler=export_command)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.handler(args)


def entry() -> None:
    """The console script: the CPU code paths pinned before torch loads (unless the command runs on the fast path),
    then ``main`` with one-line errors."""
    import sys

    known, _ = build_parser().parse_known_args(sys.argv[1:])
    if _numerics_mode(known) == "exact":
        pin_code_paths()
    from autoprompt.console import run

    run(main)


if __name__ == "__main__":
    entry()
