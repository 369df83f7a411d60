"""The timing benchmarks: one module each (its ``main`` parses its own options), run by one runner,
``python -m bench.timings NAME [OPTION ...]`` (``--list``: every one and its question). Each writes
``bench/results/<name>.json``."""

from __future__ import annotations

import ast
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def names() -> list[str]:
    """Every timing benchmark: the modules of this package, sorted."""
    return sorted(p.stem for p in FOLDER.glob("*.py") if not p.stem.startswith("_"))


def question(name: str) -> str:
    """A benchmark's question: its module docstring's first sentence line, read without importing it."""
    doc = ast.get_docstring(ast.parse((FOLDER / f"{name}.py").read_text())) or ""
    return doc.split("\n\n")[0].replace("\n", " ").replace("``", "")
