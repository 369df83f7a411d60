"""The demos' metrics as this CPU kind computes them, for CI to compare against on a machine of this kind.

Each CPU kind computes its own last bits even on the pinned, exact path, and the demo's few-shot runs amplify them
past CI's limits (``docs/determinism.md``). Run both demos in a clean checkout of the commit whose metrics are
committed, on a machine of the other kind, then this script there:

    git clone REPO /tmp/ref && cd /tmp/ref && dvc repro demo/dvc.yaml && dvc repro demo/cardiac/dvc.yaml && \\
        python .ci/calibrate/reference.py --out REPO/.ci/reference

It copies each demo's metrics files into ``OUT/<vendor>/`` (``GenuineIntel``, ``AuthenticAMD``) with
``paired.json``: the machine, and the committed means they were made for. ``.ci/check_metrics.py --references``
uses them only while the committed metrics are those; a demo this kind reproduces exactly needs none and is skipped.
It refuses a checkout whose sources differ from HEAD, or where a demo's stages are not reproduced (``dvc status``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the benchmarks' library: the machine record
from bench.lib import common  # noqa: E402

log = logging.getLogger("ci.reference")

DEMOS = ("demo/metrics", "demo/cardiac/metrics")


def _check_metrics():  # .ci/check_metrics.py: what it compares, and how it names this CPU kind
    spec = importlib.util.spec_from_file_location("check_metrics", REPO / ".ci" / "check_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def changed_sources() -> list[str]:
    """Files that differ from HEAD (tracked, or new and not ignored), other than what ``dvc repro`` of the demos
    rewrites (their metrics and ``dvc.lock``) and the references: a reference is of the committed params, data and
    code only."""
    lines = subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    rewritten = ("/metrics/", "dvc.lock")

    def ours(name: str) -> bool:
        return name.startswith(".ci/reference") or (name.startswith("demo/") and any(p in name for p in rewritten))

    return [line[3:] for line in lines if not ours(line[3:])]


def unreproduced() -> list[str]:
    """The demos' stages whose outputs are not those of their inputs here (``dvc status``): metrics not computed
    on this machine, which must not become, or remove, a reference."""
    stale = []
    for demo in DEMOS:
        pipeline = f"{Path(demo).parent}/dvc.yaml"
        status = subprocess.run(
            ["dvc", "status", "--json", pipeline], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        stale += [f"{stage} (run `dvc repro {pipeline}` first)" for stage in json.loads(status or "{}")]
    return stale


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=REPO / ".ci" / "reference", help="references folder (default: .ci/reference)"
    )
    args = parser.parse_args()
    check = _check_metrics()
    changed = changed_sources()
    if changed:
        sys.exit(f"{changed[0]}: differs from HEAD; make the reference in a clean clone of the commit")
    stale = unreproduced()
    if stale:
        sys.exit(f"{stale[0]}: not reproduced in this checkout; a reference is made from both demos run here")
    diff_text = subprocess.run(
        ["dvc", "metrics", "diff", "--all", "--json", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    diff = json.loads(diff_text or "{}")
    kind = check.cpu_kind()
    folder = args.out / kind
    partial = args.out / f".{kind}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    record: dict = {"committed": {}}
    for demo in DEMOS:
        mine = check.under(diff, demo)
        if not mine:
            sys.exit(f"{demo}: no metrics in `dvc metrics diff HEAD`; run its demo first (`dvc repro`)")
        committed = check.committed_means(mine)
        moved = [
            (path, name)
            for path, means in committed.items()
            for name, old in means.items()
            if mine[path][name].get("new") != old
        ]
        if not moved:
            log.info("%s: this CPU (%s) computes the committed metrics; no reference needed", demo, kind)
            continue
        log.info("%s: %d checked means differ from the committed ones (first: %s %s)", demo, len(moved), *moved[0])
        for path, means in committed.items():
            (partial / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / path, partial / path)
            record["committed"][path] = means
    shutil.rmtree(folder, ignore_errors=True)  # a reference is made whole, for the committed metrics alone
    if not record["committed"]:
        log.info("no reference for %s CPUs: this one computes every committed metric", kind)
        return
    record["machine"] = common.machine_info()
    record["what"] = (
        f"the demos' metrics computed on a CPU of vendor {kind} from the committed params, data and code; "
        "'committed': the checked means of the committed metrics they were made for"
    )
    (partial / check.PAIRED).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    partial.rename(folder)
    log.info("wrote %s: %d metrics files and %s", folder, len(record["committed"]), check.PAIRED)


if __name__ == "__main__":
    main()
