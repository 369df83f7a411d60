"""Every DVC stage depends on exactly the code its module runs (its import closure, ``autoprompt.sources``): a file
left out would leave stale results looking current, a file too many would rerun the stage for nothing. A stage lists
one file for it, the fingerprint of its module (``fingerprints/<module>.json``), which hashes every file of that
closure and no other; each pipeline's ``fingerprint`` stage writes those files from the package folders, which hold
every closure. Also: the layers point one way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from autoprompt.sources import PACKAGES, closure, closure_hashes, imported_names
from stages.fingerprint import arguments
from tests.helpers import REPO, sources_of

PIPELINES = ("dvc.yaml", "demo/dvc.yaml", "demo/cardiac/dvc.yaml", "examples/own-data/dvc.yaml")
MODULE = re.compile(r"python -m (stages\.\w+)|^(autoprompt) \w+")
FINGERPRINT = "fingerprint"  # the stage that writes the fingerprints, and the module it runs (stages.fingerprint)


def stage_modules(pipeline: Path, root: Path = REPO) -> dict[str, tuple[str, list[Path]]]:
    """Stage name -> (the module its command runs, its deps as paths relative to the repository ``root``)."""
    stages = yaml.safe_load(pipeline.read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        found = MODULE.search(body["cmd"])
        if found:
            module = found[1] or "autoprompt.cli"  # the autoprompt command
            deps = [next(iter(d)) if isinstance(d, dict) else d for d in body.get("deps", [])]
            out[name] = (module, [(pipeline.parent / d).resolve().relative_to(root) for d in deps if "$" not in d])
    return out


def is_code(dep: Path) -> bool:
    """A dep on the project's Python code itself (a file or a package folder); its data files are not code."""
    return dep.parts[0] in PACKAGES and dep.parts[:2] != ("autoprompt", "reference") and dep.suffix in (".py", "")


def fingerprint_problems(pipeline: str, root: Path = REPO) -> list[str]:
    """What is wrong with a pipeline's code deps: a stage that lists code rather than its module's fingerprint, or
    no fingerprint, or another module's; a fingerprint stage that does not write the fingerprint of every module the
    stages run, or whose deps are not the package folders."""
    path = root / pipeline
    folder = path.parent.relative_to(root)
    stages = stage_modules(path, root)
    problems = []
    modules = {module for name, (module, _) in stages.items() if name != FINGERPRINT}
    for name, (module, deps) in stages.items():
        if name == FINGERPRINT:
            continue
        problems += [f"{name}: lists code {d.as_posix()}" for d in deps if is_code(d)]
        prints = [d for d in deps if d.parent == folder / "fingerprints"]
        if prints != [folder / "fingerprints" / f"{module}.json"]:
            problems.append(f"{name}: its code deps should be fingerprints/{module}.json, not {prints}")
    if FINGERPRINT not in stages:
        return [*problems, "no fingerprint stage"]
    module, deps = stages[FINGERPRINT]
    body = yaml.safe_load(path.read_text())["stages"][FINGERPRINT]
    args = arguments().parse_args(body["cmd"].split()[3:])
    if (
        module != "stages.fingerprint"
        or (path.parent / args.root).resolve() != root.resolve()
        or args.out != Path("fingerprints")
    ):
        problems.append(
            f"{FINGERPRINT}: its command should be python -m stages.fingerprint --root <repository> --out fingerprints"
        )
    if set(args.modules) != modules:
        problems.append(f"{FINGERPRINT}: writes {sorted(args.modules)}; the stages run {sorted(modules)}")
    if sorted(deps) != sorted(Path(p) for p in PACKAGES):
        problems.append(f"{FINGERPRINT}: deps {deps}, not the package folders {PACKAGES}")
    if body["outs"] != [{"fingerprints": {"cache": False}}]:
        problems.append(f"{FINGERPRINT}: outs {body['outs']}, not fingerprints (cache: false)")
    return problems


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_stage_depends_on_the_fingerprint_of_its_module(pipeline: str) -> None:
    assert not (found := fingerprint_problems(pipeline)), f"{pipeline}: {found}"


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_package_folders_hold_every_closure(pipeline: str) -> None:
    """What the fingerprint stage's deps cover: every file of every stage module's closure, so no edit of the code
    a stage runs goes unseen."""
    for module, _ in stage_modules(REPO / pipeline).values():
        outside = [p for p in closure(module) if p.parts[0] not in PACKAGES]
        assert not outside, f"{module} imports {outside}, outside the fingerprint stage's deps"


