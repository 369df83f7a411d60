"""The paper's Table 1 with our rows beside its own (test Dice, %), and a second table of surface metrics.

Our rows come from ``metrics/<task>.json``: under each paper row that we compute (``ours`` in the reference table:
``tight_box``; a regime, ``fewshot`` / ``all``: one row per recipe trained, then its ensemble where it has one, then
the ensemble re-prompted with its masks' loosened boxes where ``reprompt.margin`` is set, and for slices of volumes
that row with the boxes fitted across each volume's slices where ``reprompt.volume`` is set; or a baseline's
``method/regime``: its row, named as the metrics' ``methods`` name it). A reference row without any paper value (a
baseline the paper does not have) shows only our row.
"""

from __future__ import annotations

from importlib import resources
from statistics import mean

import pandas as pd

from autoprompt.evaluation.scoring import ENSEMBLE, PRESENCE, REPROMPTED, VOLUME, miss_cell

BACKBONE_NAMES = {"medsam_vit_b": "MedSAM ViT-B", "lite_medsam": "LiteMedSAM"}
RECIPE_NAMES = {
    "workshop": "",
    "followup": ", follow-up losses",
    "augmented": ", follow-up losses, zoom/shift augmentation",
}
FIXED = ["method", "samples", "labels"]
HIDDEN = ("source", "regime", "key")  # build_table's bookkeeping, not printed
TIGHT_BOX = "tight_box"


def paper_table() -> pd.DataFrame:
    """Table 1 of the paper: one row per method and sample count, one column per task; ``ours`` names the regime of
    our matching rows (``tight_box``, ``fewshot``, ``all``; empty for the baselines we do not run)."""
    with resources.files("autoprompt.reference").joinpath("table1.csv").open() as handle:
        return pd.read_csv(handle, dtype=str, keep_default_na=False)


