"""``autoprompt evaluate``: a folder of predicted masks against a folder of reference masks, on each file's own grid.

Each reference mask (non-zero is the structure) is paired with the prediction of the same name (``predict`` writes
pictures as PNG: ``img.jpg``'s mask is ``img.png``); images whose box trained the model (``boxes``) are left out.
Per image: Dice, the normalised surface Dice at ``tolerance`` mm and the 95th-percentile Hausdorff distance in mm,
from the file's own spacing (a volume is scored whole, in 3D; pictures carry no spacing: 1 pixel is 1 mm). A
prediction of probabilities is cut at ``threshold``. Each image also counts its false slices (a mask where the
reference is empty) and missed slices (no mask where it is not; a picture is one slice:
``autoprompt.evaluation.volumes.slice_counts``). Writes a CSV (one row per image) and a JSON summary beside it,
and logs one summary line; a reference without a prediction, or on another grid, is refused in one line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

from autoprompt.data.boxes import read_boxes
from autoprompt.data.folder import case_name, find_mask, mask_files
from autoprompt.data.images import read_image
from autoprompt.errors import InputError
from autoprompt.evaluation.metrics import MISS
from autoprompt.evaluation.surface import hd95, nsd, summarize_finite
from autoprompt.evaluation.volumes import slice_counts
from autoprompt.io import atomic_path, write_text

log = logging.getLogger(__name__)


def _mask(path: Path, threshold: float) -> tuple[np.ndarray, tuple[float, ...]]:
    """A mask file as booleans in numpy's layout ((z,) y, x), and its spacing in the same order (mm)."""
    image = read_image(path)
    array = sitk.GetArrayFromImage(image)
    mask = array > threshold if array.dtype.kind == "f" else array != 0
    return mask, tuple(float(s) for s in reversed(image.GetSpacing()))


def score_pair(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...], tolerance: float) -> dict:
    """Dice (%), NSD (%) and HD95 (mm) of one prediction against its reference, both of one shape."""
    total = int(prediction.sum() + reference.sum())
    dice = 100.0 if total == 0 else 200.0 * float((prediction & reference).sum()) / total
    pred, ref = torch.from_numpy(prediction[None]), torch.from_numpy(reference[None])
    space = torch.tensor([spacing], dtype=torch.float64)
    return {
        "dice": dice,
        "nsd": 100.0 * float(nsd(pred, ref, space, tolerance)[0]),
        "hd95_mm": float(hd95(pred, ref, space)[0]),
    }


def evaluate_folder(
    predictions: Path,
    masks: Path,
    output: Path | None = None,
    tolerance: float = 2.0,
    boxes: Path | None = None,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """Score every reference mask in ``masks`` that trained nothing (see the module's docstring); returns the
    per-image table, written to ``output`` (default ``predictions/evaluation.csv``) with a JSON summary beside it."""
    predictions, masks = Path(predictions), Path(masks)
    for folder, what in ((predictions, "--pred: the folder autoprompt predict wrote"),
                         (masks, "--masks: the folder of reference masks")):  # fmt: skip
        if not folder.is_dir():
            state = "not a folder" if folder.exists() else "folder not found"
            raise InputError(f"{folder}: {state}; give {what}")
    references = mask_files(masks)
    if not references:
        raise InputError(f"{masks}: no mask files in this folder; give the folder of reference masks")
    trained: set[str] = set()
    if boxes is not None:
        images = masks.parent / "images" if (masks.parent / "images").is_dir() else Path(boxes).parent / "images"
        trained = {case_name(Path(name)) for name in read_boxes(Path(boxes), images)}
    found = {stem: paths for stem, paths in mask_files(predictions).items() if not stem.endswith("_overlay")}
    rows = []
    for stem, paths in sorted(references.items()):
        if stem in trained:
            continue
        reference_path = paths[0]
        predicted = find_mask(found, reference_path)
        if predicted is None:
            raise InputError(f"{predictions}: no prediction for {reference_path.name}; run autoprompt predict on it")
        reference, spacing = _mask(reference_path, 0.5)
        prediction, _ = _mask(predicted, threshold)
        if prediction.shape != reference.shape:
            raise InputError(
                f"{predicted}: shape {prediction.shape} differs from its reference's {reference.shape}; predict the "
                "image the mask was drawn on"
            )
        scores = score_pair(prediction, reference, spacing, tolerance)
        false, missed = slice_counts(prediction, reference)
        rows.append({"image": reference_path.name, **scores, "reference_voxels": int(reference.sum()),
                     "predicted_voxels": int(prediction.sum()), "false_slices": false,
                     "missed_slices": missed})  # fmt: skip
    if not rows:
        raise InputError(f"{masks}: every mask's image trained the model ({boxes}); nothing left to score")
    table = pd.DataFrame(rows)
    output = Path(output) if output is not None else predictions / "evaluation.csv"
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    dice = table["dice"].to_numpy()
    summary = {
        "images": len(table),
        "grid": "each file's own grid and spacing (pictures: 1 pixel = 1 mm)",
        "nsd_tolerance_mm": tolerance,
        "dice": {
            "mean": round(float(dice.mean()), 4),
            "median": round(float(np.median(dice)), 4),
            "std": round(float(dice.std()), 4),
        },
        "nsd": {"mean": round(float(table["nsd"].mean()), 4)},
        "hd95_mm": summarize_finite(table["hd95_mm"].to_numpy()),
        "misses": {
            "below_50_dice": int((dice < MISS).sum()),
            "empty": int(((table["predicted_voxels"] == 0) & (table["reference_voxels"] > 0)).sum()),
        },
        "slices": {"false": int(table["false_slices"].sum()), "missed": int(table["missed_slices"].sum())},
    }
    write_text(output.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    log.info(
        "%d images: Dice %.2f (median %.2f), NSD %.2f at %g mm, HD95 %.2f mm; %d under %g Dice, %d empty; "
        "slices: %d false (a mask where the reference is empty), %d missed; wrote %s",
        len(table), summary["dice"]["mean"], summary["dice"]["median"], summary["nsd"]["mean"], tolerance,
        summary["hd95_mm"]["mean"], summary["misses"]["below_50_dice"], MISS, summary["misses"]["empty"],
        summary["slices"]["false"], summary["slices"]["missed"], output,
    )  # fmt: skip
    return table
