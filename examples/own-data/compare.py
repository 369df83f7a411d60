"""Score ``autoprompt predict``'s masks against the folder's own masks, on each image's original grid.

Dice (%) per image for every image that has a mask and was not a training image (no row in ``boxes.csv``);
writes the mean, median and spread to a metrics JSON and the per-image values to a CSV.

    python compare.py --dataset data/raw/fetal-head --predictions predictions/fetal-head --metrics metrics/compare.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from autoprompt.console import run
from autoprompt.errors import InputError
from autoprompt.inference.files import output_name
from autoprompt.io import atomic_path, write_text

log = logging.getLogger("compare")


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    total = prediction.sum() + truth.sum()
    return 100.0 if total == 0 else float(200 * np.logical_and(prediction, truth).sum() / total)


def compare(dataset: Path, predictions: Path) -> pd.DataFrame:
    """One row per scored image: its name, Dice (%) on the image's own grid and the mask's foreground pixels."""
    trained = set(pd.read_csv(dataset / "boxes.csv")["image"])
    rows = []
    for mask_path in sorted((dataset / "masks").iterdir()):
        if mask_path.name in trained:
            continue
        predicted = predictions / output_name(Path(mask_path.name), probabilities=False)
        if not predicted.is_file():
            raise InputError(f"{predicted}: no prediction for {mask_path.name}; run autoprompt predict first")
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(predicted))) > 0
        if prediction.shape != truth.shape:
            raise InputError(f"{predicted}: shape {prediction.shape} differs from its mask's {truth.shape}")
        rows.append({"image": mask_path.name, "dice": dice(prediction, truth), "foreground": int(truth.sum())})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="the folder dataset (images/, masks/, boxes.csv)")
    parser.add_argument("--predictions", type=Path, required=True, help="autoprompt predict's output folder")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--per-image", type=Path, required=True, help="per-image CSV to write")
    args = parser.parse_args(argv)
    table = compare(args.dataset, args.predictions)
    values = table["dice"].to_numpy()
    summary = {
        "images": len(table),
        "grid": "each image's original grid (predict's output against masks/)",
        "dice": {
            "mean": round(float(values.mean()), 4),
            "std": round(float(values.std()), 4),
            "median": round(float(np.median(values)), 4),
            "below_80": int((values < 80).sum()),
            "below_80_smaller_than_median": int(
                ((values < 80) & (table["foreground"] < table["foreground"].median())).sum()
            ),
        },
    }
    write_text(args.metrics, json.dumps(summary, indent=2) + "\n")
    with atomic_path(args.per_image) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    log.info("original-grid Dice, %d images: mean %.2f, median %.2f", len(table), values.mean(), np.median(values))


if __name__ == "__main__":
    run(main)
