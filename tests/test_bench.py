"""The benchmark suite's shape (bench/README.md): no script imports another, every study of bench/ is a stage of
bench/dvc.yaml that lists its code and writes a committed result, and the timings' runner knows every timing."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

from autoprompt import sources
from tests.helpers import REPO, sources_of

SCRIPT_FOLDERS = ("bench", ".ci", "docs/figures")
STUDY = re.compile(r"python -m (bench\.studies\.\w+)")
FINGERPRINT, FINGERPRINTS = "fingerprint", "fingerprints"  # bench/dvc.yaml's fingerprint stage and its folder


def is_script(path: Path) -> bool:
    """A file run as a command: a package's ``__main__.py``, or a module with a top-level ``main`` or a
    ``__name__ == "__main__"`` guard (a timing's module, run by ``python -m bench.timings``, has ``main``)."""
    if path.name == "__main__.py":
        return True
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return True
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return True
    return False


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_files(path: Path, root: Path) -> set[Path]:
    """The files of ``root`` that ``path`` imports: dotted names from ``root`` (``bench.lib.common``), and bare names
    from the file's own folder (a script run by its path has that folder on ``sys.path``)."""
    found = set()
    for name in sources.imported_names(path, module_name(path, root)):
        base = root.joinpath(*name.split("."))
        beside = path.parent / f"{name}.py" if "." not in name else None
        for candidate in (base.with_suffix(".py"), base / "__init__.py", beside):
            if candidate is not None and candidate.is_file() and candidate != path:
                found.add(candidate)
    return found


def scripts_importing_scripts(root: Path, folders: tuple[str, ...] = SCRIPT_FOLDERS) -> list[str]:
    """``importer -> script`` for every file under ``folders`` that imports a script of those folders (the
    product's modules, ``stages`` included, are libraries to them)."""
    files = {p for folder in folders for p in (root / folder).rglob("*.py")}
    return sorted(
        f"{path.relative_to(root)} -> {target.relative_to(root)}"
        for path in files
        for target in imported_files(path, root)
        if target in files and is_script(target)
    )


def test_no_script_imports_another() -> None:
    found = scripts_importing_scripts(REPO)
    assert not found, f"move what they share into bench/lib (or beside the script, without a main): {found}"


def test_the_check_catches_a_script_importing_a_script(tmp_path: Path) -> None:
    root = sources_of(
        tmp_path,
        {
            "bench/__init__.py": "",
            "bench/lib/__init__.py": "",
            "bench/lib/common.py": "X = 1\n",
            "bench/studies/__init__.py": "",
            "bench/studies/a.py": "from bench.lib import common\n\ndef main():\n    pass\n",
            "bench/studies/b.py": "from bench.studies.a import main\n\nif __name__ == '__main__':\n    main()\n",
            "bench/timings/__init__.py": "",
            "bench/timings/__main__.py": "import importlib\n",
            "bench/timings/c.py": "from ..studies import a\n\ndef main():\n    pass\n",
            ".ci/calibrate/shared.py": "Y = 2\n",
            ".ci/calibrate/one.py": "import shared\n\ndef main():\n    pass\n",
            ".ci/calibrate/two.py": "import one\n",
        },
    )
    assert scripts_importing_scripts(root, ("bench", ".ci")) == [
        ".ci/calibrate/two.py -> .ci/calibrate/one.py",
        "bench/studies/b.py -> bench/studies/a.py",
        "bench/timings/c.py -> bench/studies/a.py",
    ]


def study_stages() -> dict[str, dict]:
    """bench/dvc.yaml's stages, each with its entries (a ``foreach``'s keys, or its own name) resolved."""
    pipeline = yaml.safe_load((REPO / "bench" / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "bench" / "params.yaml").read_text())
    out = {}
    for name, stage in pipeline.items():
        if name == FINGERPRINT:
            continue
        body = stage.get("do", stage)
        keys = list(params[stage["foreach"].strip("${}")]) if "foreach" in stage else [name]
        metrics = [
            next(iter(m)).replace("${key}", key) if isinstance(m, dict) else m.replace("${key}", key)
            for m in body.get("metrics", [])
            for key in keys
        ]
        deps = [d for d in body["deps"] if "$" not in d]
        out[name] = {"module": STUDY.search(body["cmd"])[1], "deps": deps, "metrics": metrics, "wdir": body["wdir"]}
    return out


def test_every_study_is_a_stage_writing_a_committed_result() -> None:
    stages = study_stages()
    modules = {p.stem for p in (REPO / "bench" / "studies").glob("*.py") if p.stem != "__init__"}
    assert {s["module"].rsplit(".", 1)[1] for s in stages.values()} == modules, "one stage per study module"
    assert {s["wdir"] for s in stages.values()} == {".."}, "the stages run from the repository root"
    missing = [m for s in stages.values() for m in s["metrics"] if not (REPO / m).is_file()]
    assert not missing, f"bench/dvc.yaml's metrics name results that are not committed: {missing}"


def test_every_study_depends_on_its_fingerprint_and_lists_no_code() -> None:
    """A study depends on the fingerprint of its module (its import closure, the bench package included, hashed
    without comments and docstrings) and on those of the commands it runs, which the fingerprint stage writes from
    the package folders; no study lists a Python file of the packages, which a docstring edit would make stale."""
    stage = yaml.safe_load((REPO / "bench" / "dvc.yaml").read_text())["stages"][FINGERPRINT]
    written = set(stage["cmd"].split("--package bench", 1)[1].split())
    assert set(stage["deps"]) >= {"autoprompt", "stages", "bench/lib", "bench/studies"}, "the code it hashes"
    commands = {"own_data": {"autoprompt.cli"}, "draws": {"autoprompt.cli"}}
    problems = {}
    for name, study in study_stages().items():
        fingerprints = {Path(d).stem for d in study["deps"] if d.startswith(f"bench/{FINGERPRINTS}/")}
        code = [d for d in study["deps"] if d.startswith(("autoprompt/", "stages/", "bench/")) and d.endswith(".py")]
        wanted = {study["module"], *commands.get(name, ())}
        if not wanted <= fingerprints or code or not fingerprints <= written:
            problems[name] = {
                "missing": sorted(wanted - fingerprints),
                "code": code,
                "unwritten": sorted(fingerprints - written),
            }
    assert not problems, f"fix the deps of bench/dvc.yaml: {problems}"


def test_the_runner_knows_every_timing() -> None:
    from bench.timings import names, question

    folder = REPO / "bench" / "timings"
    assert names() == sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
    assert all(is_script(folder / f"{name}.py") and question(name) for name in names()), "a main and a question each"
    runner = [sys.executable, "-m", "bench.timings"]
    listing = subprocess.run([*runner, "--list"], capture_output=True, text=True, cwd=REPO)
    assert listing.returncode == 0 and all(name in listing.stdout for name in names())
    unknown = subprocess.run([*runner, "nope"], capture_output=True, text=True, cwd=REPO)
    assert unknown.returncode == 1 and "no benchmark nope" in unknown.stderr
