"""The hostile cases as a table: every case of ``bench.hostile.cases`` run in turn, its answer classed (``one line``:
exit 2, one error line, no traceback; ``ok``; ``traceback``; other exits) against the expected one, the table printed
and written to ``bench/results/hostile.json`` with the count of cases not answered as expected.

    python -m bench.hostile [--name hostile]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from bench.hostile.cases import Probe, answer, cases
from bench.lib import common

log = logging.getLogger("bench.hostile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="hostile", help="results file bench/results/<name>.json")
    args, machine = common.parse_and_start(parser)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        probe = Probe(Path(scratch)).build()
        for kind, name, run in cases(probe):
            rows.append(answer(kind, name, run(), Path(scratch)))
            log.info("%-8s %-45s %-10s %s", kind, name, rows[-1]["answer"], rows[-1]["message"][:100])
    failures = [r for r in rows if r["answer"] != r["expected"]]
    log.info("%d cases, %d answered as expected, %d not", len(rows), len(rows) - len(failures), len(failures))
    table = ["| class | case | answer | message |", "|---|---|---|---|"]
    table += [f"| {r['class']} | {r['case']} | {r['answer']} | {r['message'][:90]} |" for r in rows]
    print("\n".join(table))
    common.write_result(
        args.name,
        {
            "what": "hostile inputs and faults run as commands; each expected to answer in one line (exit 2, no "
            "traceback) or, for the valid ones, to succeed",
            "cases": len(rows),
            "not_as_expected": len(failures),
            "rows": rows,
            "machine": machine,
        },
    )


if __name__ == "__main__":
    main()
