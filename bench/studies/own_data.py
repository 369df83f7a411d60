"""Ten boxes in, masks out, on real images: the own-data commands end to end on the HC18 sample, timed.

The sample is laid out as a user's folder by ``examples/own-data/gather.py`` (each subject's first image, the
walkthrough's ten boxes, masks from the annotated outlines). Then, as a user would type them, on 2 threads:
``autoprompt train`` (``examples/own-data/params.yaml``: LiteMedSAM, the augmented recipe, three runs, the margin
chosen on the training boxes), ``autoprompt predict`` on every image, ``autoprompt evaluate`` on the images that did
not train (Dice, NSD, HD95 on each image's own grid). Each command's wall time is measured once, from a work folder
left empty (``--fresh``, which also empties torch.compile's kernel cache: a first call) or as the last call left it.
``train`` and ``predict`` run on their default, fast CPU numerics, or with ``--exact`` on the pipeline's path
(``autoprompt.device.Numerics``); ``own_data.json`` and ``own_data_exact.json`` hold one each.

Beside the model's own margin (and box threshold), on the same images and the same encoded slices: the heads' masks
not re-prompted, re-prompted from the masks' boxes at ``reprompt.fallback`` (0.1), and the backbone prompted with each
image's tight box (the box of its
mask in the prepared frame): what the margin chosen from boxes alone is worth against the fixed fallback.

    python -m bench.studies.own_data [--hc18 ../shared/data/hc18-sample] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from bench.lib import common

log = logging.getLogger("bench.own_data")

WALKTHROUGH = common.REPO / "examples" / "own-data"
THREADS = 2


def command(*argv: object, env: dict | None = None) -> float:
    """Run one ``autoprompt`` command (or a script) as a user would; its wall seconds."""
    start = time.perf_counter()
    subprocess.run([str(a) for a in argv], check=True, cwd=common.REPO, env=env)
    return time.perf_counter() - start


def variants(model_path: Path, data: Path, names: list[str], fallback: float) -> dict:
    """Dice (%) on each image's own grid of the model's margin, no re-prompting, the fallback margin and the tight
    box, all from one encoding of each image."""
    from autoprompt.data.images import as_stack, frame_slices, read_image, to_input_grid
    from autoprompt.data.preprocess import fit_label, tight_box
    from autoprompt.evaluation.metrics import mask_dice
    from autoprompt.inference import load_model
    from autoprompt.inference.predictor import Predictor
    from autoprompt.inference.reprompt import reprompt
    from autoprompt.model.decoding import decode

    model = load_model(model_path)
    device = torch.device("cpu")
    predictor = Predictor(model, device, batch_size=8, cache_dir=common.BENCH / ".work" / "runtimes")
    size, margins = model.label_size, {"model_margin": model.reprompt_margin, "fallback": fallback}
    cores = {"model_margin": model.reprompt_box_threshold, "fallback": None}  # a margin set: the masks' own boxes
    scores: dict[str, list[float]] = {"not_reprompted": [], "model_margin": [], "fallback": [], "tight_box": []}
    for name in names:
        image = read_image(data / "images" / name)
        reference = sitk.GetArrayFromImage(read_image(data / "masks" / name)) > 0
        stack = as_stack(image)
        framed = frame_slices(stack, model.preprocessing)
        embeddings = predictor.encode(framed.slices)
        heads = sum(decode(predictor.decoder, embeddings, size, 8, device, head=h) for h in predictor.heads)
        heads = heads / len(predictor.heads)
        label = fit_label(reference.astype(np.uint8), size, framed.geometries[0])
        box = torch.tensor([tight_box(label > 0)])
        frames = {
            "not_reprompted": heads,
            "tight_box": decode(predictor.decoder, embeddings, size, 8, device, boxes=box),
        }
        for key, margin in margins.items():
            again = margin is not None
            frames[key] = (
                reprompt(predictor.decoder, embeddings, heads, margin, 0.5, 8, device, box_threshold=cores[key])
                if again
                else heads
            )
        for key, frame in frames.items():
            grid = to_input_grid(frame.numpy().astype(np.float32), framed, stack)
            scores[key].append(100.0 * mask_dice(grid > 0.5, reference))
    return {key: {"mean": round(float(np.mean(v)), 2), "median": round(float(np.median(v)), 2),
                  "below_50": int((np.array(v) < 50).sum())} for key, v in scores.items()}  # fmt: skip


FIGURE = common.REPO / "docs" / "figures" / "own-data-hc18.jpg"


def figure(data: Path, predictions: Path, table: Path, out: Path = FIGURE) -> Path:
    """A strip of eight test images, from the worst Dice to the best: the predicted mask's outline in red, the
    reference's in green."""
    import cv2
    import pandas as pd

    scores = pd.read_csv(table).sort_values("dice").reset_index(drop=True)
    picks = scores.iloc[np.linspace(0, len(scores) - 1, 8).round().astype(int)]
    tiles = []
    for _, row in picks.iterrows():
        image = cv2.imread(str(data / "images" / row["image"]), cv2.IMREAD_GRAYSCALE)
        picture = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        for path, colour in ((data / "masks" / row["image"], (0, 200, 0)), (predictions / row["image"], (0, 0, 255))):
            mask = (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(picture, contours, -1, colour, 3)
        picture = cv2.resize(picture, (320, 216), interpolation=cv2.INTER_AREA)  # HC18's 800 x 540, most of them
        cv2.putText(picture, f"Dice {row['dice']:.1f}", (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        tiles.append(picture)
    strip = np.vstack([np.hstack(tiles[:4]), np.hstack(tiles[4:])])
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), strip, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hc18", type=Path, default=common.DEFAULT_HC18, help="the HC18 sample (official layout)")
    parser.add_argument("--work", type=Path, default=common.BENCH / ".work" / "own_data")
    parser.add_argument("--fresh", action="store_true", help="start from an empty work folder (times a first run)")
    parser.add_argument("--exact", action="store_true", help="train and predict with --exact (the pipeline's numerics)")
    parser.add_argument(
        "--self-training", action="store_true", help="train with --self-training (a second round on the unboxed images)"
    )
    parser.add_argument(
        "--name", help="results file bench/results/<name>.json (default: own_data[_exact][_self_training])"
    )
    args, machine = common.parse_and_start(parser)
    args.name = args.name or "own_data" + ("_exact" if args.exact else "") + (
        "_self_training" if args.self_training else ""
    )
    if not (args.hc18 / "training_set").is_dir():
        raise SystemExit(f"{args.hc18}: real HC18 sample not found (no training_set/); pass --hc18 PATH")
    work = args.work.resolve()
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = common.numerics_env(False, TORCHINDUCTOR_CACHE_DIR=str(work / "inductor"))  # --fresh: an empty cache
    exact = ["--exact"] if args.exact else []
    second = ["--self-training"] if args.self_training else []
    data, model, predictions = work / "fetal-head", work / "fetal-head.pt", work / "predictions"
    if not data.exists():
        command(sys.executable, WALKTHROUGH / "gather.py", "--hc18", args.hc18.resolve(), "--boxes",
                WALKTHROUGH / "boxes.csv", "--out", data)  # fmt: skip
    autoprompt = Path(sys.executable).with_name("autoprompt")
    train = [autoprompt, "train", data, "-o", model, "--params", WALKTHROUGH / "params.yaml", "--class", "head"]
    predict = [autoprompt, "predict", "-m", model, "-i", data / "images", "-o", predictions, "--overwrite"]
    evaluate = [autoprompt, "evaluate", "--pred", predictions, "--masks", data / "masks", "--boxes", data / "boxes.csv"]
    seconds = {
        "train": command(*train, "--threads", THREADS, *exact, *second, env=env),
        "predict": command(*predict, "--threads", THREADS, "--report", "--masks", data / "masks", *exact, env=env),
        "evaluate": command(*evaluate),
    }
    evaluation = json.loads((predictions / "evaluation.json").read_text())
    table = predictions / "evaluation.csv"
    names = [line.split(",")[0] for line in table.read_text().splitlines()[1:]]
    from autoprompt.inference import load_model
    from autoprompt.settings import load_settings

    torch.set_num_threads(THREADS)
    trained = load_model(model)
    fallback = load_settings(WALKTHROUGH / "params.yaml").reprompt.fallback
    compared = variants(model, data, names, fallback)
    if args.name == "own_data":  # the README's figure: the default variant's model only
        figure(data, predictions, table)
    log.info("own data: %s; seconds %s", compared, seconds)
    common.write_result(
        args.name,
        {
            "what": "autoprompt train on the walkthrough's ten boxes of the real HC18 sample, predict on every image, "
            "evaluate on the images that did not train (each image's own grid); Dice (%) of the model's margin "
            "against no re-prompting, the fixed fallback margin and the tight-box prompt, on the same images",
            "settings": {
                "params": "examples/own-data/params.yaml",
                "threads": THREADS,
                "fresh": args.fresh,
                "numerics": "exact (--exact)" if args.exact else "fast (the default)",
                "self_training": args.self_training,
            },
            "provenance": json.loads((predictions / "predict.json").read_text()),
            "model": {
                "runs": len(trained.heads),
                "margin": trained.reprompt_margin,
                "box_threshold": trained.reprompt_box_threshold,
                "how": trained.reprompt_how,
                "self_training": trained.configs[0].get("self_training"),
            },
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "evaluate": evaluation,
            "dice_by_variant": compared,
            "machine": machine,
        },
    )


if __name__ == "__main__":
    main()
