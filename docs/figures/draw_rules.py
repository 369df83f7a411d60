"""The picture of docs/own-data.md's "Which rule, over several tens": each ten's mean Dice, by the rule that chose it
(``suggest``'s typical and k-center, from several starts, and uniform draws), on the held-out images of each split the
draws study measured with ``--tens``, the tight-box prompt's Dice drawn as the bound. Where the study also trained
each ten's second round (``--self-training``), its dots stand to the right of the first round's.

    python docs/figures/draw_rules.py        (reads bench/results/draws_rules*.json, writes docs/figures/draw-rules.png)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
OUT = Path(__file__).with_name("draw-rules.png")
SPLITS = {  # results file -> the panel's title
    "draws_rules_authors.json": "the authors' split: 183 to draw from, {test} test images",
    "draws_rules.json": "the walkthrough's folder: the {test} images no ten trained on",
}
LABELS = {"kcenter": "k-center\n(--method kcenter)", "typical": "typical\n(suggest)", "uniform": "uniform\n(at random)"}

log = logging.getLogger("draw_rules")


ROUNDS = {"first round": "tab:blue", "with the second round": "tab:orange"}


def column(axis: plt.Axes, x: float, rule: dict, color: str, width: float, label: str | None = None) -> None:
    """One rule's tens in one round: a dot per ten's mean Dice, a bar at their mean, the lead over uniform below."""
    each = np.asarray(rule["each"])
    axis.scatter(x + np.linspace(-width / 2, width / 2, len(each)), each, s=24, color=color, zorder=3, label=label)
    axis.hlines(rule["mean"], x - width, x + width, color="black", linewidth=2, zorder=4)
    if "minus_uniform" in rule:
        note = f"{rule['minus_uniform']:+.2f}\n± {rule['standard_error']:.2f}"
        axis.annotate(note, (x, min(each)), xytext=(0, -22), textcoords="offset points", ha="center", fontsize=7)


def panel(axis: plt.Axes, result: dict, title: str) -> None:
    """One split: per rule a column of dots for each round (each a ten's mean Dice), the tight box as a line."""
    rounds = [result["summary"]["rules"]]
    if "rules" in result["summary"].get("second_round", {}):
        rounds.append(result["summary"]["second_round"]["rules"])
    names = [name for name in ("typical", "kcenter", "uniform") if name in rounds[0]]
    offsets = [0.0] if len(rounds) == 1 else [-0.2, 0.2]
    width = 0.12 if len(rounds) == 1 else 0.08
    for x, name in enumerate(names):
        for rules, offset, (label, color) in zip(rounds, offsets, ROUNDS.items(), strict=False):
            column(axis, x + offset, rules[name], color, width, label if x == 0 else None)
    if len(rounds) > 1:
        axis.legend(loc="lower left", fontsize=7)
    bound = result["summary"]["tight_box"]
    axis.axhline(bound, color="tab:green", linestyle="--", linewidth=1)
    axis.annotate(f"tight box {bound:.2f}", (len(names) - 0.5, bound), xytext=(0, -3), textcoords="offset points",
                  ha="right", va="top", fontsize=8, color="tab:green")  # fmt: skip
    axis.set_xticks(range(len(names)), [LABELS[name] for name in names], fontsize=8)
    axis.set_xlim(-0.6, len(names) - 0.4)
    axis.set_title(title.format(test=result["test_images"]), fontsize=9)
    axis.set_ylabel("mean Dice (%) of a ten's model")
    axis.grid(axis="y", alpha=0.3)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    found = {name: json.loads((RESULTS / name).read_text()) for name in SPLITS if (RESULTS / name).is_file()}
    if not found:
        raise SystemExit(f"{RESULTS}: no draws_rules*.json; run dvc repro -s bench/dvc.yaml:draws@draws_rules_authors")
    figure, axes = plt.subplots(1, len(found), figsize=(5.2 * len(found), 4.4), squeeze=False)
    for axis, (name, result) in zip(axes[0], found.items(), strict=True):
        panel(axis, result, SPLITS[name])
    figure.suptitle("Several tens per rule: a dot per ten's model, a bar at their mean;\n"
                    "below, the rule's mean minus uniform's ± standard error", fontsize=9)  # fmt: skip
    figure.tight_layout()
    figure.savefig(OUT, dpi=110)
    log.info("wrote %s", OUT.relative_to(REPO))


if __name__ == "__main__":
    main()