def test_the_check_catches_code_deps_and_a_missing_fingerprint(tmp_path: Path) -> None:
    """A stage that lists a Python file, one that depends on another module's fingerprint, and a fingerprint stage
    that leaves a module out are each reported; the right form is not."""
    stage = "    cmd: python -m stages.{0}\n    deps:\n      - {1}\n"
    right = {"train": "fingerprints/stages.train.json", "evaluate": "fingerprints/stages.evaluate.json"}
    fingerprint = (
        "  fingerprint:\n    cmd: python -m stages.fingerprint --root .. --out fingerprints {0}\n"
        "    deps: [../autoprompt, ../stages]\n    outs:\n      - fingerprints:\n          cache: false\n"
    )

    def problems(deps: dict[str, str], modules: str) -> list[str]:
        text = fingerprint.format(modules) + "".join(f"  {k}:\n" + stage.format(k, v) for k, v in deps.items())
        (tmp_path / "demo").mkdir(exist_ok=True)
        (tmp_path / "demo/dvc.yaml").write_text("stages:\n" + text)
        return fingerprint_problems("demo/dvc.yaml", tmp_path.resolve())

    assert problems(right, "stages.train stages.evaluate") == []
    assert problems({**right, "train": "../autoprompt/training/loop.py"}, "stages.train stages.evaluate") == [
        "train: lists code autoprompt/training/loop.py",
        "train: its code deps should be fingerprints/stages.train.json, not []",
    ]
    assert problems({**right, "evaluate": right["train"]}, "stages.train stages.evaluate") == [
        "evaluate: its code deps should be fingerprints/stages.evaluate.json, not "
        f"[{Path('demo/fingerprints/stages.train.json')!r}]"
    ]
    assert problems(right, "stages.train") == [
        "fingerprint: writes ['stages.train']; the stages run ['stages.evaluate', 'stages.train']"
    ]


def test_a_fingerprint_hashes_the_import_closure(tmp_path: Path) -> None:
    """A stage module importing a module lazily, inside a function, through a package: every file of that chain is
    in its fingerprint, and no file that nothing imports (a lazy export, ``__getattr__``, is not followed)."""
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
    assert list(closure_hashes("stages.train", root)) == sorted(chain)
    before = closure_hashes("stages.train", root)
    (root / "autoprompt/training/augment.py").write_text("import numpy as np\n")
    (root / "autoprompt/unused.py").write_text("x = 1\n")
    after = closure_hashes("stages.train", root)
    assert [p for p in chain if before[p] != after[p]] == ["autoprompt/training/augment.py"]


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


def dotted(path: Path) -> str:
    """``autoprompt/data/__init__.py`` -> ``autoprompt.data``: a file's module name (``path`` relative to the root)."""
    return ".".join(path.with_suffix("").parts).removesuffix(".__init__")


def layer_violations(package: str, banned: tuple[str, ...], root: Path = REPO) -> list[str]:
    """Each module of ``package`` (a package folder, or one module) that imports, directly or through the project
    modules it imports, a module of ``banned`` (project modules or libraries): read from the sources
    (``autoprompt.sources``), so an import inside a function counts as much as one at the top."""
    folder = root / package.replace(".", "/")
    files = sorted(folder.rglob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]
    found = []
    for module in (dotted(f.relative_to(root)) for f in files):
        names = set()
        for path in closure(module, root):
            names |= {dotted(path), *imported_names(root / path, dotted(path))}
        hits = sorted(n for n in names for b in banned if n == b or n.startswith(b + "."))
        found += [f"{module} imports {hits[0]}"] if hits else []
    return found


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_layers_point_one_way(package: str) -> None:
    """No module of a lower layer imports, directly or not, a layer above it."""
    assert layer_violations(package, LAYERS[package]) == []


def test_the_layer_check_sees_imports_inside_functions_and_through_other_modules(tmp_path: Path) -> None:
    root = sources_of(
        tmp_path,
        {
            "autoprompt/data/__init__.py": "",
            "autoprompt/data/a.py": "def f():\n    from autoprompt.io import x\n",
            "autoprompt/data/b.py": "import numpy\n",
            "autoprompt/io.py": "import torch.nn\n",
        },
    )
    assert layer_violations("autoprompt.data", ("torch",), root) == ["autoprompt.data.a imports torch.nn"]
    assert layer_violations("autoprompt.data", ("autoprompt.io",), root) == ["autoprompt.data.a imports autoprompt.io"]
