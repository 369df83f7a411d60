"""Whole volumes as users have them: every slice, the structure's or not, scored per volume.

The paper's protocol scores only the slices that hold the structure, so a model is never asked whether it is there.
Here a volume's slices are stacked in slice order and scored in 3D (Dice, HD95 and NSD with the slices' own
thickness), with the slices a user would have to clean by hand: *false* slices (a mask where the reference is
empty) and *missed* ones (no mask where it is not).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from autoprompt.evaluation.metrics import summarize
from autoprompt.evaluation.surface import hd95, nsd, summarize_finite


def slice_counts(prediction: np.ndarray | Tensor, reference: np.ndarray | Tensor) -> tuple[int, int]:
    """(false, missed) slices of a Z x H x W prediction against its reference (a 2D H x W image is one slice):
    false, a mask where the reference is empty; missed, no mask where the reference has one."""
    pred, ref = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    assert pred.shape == ref.shape and pred.ndim in (2, 3), f"prediction {pred.shape} vs reference {ref.shape}"
    if pred.ndim == 2:
        pred, ref = pred[None], ref[None]
    found, present = pred.reshape(len(pred), -1).any(1), ref.reshape(len(ref), -1).any(1)
    return int((found & ~present).sum()), int((~found & present).sum())


def volume_scores(
    pred: Tensor,
    truth: Tensor,
    volumes: list[Tensor],
    spacing: Tensor,
    thickness: Tensor,
    tolerance_mm: float,
) -> list[dict]:
    """N x S x S boolean predictions and references of N slices; ``volumes``: each volume's rows in slice order;
    ``spacing``: N x 2 pixel spacings (mm); ``thickness``: N slice spacings (mm) -> per volume: 3D Dice (%), HD95
    (mm, NaN where exactly one is empty), NSD (%), false and missed slices, and its slice count."""
    out = []
    for rows in volumes:
        p, t = pred[rows].bool(), truth[rows].bool()
        total = int(p.sum() + t.sum())
        space = torch.tensor([[float(thickness[rows[0]]), *spacing[rows[0]].tolist()]], dtype=torch.float64)
        false, missed = slice_counts(p.numpy(), t.numpy())
        out.append(
            {
                "dice_3d": 100.0 if total == 0 else 200.0 * float((p & t).sum()) / total,
                "hd95_mm": float(hd95(p[None], t[None], space)[0]),
                "nsd": 100.0 * float(nsd(p[None], t[None], space, tolerance_mm)[0]),
                "false_slices": false,
                "missed_slices": missed,
                "slices": len(rows),
            }
        )
    return out


def summarize_volumes(scores: list[dict]) -> dict[str, dict]:
    """Metric -> summary over volumes (``whole_dice_3d``, ``whole_hd95_mm``, ``whole_nsd``: mean ± std; HD95 over
    the volumes where it is defined) and the totals of false and missed slices (``slices``: how many in all), the
    layout of one row in ``metrics/<task>.json``."""
    out = {
        "whole_dice_3d": summarize([s["dice_3d"] / 100 for s in scores]),
        "whole_hd95_mm": summarize_finite([s["hd95_mm"] for s in scores]),
        "whole_nsd": summarize([s["nsd"] / 100 for s in scores]),
        "slices": {
            "false": sum(s["false_slices"] for s in scores),
            "missed": sum(s["missed_slices"] for s in scores),
            "n": sum(s["slices"] for s in scores),
            "volumes": len(scores),
        },
    }
    for value in out.values():
        value["over"] = "volumes"
    return out


def summarize_volume_runs(runs: list[list[dict]]) -> dict[str, dict]:
    """``summarize_volumes``'s layout for a group of runs (each a list of per-volume scores): mean ± std over runs of
    each run's mean over volumes, and the mean count of false and missed slices per run."""
    per_run = [summarize_volumes(scores) for scores in runs]
    out = {
        "whole_dice_3d": summarize([r["whole_dice_3d"]["mean"] / 100 for r in per_run]),
        "whole_hd95_mm": summarize_finite([r["whole_hd95_mm"]["mean"] for r in per_run]),
        "whole_nsd": summarize([r["whole_nsd"]["mean"] / 100 for r in per_run]),
        "slices": {
            "false": round(float(np.mean([r["slices"]["false"] for r in per_run])), 4),
            "missed": round(float(np.mean([r["slices"]["missed"] for r in per_run])), 4),
            "n": per_run[0]["slices"]["n"],
            "volumes": per_run[0]["slices"]["volumes"],
        },
    }
    for value in out.values():
        value["over"] = "runs"
    return out
