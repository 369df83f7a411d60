"""Every DVC stage lists, among its deps, exactly the project's Python files that its module imports (its import
closure, ``autoprompt.sources``): a file left out would leave stale results looking current, a file too many would
rerun the stage for nothing. Also: the layers point one way."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autoprompt.sources import closure, imported_names
from tests.helpers import REPO, sources_of

PIPELINES = ("dvc.yaml", "demo/dvc.yaml", "demo/cardiac/dvc.yaml", "examples/own-data/dvc.yaml")
MODULE = re.compile(r"python -m (stages\.\w+)|^(autoprompt) \w+")


def stage_modules(pipeline: Path) -> dict[str, tuple[str, list[Path]]]:
    """Stage name -> (the module its command runs, its deps as paths relative to the repository)."""
    stages = yaml.safe_load(pipeline.read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        found = MODULE.search(body["cmd"])
        if found:
            module = found[1] or "autoprompt.cli"  # the autoprompt command
            deps = [next(iter(d)) if isinstance(d, dict) else d for d in body.get("deps", [])]
            out[name] = (module, [(pipeline.parent / d).resolve().relative_to(REPO) for d in deps if "$" not in d])
    return out


def code_problems(module: str, deps: list[Path], root: Path = REPO) -> list[str]:
    """What is wrong with a stage's code deps: closure files it does not list, and Python files it lists that its
    module does not import (a listed folder must hold closure files only, data files aside)."""
    needed = set(closure(module, root))
    listed: set[Path] = set()
    for dep in deps:
        path = root / dep
        if path.is_dir():
            listed |= {p.relative_to(root) for p in path.rglob("*.py")}
        elif dep.suffix == ".py":
            listed.add(dep)
    missing = sorted(p.as_posix() for p in needed - listed)
    extra = sorted(p.as_posix() for p in listed - needed)
    return [f"missing {p}" for p in missing] + [f"not imported {p}" for p in extra]


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_stage_lists_its_import_closure(pipeline: str) -> None:
    problems = {
        name: found
        for name, (module, deps) in stage_modules(REPO / pipeline).items()
        if (found := code_problems(module, deps))
    }
    assert not problems, f"{pipeline}: fix the deps of {problems} (python -m autoprompt.sources <module> lists them)"


def test_the_check_catches_an_omitted_file(tmp_path: Path) -> None:
    """A stage module importing a module lazily, inside a function, through a package: leaving any file of that
    chain out of the deps is reported, and so is a file listed that nothing imports."""
    root = sources_of(
        tmp_path,
        {
            "stages/__init__.py": "",
            "stages/train.py": "def main():\n    from autoprompt.training import loop\n",
            "autoprompt/__init__.py": "def __getattr__(name):\n    from autoprompt import inference\n",
            "autoprompt/inference.py": "",
            "autoprompt/training/__init__.py": "",
            "autoprompt/training/loop.py": "from . import augment\n",
            "autoprompt/training/augment.py": "import numpy\n",
            "autoprompt/unused.py": "",
        },
    )
    chain = ["stages/__init__.py", "stages/train.py", "autoprompt/__init__.py", "autoprompt/training/__init__.py"]
    chain += ["autoprompt/training/loop.py", "autoprompt/training/augment.py"]
    assert [p.as_posix() for p in closure("stages.train", root)] == sorted(chain)
    assert code_problems("stages.train", [Path(p) for p in chain], root) == []
    omitted = [Path(p) for p in chain if p != "autoprompt/training/augment.py"]
    assert code_problems("stages.train", omitted, root) == ["missing autoprompt/training/augment.py"]
    folder = [Path("stages"), Path("autoprompt/__init__.py"), Path("autoprompt/training")]
    assert code_problems("stages.train", folder, root) == []
    assert code_problems("stages.train", [Path("autoprompt")], root) == [
        "missing stages/__init__.py",
        "missing stages/train.py",
        "not imported autoprompt/inference.py",
        "not imported autoprompt/unused.py",
    ]


def test_relative_imports_resolve_against_the_package(tmp_path: Path) -> None:
    root = sources_of(tmp_path, {"autoprompt/data/__init__.py": "", "autoprompt/data/a.py": "from ..io import x\n"})
    assert "autoprompt.io" in imported_names(root / "autoprompt/data/a.py", "autoprompt.data.a")


LAYERS = {  # a package, and the packages it must not import (directly or not)
    "autoprompt.data": ("autoprompt.training", "autoprompt.model", "autoprompt.inference", "autoprompt.evaluation"),
    "autoprompt.model": ("autoprompt.data", "autoprompt.training", "autoprompt.inference", "autoprompt.evaluation"),
    "autoprompt.evaluation": ("autoprompt.training", "autoprompt.inference", "autoprompt.model"),
    "autoprompt.training": ("autoprompt.inference", "stages"),
    "autoprompt.inference": ("autoprompt.training.loop", "autoprompt.training.head_jobs", "stages"),
    "autoprompt.settings": ("autoprompt.data", "autoprompt.model", "autoprompt.training", "torch"),
}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_layers_point_one_way(package: str) -> None:
    """Importing each module of a lower layer loads none of the layers above it (in a fresh interpreter)."""
    folder = REPO / package.replace(".", "/")
    modules = [package] if not folder.is_dir() else []
    modules += [
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for p in folder.rglob("*.py")
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {sorted(modules)!r}: importlib.import_module(name)\n"
        f"print(sorted({{m for m in sys.modules for banned in {LAYERS[package]!r} "
        "if m == banned or m.startswith(banned + '.')}))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]", f"{package} loads {done.stdout.strip()}"
