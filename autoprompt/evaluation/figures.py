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
    """One panel per image (N x S x S uint8), with the contours of the ground truth and of each method's mask."""
    count = len(images)
    palette = colours(["ground truth", *predictions])
    fig, axes = plt.subplots(1, count, figsize=(3.2 * count, 3.8), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(images[i].numpy(), cmap="gray", vmin=0, vmax=255)
        for name, masks in {"ground truth": truth, **predictions}.items():
            if masks[i].any():
                ax.contour(masks[i].numpy().astype(float), levels=[0.5], colors=palette[name], linewidths=1.2)
        ax.set_axis_off()
    handles = [plt.Line2D([], [], color=colour, label=name) for name, colour in palette.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), frameon=False, fontsize=8)
    fig.suptitle(f"{title}: test images")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)


def dice_bars(path: Path, rows: list[dict]) -> None:
    """Grouped bars of test Dice per column: ours (with the std over runs) beside the paper's.

    ``rows``: dicts with ``column``, ``method``, ``ours`` (mean, std or None) and ``paper`` (mean, std or None).
    """
    columns = list(dict.fromkeys(r["column"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / (2 * len(methods))
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 * len(columns)), 3.8))
    for m, method in enumerate(methods):
        for s, source in enumerate(("ours", "paper")):
            values = [
                next((r[source] for r in rows if r["column"] == c and r["method"] == method), None) for c in columns
            ]
            x = np.arange(len(columns)) + (2 * m + s - len(methods) + 0.5) * width
            means = [v[0] if v else np.nan for v in values]
            errs = [v[1] if v and v[1] is not None else 0 for v in values]
            ax.bar(
                x,
                means,
                width,
                yerr=errs,
                label=f"{method} ({source})",
                alpha=1.0 if source == "ours" else 0.45,
                color=f"C{m}",
                capsize=2,
            )
    ax.set_xticks(np.arange(len(columns)), columns)
    ax.set_ylabel("test Dice (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