def cell(summary: dict | None, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` of a summary (the mean alone for a single value), or ``–``."""
    if summary is None or summary.get("n", 1) == 0:
        return "–"
    mean, std = summary["mean"] * scale, summary["std"] * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if summary.get("n", 1) > 1 else f"{mean:.{digits}f}"


def lookup(tree: dict, key: str) -> dict | None:
    """``tree["a"]["b"]`` for ``key`` ``a/b``, or None."""
    for part in key.split("/"):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def our_rows(regime: str, recipes: list[str], backbone: str, titles: dict | None = None) -> list[tuple[str, str]]:
    """(metrics key, method name) of our rows under a paper row of ``regime``; ``titles``: baseline -> its name."""
    name = BACKBONE_NAMES.get(backbone, backbone)
    if "/" in regime:  # a baseline's method/regime
        method = regime.split("/")[0]
        return [(regime, f"{(titles or {}).get(method, method)} — ours, {name}")]
    if regime == TIGHT_BOX:
        return [(TIGHT_BOX, f"{name} (tight box prompt) — ours")]
    rows = []
    for recipe in recipes:
        label = RECIPE_NAMES.get(recipe, f", recipe {recipe}")
        rows.append((f"{recipe}/{regime}", f"Prompt module{label} — ours, {name}"))
        rows.append((f"{recipe}/{regime}_{ENSEMBLE}", f"Prompt module{label}, ensemble of the runs — ours, {name}"))
        rows.append(
            (
                f"{recipe}/{regime}_{REPROMPTED}",
                f"Prompt module{label}, re-prompted with its mask's box — ours, {name}",
            )
        )
        rows.append(
            (
                f"{recipe}/{regime}_{VOLUME}",
                f"Prompt module{label}, re-prompted, boxes fitted across each volume — ours, {name}",
            )
        )
        rows.append(
            (
                f"{recipe}/{regime}_{PRESENCE}",
                f"Prompt module{label}, re-prompted, fitted, slices judged absent emptied — ours, {name}",
            )
        )
    return rows


def build_table(
    metrics: dict[str, dict], columns: dict[str, str], recipes: list[str], backbone: str, shots: int | str
) -> pd.DataFrame:
    """Paper rows, each followed by ours where we compute them (rows no task has are left out), in the columns of
    the tasks run here.

    ``metrics``: task -> the evaluate stage's JSON; ``columns``: task -> its Table 1 column (``HC``, ...). Each row
    also names its ``source`` (``paper`` or ``ours``), the paper row's ``regime`` it sits under and, for ours, its
    metrics ``key``; ``headline`` picks from them.
    """
    paper = paper_table()
    by_column = {column: metrics[task]["dice"] for task, column in columns.items() if task in metrics}
    titles = baseline_titles(metrics)
    task_columns = [c for c in paper.columns if c not in (*FIXED, "ours") and c in by_column]
    rows = []
    for _, row in paper.iterrows():
        regime = row["ours"]
        if any(row[c] for c in task_columns):
            paper_row = {k: row[k] for k in (*FIXED, *task_columns)}
            rows.append(paper_row | {"source": "paper", "regime": regime, "key": ""})
        if not regime:
            continue
        for key, method in our_rows(regime, recipes, backbone, titles):
            cells = {column: cell(lookup(by_column.get(column, {}), key)) for column in task_columns}
            if all(value == "–" for value in cells.values()):
                continue
            samples = str(shots) if regime.endswith("fewshot") else row["samples"]
            ours = {"method": method, "samples": samples, "labels": row["labels"], **cells}
            rows.append(ours | {"source": "ours", "regime": regime, "key": key})
    return pd.DataFrame(rows)


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """The rows a newcomer compares, from ``build_table``'s: the tight box (the paper's, ours), the paper's few-shot
    row and our best recipe's few-shot ensemble re-prompted, and our best baseline trained on a few masks (or one)
    under the paper's row of it. Best: the highest mean Dice over the columns."""
    columns = [c for c in table.columns if c not in (*FIXED, *HIDDEN)]

    def score(row: pd.Series) -> float:
        values = [parsed[0] for c in columns if (parsed := parse_cell(row[c])) is not None]
        return mean(values) if values else float("-inf")

    def best(rows: pd.DataFrame) -> list[int]:
        return [rows.apply(score, axis=1).idxmax()] if len(rows) else []

    paper, ours = table["source"] == "paper", table["source"] == "ours"
    tight = table.index[table["regime"] == TIGHT_BOX].tolist()
    fewshot = table.index[paper & (table["regime"] == "fewshot")].tolist()
    recipe = best(table[ours & (table["regime"] == "fewshot") & table["key"].str.endswith(f"fewshot_{REPROMPTED}")])
    baselines = table[ours & table["regime"].str.contains("/") & (table["samples"] != "All")]
    baseline = best(baselines)
    if baseline:
        regime = table.loc[baseline[0], "regime"]
        baseline = table.index[paper & (table["regime"] == regime)].tolist() + baseline
    return table.loc[tight + fewshot + recipe + baseline]


def baseline_titles(metrics: dict[str, dict]) -> dict[str, str]:
    """Baseline -> its name in the table, from every task's metrics (``methods``)."""
    return {k: v for data in metrics.values() for k, v in data.get("methods", {}).items()}


def baseline_keys() -> list[tuple[str, str]]:
    """(samples, ``method/regime``) of the reference table's baseline rows, in its order."""
    paper = paper_table()
    return [(row["samples"], row["ours"]) for _, row in paper.iterrows() if "/" in row["ours"]]


def surface_table(
    metrics: dict[str, dict], columns: dict[str, str], recipes: list[str], backbone: str, shots: int | str
) -> pd.DataFrame:
    """Our rows only (the paper reports no surface metrics): per task NSD (%), HD95 (mm), for slices of volumes
    per-patient 3D Dice (%), and the misses (``miss_cell``); where the test volumes were also scored whole, their
    3D Dice, HD95 and false / missed slices (``slice_cell``)."""
    samples = {TIGHT_BOX: "-", "fewshot": str(shots), "all": "All"}
    keys = [(samples[regime], *k) for regime in samples for k in our_rows(regime, recipes, backbone)]
    titles = baseline_titles(metrics)
    for count, regime in baseline_keys():
        count = str(shots) if regime.endswith("fewshot") else count
        keys += [(count, *k) for k in our_rows(regime, recipes, backbone, titles)]
    rows = []
    for count, key, method in keys:
        row = {"method": method, "samples": count}
        for task, column in columns.items():
            data = metrics.get(task, {})
            row[f"{column} NSD"] = cell(lookup(data.get("nsd", {}), key))
            row[f"{column} HD95 (mm)"] = cell(lookup(data.get("hd95_mm", {}), key), scale=1.0, digits=1)
            if "dice_3d" in data:
                row[f"{column} Dice 3D"] = cell(lookup(data["dice_3d"], key))
            row[f"{column} misses"] = miss_cell(lookup(data.get("misses", {}), key))
            if "whole_dice_3d" in data:  # the test volumes whole, every slice (autoprompt.evaluation.volumes)
                row[f"{column} whole: Dice 3D"] = cell(lookup(data["whole_dice_3d"], key))
                row[f"{column} whole: HD95 (mm)"] = cell(lookup(data["whole_hd95_mm"], key), digits=1)
                row[f"{column} whole: false / missed slices"] = slice_cell(lookup(data.get("slices", {}), key))
        if any(v != "–" for k, v in row.items() if k not in ("method", "samples")):
            rows.append(row | {"source": "ours"})
    return pd.DataFrame(rows)


def slice_cell(summary: dict | None) -> str:
    """A row's false and missed slices on whole volumes (``3 / 1``), or ``–``; a row of runs: the mean per run."""
    if summary is None:
        return "–"
    return f"{summary['false']:g} / {summary['missed']:g}"


def to_markdown(table: pd.DataFrame, title: str, note: str, first: pd.DataFrame | None = None) -> str:
    """A markdown page: ``title``, ``note``, the table; with ``first`` (``headline``'s rows), those rows first and
    every row below them."""

    def lines(rows: pd.DataFrame) -> list[str]:
        columns = [c for c in rows.columns if c not in HIDDEN]
        out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for _, row in rows.iterrows():
            cells = [str(row[c]) for c in columns]
            if row["source"] == "ours":
                cells = [f"**{c}**" if c not in ("–", "") else c for c in cells]
            out.append("| " + " | ".join(cells) + " |")
        return out

    if first is None:
        return f"# {title}\n\n" + note + "\n\n" + "\n".join(lines(table)) + "\n"
    return (
        f"# {title}\n\n"
        + note
        + "\n\n"
        + "\n".join(lines(first))
        + "\n\n## Every row\n\n"
        + "\n".join(lines(table))
        + "\n"
    )


def parse_cell(text: str) -> tuple[float, float | None] | None:
    """``"85.23 ± 0.55"`` -> (85.23, 0.55); ``"95.19"`` -> (95.19, None); ``"–"`` -> None."""
    mean, _, std = text.strip().partition("±")
    if mean.strip() in ("–", "-", ""):
        return None
    return float(mean), float(std) if std.strip() else None


def bar_rows(metrics: dict[str, dict], columns: dict[str, str], recipes: list[str], shots: int | str) -> list[dict]:
    """Our single-run rows against the paper's matching rows, per Table 1 column, for ``figures.dice_bars``."""
    names = {TIGHT_BOX: "tight box", "all": "Prompt module, All boxes", "fewshot": f"Prompt module, {shots} boxes"}
    out = []
    for _, row in paper_table().iterrows():
        regime = row["ours"]
        if not regime:
            continue
        if "/" in regime:  # a baseline: its own row
            samples = str(shots) if regime.endswith("fewshot") else row["samples"]
            labels = {regime: f"{row['method'].split(' (')[0]}, {samples} {row['labels']}"}
        elif regime == TIGHT_BOX:
            labels = {TIGHT_BOX: names[TIGHT_BOX]}
        else:
            labels = {f"{recipe}/{regime}": f"{names[regime]} ({recipe})" for recipe in recipes}
        for key, label in labels.items():
            for task, column in columns.items():
                ours = lookup(metrics.get(task, {}).get("dice", {}), key)
                out.append(
                    {
                        "column": column,
                        "method": label,
                        "paper": parse_cell(row[column]),
                        "ours": (ours["mean"], ours["std"]) if ours else None,
                    }
                )
    return out
