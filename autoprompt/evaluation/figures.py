"""Figures people look at rather than read: example predictions, and Dice against the paper."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

FIXED_COLOURS = {"ground truth": "lime", "tight_box": "deepskyblue"}
OTHER_COLOURS = ("red", "orange", "magenta", "yellow", "white")


def colours(names: list[str]) -> dict[str, str]:
    """A colour per contour: fixed ones for the ground truth and the tight box, the others in turn."""
    others = iter(OTHER_COLOURS * len(names))
    return {name: FIXED_COLOURS.get(name) or next(others) for name in names}


def examples(path: Path, images: Tensor, truth: Tensor, predictions: dict[str, Tensor], title: str) -> None:
    """A grid of test images (N x S x S uint8): one row per method, one column per image, each panel with the
    contour of the ground truth and of that method's mask (N x S x S bool)."""
    count, rows = len(images), max(len(predictions), 1)
    palette = colours(["ground truth", *predictions])
    fig, axes = plt.subplots(rows, count, figsize=(2.4 * count + 1.6, 2.4 * rows + 0.6), squeeze=False)
    for r, (name, masks) in enumerate(predictions.items() or [("", truth[:0])]):
        for i, ax in enumerate(axes[r]):
            ax.imshow(images[i].numpy(), cmap="gray", vmin=0, vmax=255)
            for label, mask in (("ground truth", truth[i]), (name, masks[i] if len(masks) else None)):
                if mask is not None and mask.any():
                    ax.contour(mask.numpy().astype(float), levels=[0.5], colors=palette[label], linewidths=1.2)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name.replace("_", " ").replace("/", "\n"), fontsize=8)
    fig.suptitle(f"{title}: test images, ground truth in {palette['ground truth']}")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)


def dice_bars(path: Path, rows: list[dict]) -> None:
    """Test Dice per task column, one horizontal bar pair per method: ours (with the std over runs) and the
    paper's (faded). Methods with no value of ours are left out.

    ``rows``: dicts with ``column``, ``method``, ``ours`` (mean, std or None) and ``paper`` (mean, std or None).
    """
    columns = list(dict.fromkeys(r["column"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["ours"] is not None))
    height = 0.38
    fig, axes = plt.subplots(
        1, len(columns), figsize=(2.6 * len(columns) + 3.2, 0.32 * len(methods) + 1.4), sharey=True, squeeze=False
    )
    y = np.arange(len(methods))
    for ax, column in zip(axes[0], columns, strict=True):
        for s, source in enumerate(("ours", "paper")):
            values = [
                next((r[source] for r in rows if r["column"] == column and r["method"] == m), None) for m in methods
            ]
            ax.barh(
                y + (s - 0.5) * height,
                [v[0] if v else np.nan for v in values],
                height,
                xerr=[v[1] if v and v[1] is not None else 0 for v in values],
                color="C0" if source == "ours" else "C7",
                alpha=1.0 if source == "ours" else 0.5,
                label=source,
                capsize=1.5,
            )
        ax.set_title(column, fontsize=9)
        ax.set_xlim(0, 100)
        ax.set_xlabel("test Dice (%)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, methods, fontsize=7)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
