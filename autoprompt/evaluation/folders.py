"""``autoprompt evaluate``: a folder of predicted masks against a folder of reference masks, on each file's own grid.

Each reference mask (non-zero is the structure) is paired with the prediction of the same name (``predict`` writes
pictures as PNG: ``img.jpg``'s mask is ``img.png``); images whose box trained the model (``boxes``) are left out.
Per image: Dice, the normalised surface Dice at ``tolerance`` mm and the 95th-percentile Hausdorff distance in mm,
from the file's own spacing (a volume is scored whole, in 3D; pictures carry no spacing: 1 pixel is 1 mm); a DICOM
SEG on the grid of the file it is paired with (``_pair_grid``). A prediction of probabilities is cut at
``threshold``. Each image also counts its false slices (a mask where the reference is empty) and missed slices (no
mask where it is not; a picture is one slice: ``autoprompt.evaluation.volumes.slice_counts``). Writes a CSV (one row
per image) and a JSON summary beside it, and logs one summary line. Refused in one line: a reference without a
prediction, a prediction on another grid (size, spacing, origin or direction: ``check_same_grid``), and an output
that would replace a mask, the boxes, or a file that evaluate did not write.
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
from autoprompt.data.dicom import is_seg_file, read_seg
from autoprompt.data.folder import case_name, find_mask, mask_files
from autoprompt.data.images import read_image
from autoprompt.errors import InputError
from autoprompt.evaluation.metrics import MISS
from autoprompt.evaluation.surface import hd95, nsd, summarize_finite
from autoprompt.evaluation.volumes import slice_counts
from autoprompt.io import atomic_path, write_text
from autoprompt.outputs import refuse_foreign, refuse_overlap

log = logging.getLogger(__name__)


GRID_TOLERANCE = 1e-3  # of a voxel's side (spacing, origin) and of a direction cosine: files' rounding, not a shift
COLUMNS = ("image", "dice", "nsd", "hd95_mm")  # the first columns of the CSV it writes


def _mask(path: Path, threshold: float, grid: sitk.Image | None = None) -> tuple[np.ndarray, sitk.Image]:
    """A mask file as booleans in numpy's layout ((z,) y, x), and the image it was read as (its grid); a DICOM SEG
    on ``grid`` where one is given (``_pair_grid``)."""
    image = read_seg(path, grid) if grid is not None and is_seg_file(path) else read_image(path)
    array = sitk.GetArrayFromImage(image)
    mask = array > threshold if array.dtype.kind == "f" else array != 0
    return mask, image


def check_same_grid(prediction: sitk.Image, reference: sitk.Image, predicted: Path, reference_path: Path) -> None:
    """Refuse a prediction whose voxels are not the reference's: another size, spacing, origin or direction (beyond
    ``GRID_TOLERANCE``). Scored as if aligned, such a pair gives distances in the wrong millimetres."""
    if prediction.GetSize() != reference.GetSize():
        raise InputError(
            f"{predicted}: size {prediction.GetSize()} differs from its reference {reference_path.name}'s "
            f"{reference.GetSize()}; predict the image the mask was drawn on"
        )
    side = np.asarray(reference.GetSpacing(), float)
    checks = (
        ("spacing", prediction.GetSpacing(), reference.GetSpacing(), GRID_TOLERANCE * side),
        ("origin", prediction.GetOrigin(), reference.GetOrigin(), GRID_TOLERANCE * side.min()),
        ("direction", prediction.GetDirection(), reference.GetDirection(), GRID_TOLERANCE),
    )
    for what, found, expected, tolerance in checks:
        if not np.all(np.abs(np.subtract(found, expected)) <= tolerance):
            shown = ", ".join(f"{v:g}" for v in found), ", ".join(f"{v:g}" for v in expected)
            raise InputError(
                f"{predicted}: its {what} ({shown[0]}) differs from its reference {reference_path.name}'s "
                f"({shown[1]}); predict the image the reference was drawn on, which writes each mask on its grid"
            )


def _is_own_csv(path: Path) -> bool:
    """Whether ``path`` is a table that ``evaluate_folder`` wrote (its header's first columns)."""
    try:
        with Path(path).open(encoding="utf-8") as handle:
            return tuple(handle.readline().strip().split(",")[: len(COLUMNS)]) == COLUMNS
    except (OSError, UnicodeDecodeError):
        return False


def _is_own_summary(path: Path) -> bool:
    """Whether ``path`` is a summary that ``evaluate_folder`` wrote."""
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(summary, dict) and {"images", "grid", "dice"} <= summary.keys()


def _pair_grid(prediction: Path, reference: Path) -> sitk.Image | None:
    """The grid that the DICOM SEG files of a pair are read on (None where neither is one): the other file's, or,
    both being SEG, the first that covers its volume whole (``predict`` writes every frame; other tools leave out
    the empty ones, and such a SEG alone does not say where its volume ends)."""
    seg = {path: is_seg_file(path) for path in (prediction, reference)}
    if not any(seg.values()):
        return None
    for path, is_seg in seg.items():
        if not is_seg:
            return read_image(path)
    try:
        return read_image(prediction)
    except InputError:
        return read_image(reference)


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


def _check_outputs(output: Path, pairs: list[tuple[Path, Path]], boxes: Path | None) -> None:
    """The CSV and its JSON summary may replace only their own earlier versions, never a mask or the boxes."""
    inputs: dict[str, Path | list[Path]] = {"reference": [r for r, _ in pairs], "prediction": [p for _, p in pairs]}
    if boxes is not None:
        inputs["--boxes"] = Path(boxes)
    fix = "give a new file name, e.g. -o evaluation.csv"
    refuse_overlap({"-o": output, "its summary": output.with_suffix(".json")}, inputs, fix)
    refuse_foreign(output, _is_own_csv, "table of autoprompt evaluate", fix)
    refuse_foreign(output.with_suffix(".json"), _is_own_summary, "summary of autoprompt evaluate", fix)


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
    if not tolerance > 0:
        raise InputError(f"--tolerance {tolerance}: give the NSD tolerance in mm, above 0")
    if not 0 <= threshold <= 1:
        raise InputError(f"--threshold {threshold}: give a probability from 0 to 1")
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
    pairs = []
    for stem, paths in sorted(references.items()):
        if stem in trained:
            continue
        predicted = find_mask(found, paths[0])
        if predicted is None:
            raise InputError(f"{predictions}: no prediction for {paths[0].name}; run autoprompt predict on it")
        pairs.append((paths[0], predicted))
    output = Path(output) if output is not None else predictions / "evaluation.csv"
    _check_outputs(output, pairs, boxes)
    rows = []
    for reference_path, predicted in pairs:
        grid = _pair_grid(predicted, reference_path)
        reference, reference_image = _mask(reference_path, 0.5, grid)
        prediction, prediction_image = _mask(predicted, threshold, grid)
        check_same_grid(prediction_image, reference_image, predicted, reference_path)
        spacing = tuple(float(s) for s in reversed(reference_image.GetSpacing()))
        scores = score_pair(prediction, reference, spacing, tolerance)
        false, missed = slice_counts(prediction, reference)
        rows.append({"image": reference_path.name, **scores, "reference_voxels": int(reference.sum()),
                     "predicted_voxels": int(prediction.sum()), "false_slices": false,
                     "missed_slices": missed})  # fmt: skip
    if not rows:
        raise InputError(f"{masks}: every mask's image trained the model ({boxes}); nothing left to score")
    table = pd.DataFrame(rows)
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
