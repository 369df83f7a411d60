"""Code fingerprints hash the parsed code: a comment, docstring or layout edit changes neither a stage's fingerprint
(so DVC reruns nothing but the fingerprint stage) nor a run's code hash (so no run is trained again); a code edit
changes both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoprompt.errors import InputError
from autoprompt.sources import closure_hashes, code_sha256, fingerprint_text, sources_sha256
from stages import fingerprint
from tests.helpers import REPO, sources_of

CODE = '''"""A module."""

import math


class Box:
    """A box."""

    size: int = 2
    """Its size."""

    def area(self) -> float:
        """Its area."""
        return math.pow(self.size, 2)


async def fetch(x):
    """Later."""
    return x
'''

SAME = '''# A comment before the docstring, and another one.
"""The module, said otherwise,
over two lines."""
import math
class Box:
    size: int = 2   # no docstring any more
    def area(self) -> float:
        return math.pow(
            self.size,
            2,
        )
async def fetch(x):
    return x  # still the same
'''


@pytest.mark.parametrize(
    "edit",
    [
        ("2)", "3)"),  # a constant
        ("return x", "return x + 0"),  # an expression
        ("size: int = 2", "size: float = 2"),  # an annotation
        ("def area", "def surface"),  # a name
        ("import math", "import math as m\nmath = m"),  # a statement added
        ("return math.pow(self.size, 2)", "return math.pow(self.size, True + 1)"),  # True is not 1
    ],
)
def test_a_fingerprint_ignores_comments_and_docstrings_but_not_code(edit: tuple[str, str]) -> None:
    assert code_sha256(CODE) == code_sha256(SAME), "comments, docstrings and layout are not code"
    assert code_sha256(CODE.replace(*edit)) != code_sha256(CODE), f"{edit} changes the code"


def test_a_run_is_not_retrained_for_a_docstring(tmp_path: Path) -> None:
    """A run's code hash and a stage's fingerprint file stay as they were after a docstring-only edit; a code edit
    changes both."""
    root = sources_of(tmp_path, {"autoprompt/__init__.py": "", "autoprompt/a.py": CODE})
    text, code = fingerprint_text("autoprompt.a", root), sources_sha256("autoprompt.a", root)
    assert json.loads(text) == closure_hashes("autoprompt.a", root)
    (root / "autoprompt/a.py").write_text(SAME)
    assert (fingerprint_text("autoprompt.a", root), sources_sha256("autoprompt.a", root)) == (text, code)
    (root / "autoprompt/a.py").write_text(CODE.replace("2)", "3)"))
    assert fingerprint_text("autoprompt.a", root) != text and sources_sha256("autoprompt.a", root) != code


def test_the_stage_writes_one_file_per_module(tmp_path: Path) -> None:
    root = sources_of(tmp_path / "code", {"stages/__init__.py": "", "stages/train.py": "import stages\n"})
    fingerprint.main(["--root", str(root), "--out", str(tmp_path / "out"), "stages.train", "stages"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["stages.json", "stages.train.json"]
    assert (tmp_path / "out/stages.train.json").read_text() == fingerprint_text("stages.train", root)
    with pytest.raises(InputError, match=r"stages\.tain: no such module under"):
        fingerprint.main(["--root", str(root), "--out", str(tmp_path / "out"), "stages.tain"])


def dvc(folder: Path, *args: str) -> str:
    """``dvc <args>`` in ``folder`` with this Python's DVC, the worktree's packages importable; its stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    run = [sys.executable, "-m", "dvc", *args]
    return subprocess.run(run, cwd=folder, env=env, capture_output=True, text=True, check=True).stdout


def test_a_docstring_edit_reruns_only_the_fingerprint_stage(tmp_path: Path) -> None:
    """A pipeline as the project's: a fingerprint stage on the package folders, and a stage on its module's
    fingerprint. After a docstring edit only the fingerprint stage is out of date, and a repro runs nothing else; a
    code edit reruns the stage."""
    code = {"autoprompt/__init__.py": "", "autoprompt/lib.py": CODE, "stages/__init__.py": ""}
    sources_of(tmp_path / "code", {**code, "stages/train.py": "from autoprompt import lib\n"})
    train = "import pathlib; pathlib.Path('model.txt').write_text('m'); open('runs.log', 'a').write('train\\n')"
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  fingerprint:\n"
        f"    cmd: {sys.executable} -m stages.fingerprint --root code --out fingerprints stages.train\n"
        "    deps: [code/autoprompt, code/stages]\n"
        "    outs:\n      - fingerprints:\n          cache: false\n"
        "  train:\n"
        f'    cmd: {sys.executable} -c "{train}"\n'
        "    deps: [fingerprints/stages.train.json]\n"
        "    outs:\n      - model.txt:\n          cache: false\n"
    )
    dvc(tmp_path, "init", "--no-scm", "-q")
    dvc(tmp_path, "repro")
    assert (tmp_path / "runs.log").read_text() == "train\n"
    (tmp_path / "code/autoprompt/lib.py").write_text(SAME)
    assert list(json.loads(dvc(tmp_path, "status", "--json"))) == ["fingerprint"]
    dvc(tmp_path, "repro")
    assert (tmp_path / "runs.log").read_text() == "train\n", "a docstring edit trains nothing"
    assert json.loads(dvc(tmp_path, "status", "--json") or "{}") == {}
    (tmp_path / "code/autoprompt/lib.py").write_text(CODE.replace("2)", "3)"))
    dvc(tmp_path, "repro")
    assert (tmp_path / "runs.log").read_text() == "train\ntrain\n", "a code edit trains again"
