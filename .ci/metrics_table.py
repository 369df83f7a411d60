"""The demo's metric changes as a Markdown table, for a comment on a pull request.

Reads ``dvc metrics diff --all --json BASE`` (or two metrics files: ``--old`` and ``--new``) and writes, to stdout,
one table of the Dice and NSD rows (``dice.<row>.mean``, ``nsd.<row>.mean``) averaged over the tasks, with the base,
this change and the difference, then the task entries that moved most, and the drops that ``check_metrics.py`` would
fail on; with ``--references``, the base's side is this CPU kind's own reference where it has one. Unchanged rows
are counted, not listed. The benchmark suite's metrics (``bench/dvc.yaml``) are left out.

    dvc metrics diff --all --json origin/main > diff.json
    python .ci/metrics_table.py diff.json --base origin/main > diff.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from statistics import mean

from dvc.utils.flatten import flatten

CHECKS = Path(__file__).with_name("check_metrics.py")
ENTRIES_SHOWN = 15
BENCH = "bench/"  # the benchmark suite's metrics (bench/dvc.yaml): studies, not the demo's rows


def _check_metrics():  # check_metrics.py beside this file: its rows and limits
    spec = importlib.util.spec_from_file_location("check_metrics", CHECKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def numbers(tree: dict) -> dict[str, float]:
    """A metrics JSON's numbers as DVC names them (its own ``flatten``): ``dice.workshop.fewshot.mean`` -> number."""
    return {k: v for k, v in flatten(tree).items() if isinstance(v, int | float) and not isinstance(v, bool)}


def diff_files(old: dict[str, Path], new: dict[str, Path]) -> dict:
    """``dvc metrics diff --all --json``'s layout for metrics files given by task: ``{path: {name: {old, new}}}``."""
    out = {}
    for task in sorted(set(old) | set(new)):
        before = numbers(json.loads(old[task].read_text())) if task in old else {}
        after = numbers(json.loads(new[task].read_text())) if task in new else {}
        out[f"metrics/{task}.json"] = {
            name: {"old": before.get(name), "new": after.get(name)} for name in sorted(set(before) | set(after))
        }
    return out


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _change(old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return "new" if old is None else "gone"
    delta = new - old
    return "0" if abs(delta) < 0.005 else f"{delta:+.2f}"


def table(diff: dict, base: str = "base", references: Path | None = None) -> str:
    """The Markdown of the module's docstring; with ``references``, the base's side is what this CPU kind computes
    for the base's committed metrics, where a reference holds it (``check_metrics.against_reference``)."""
    checks = _check_metrics()
    diff = {path: metrics for path, metrics in diff.items() if not path.startswith(BENCH)}
    lines = [f"### Demo metrics: this change against {base}", ""]
    if references is not None:
        diff, against, _ = checks.against_reference(diff, references, checks.cpu_kind())
        lines += [f"Compared with {against}.", ""]
    rows = checks.checked_means(diff)
    changed, unchanged = [], 0
    for row, tasks in sorted(rows.items()):
        if row.split(".")[0] not in checks.ROWS:
            continue
        both = [(o, n) for o, n in tasks.values() if o is not None and n is not None]
        old = mean(o for o, _ in both) if both else None
        new = mean(n for _, n in both) if both else None
        if old is not None and new is not None and abs(new - old) < 0.005 and len(both) == len(tasks):
            unchanged += 1
            continue
        changed.append((row.removesuffix(".mean"), old, new, len(tasks)))
    if changed:
        lines += ["| row (mean over tasks) | tasks | " + base + " | this change | change |", "|---|---|---|---|---|"]
        lines += [f"| `{r}` | {n} | {_cell(o)} | {_cell(w)} | {_change(o, w)} |" for r, o, w, n in changed]
    lines += ["", f"{unchanged} rows unchanged." if changed else f"All {unchanged} rows unchanged.", ""]
    entries = [
        (abs((n or 0) - (o or 0)), path, row, o, n)
        for row, tasks in rows.items()
        for path, (o, n) in tasks.items()
        if o != n
    ]
    if entries:
        lines += ["| task | entry | " + base + " | this change | change |", "|---|---|---|---|---|"]
        for _, path, row, o, n in sorted(entries, reverse=True)[:ENTRIES_SHOWN]:
            name = row.removesuffix(".mean")
            lines.append(f"| {Path(path).stem} | `{name}` | {_cell(o)} | {_cell(n)} | {_change(o, n)} |")
        if len(entries) > ENTRIES_SHOWN:
            lines.append(f"\n{len(entries) - ENTRIES_SHOWN} more entries changed (`dvc metrics diff` lists them).")
        lines.append("")
    failures = checks.drops(diff, 1.0, 2.0, 4.0)
    lines.append("**Drops past the limits of `.ci/check_metrics.py`:** " + ("none." if not failures else ""))
    lines += [f"- {failure}" for failure in failures]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("diff", type=Path, nargs="?", help="dvc metrics diff --all --json output")
    parser.add_argument("--old", type=Path, nargs="*", default=[], help="base metrics files (<task>.json)")
    parser.add_argument("--new", type=Path, nargs="*", default=[], help="changed metrics files (<task>.json)")
    parser.add_argument("--base", default="base", help="what the base is called in the table")
    parser.add_argument("--references", type=Path, help="the base's per-CPU reference metrics (.ci/reference)")
    args = parser.parse_args()
    if args.diff is not None:
        diff = json.loads(args.diff.read_text() or "{}")
    else:
        diff = diff_files({p.stem: p for p in args.old}, {p.stem: p for p in args.new})
    print(table(diff, args.base, args.references), end="")


if __name__ == "__main__":
    main()
