"""fingerprint: the code each stage runs, as one file per stage module (fingerprints/<module>.json) of hashes that
ignore comments and docstrings.

Every other stage depends on the fingerprint of its module instead of on its Python files. This stage depends on the
package folders and is cheap, so any edit of them reruns it; a docstring-only edit gives byte-identical fingerprints,
and DVC then skips every stage after it: nothing is trained or evaluated again. What a file holds and why it is
stable: ``autoprompt.sources`` (docs/pipeline.md: Code deps)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from autoprompt import sources
from autoprompt.console import run
from autoprompt.errors import InputError
from autoprompt.io import write_text
from autoprompt.sources import ROOT, fingerprint_text, module_file

log = logging.getLogger("fingerprint")


def arguments() -> argparse.ArgumentParser:
    """The stage's arguments: the modules, the folder to write into, the folder that holds the code."""
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("modules", nargs="+", help="the modules the pipeline's stages run (stages.train, autoprompt.cli)")
    args.add_argument("--out", type=Path, required=True, help="folder to write <module>.json into")
    args.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="folder that holds autoprompt/ and stages/ (default: the imported ones')",
    )
    args.add_argument(
        "--package",
        action="append",
        default=[],
        help="one more top-level package under --root whose imports are followed too (bench, for the benchmark "
        "studies); repeat for several",
    )
    return args


def main(argv: list[str] | None = None) -> None:
    args = arguments().parse_args(argv)
    sources.PACKAGES = tuple(dict.fromkeys((*sources.PACKAGES, *args.package)))
    for module in args.modules:
        if module_file(module, args.root) is None:
            raise InputError(f"{module}: no such module under {args.root}")
        write_text(args.out / f"{module}.json", fingerprint_text(module, args.root))
    log.info("wrote the fingerprints of %d modules into %s", len(args.modules), args.out)


if __name__ == "__main__":
    run(main)
