"""The paper's Table 1 with our rows beside its own: test Dice in percent, mean ± std over runs."""

from __future__ import annotations

from importlib import resources

import pandas as pd

BACKBONE_NAMES = {"medsam_vit_b": "MedSAM ViT-B", "lite_medsam": "LiteMedSAM"}
FIXED = ["method", "samples", "labels"]


def paper_table() -> pd.DataFrame:
    """Table 1 of the paper: one row per method and sample count, one column per task; ``ours`` names the
    metrics key of our matching row (empty for the baselines we do not run)."""
    with resources.files("autoprompt.reference").joinpath("table1.csv").open() as handle:
        return pd.read_csv(handle, dtype=str, keep_default_na=False)


def cell(summary: dict | None) -> str:
    if summary is None:
        return "–"
    return f"{summary['mean']:.2f} ± {summary['std']:.2f}" if summary.get("n", 1) > 1 else f"{summary['mean']:.2f}"


def build_table(metrics: dict[str, dict], columns: dict[str, str], backbone: str, shots: int | str) -> pd.DataFrame:
    """Paper rows, each followed by ours where we compute it.

    ``metrics``: task -> the evaluate stage's JSON; ``columns``: task -> its Table 1 column (``HC``, ...).
    """
    paper = paper_table()
    by_column = {column: metrics[task]["dice"] for task, column in columns.items() if task in metrics}
    rows = []
    for _, row in paper.iterrows():
        rows.append({k: row[k] for k in paper.columns if k != "ours"} | {"source": "paper"})
        key = row["ours"]
        if not key:
            continue
        samples = row["samples"] if key != "fewshot" else str(shots)
        ours = {
            "method": f"{row['method']} — ours, {BACKBONE_NAMES.get(backbone, backbone)}",
            "samples": samples,
            "labels": row["labels"],
            "source": "ours",
        }
        for column in [c for c in paper.columns if c not in (*FIXED, "ours")]:
            ours[column] = cell(by_column.get(column, {}).get(key))
        rows.append(ours)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, note: str) -> str:
    columns = [c for c in table.columns if c != "source"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = [str(row[c]) for c in columns]
        if row["source"] == "ours":
            cells = [f"**{c}**" if c not in ("–", "") else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "# Table 1: test Dice (%)\n\n" + note + "\n\n" + "\n".join(lines) + "\n"


def parse_cell(text: str) -> tuple[float, float | None] | None:
    """``"85.23 ± 0.55"`` -> (85.23, 0.55); ``"95.19"`` -> (95.19, None); ``"–"`` -> None."""
    mean, _, std = text.strip().partition("±")
    if mean.strip() in ("–", "-", ""):
        return None
    return float(mean), float(std) if std.strip() else None


def bar_rows(metrics: dict[str, dict], columns: dict[str, str], shots: int | str) -> list[dict]:
    """Our rows against the paper's matching rows, per Table 1 column, for ``figures.dice_bars``."""
    labels = {"tight_box": "tight box", "all": "all images", "fewshot": f"few-shot ({shots} ours, 10 paper)"}
    out = []
    for _, row in paper_table().iterrows():
        if not row["ours"]:
            continue
        for task, column in columns.items():
            ours = metrics.get(task, {}).get("dice", {}).get(row["ours"])
            out.append(
                {
                    "column": column,
                    "method": labels[row["ours"]],
                    "paper": parse_cell(row[column]),
                    "ours": (ours["mean"], ours["std"]) if ours else None,
                }
            )
    return out
