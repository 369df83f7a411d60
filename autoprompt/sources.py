"""The project's Python sources that a module runs: its import closure, and one hash of it.

A DVC stage lists its code among its deps, and a trained run's fingerprint hashes the code that trained it; both must
cover every file the step imports, directly or not, or a change to one of them leaves a stale result that looks
current. ``closure`` finds those files by reading the sources (``ast``, nothing is imported): every ``import`` and
``from ... import`` anywhere in a module (imports inside functions too: heavy libraries are imported lazily here), and
the package ``__init__`` files that each import runs. A module-level ``__getattr__`` (a lazy export) is not followed:
importing its package does not run it. ``tests/test_deps.py`` checks every stage's deps in the ``dvc.yaml`` files
against the closure of its module.

    python -m autoprompt.sources stages.train      # the files a stage's deps must list
"""

from __future__ import annotations

import ast
import hashlib
import sys
from pathlib import Path

PACKAGES = ("autoprompt", "stages")
ROOT = Path(__file__).resolve().parents[1]  # the folder that holds both packages


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of module ``name`` under ``root`` (a package's ``__init__.py``); None for other packages' modules
    and for names that are not modules (a class imported from a module)."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    path = root.joinpath(*parts)
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def imported_names(path: Path, module: str) -> list[str]:
    """Every module name that ``path`` (module ``module``) may import: ``import a.b`` gives ``a.b``; ``from a import
    b`` gives ``a`` and ``a.b`` (``b`` may be a submodule); relative imports are resolved against ``module``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in _statements(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names


def _statements(tree: ast.Module) -> list[ast.AST]:
    """Every node of ``tree`` but those of a module-level ``__getattr__``."""
    lazy = {
        id(node)
        for top in tree.body
        if isinstance(top, ast.FunctionDef) and top.name == "__getattr__"
        for node in ast.walk(top)
    }
    return [node for node in ast.walk(tree) if id(node) not in lazy]


def closure(module: str, root: Path = ROOT) -> list[Path]:
    """The files, relative to ``root`` and sorted, of ``module`` and of every project module it imports, directly
    or not, with the ``__init__.py`` of each package on the way."""
    todo, seen, files = [module], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, root)
        if path is None:
            continue
        files.add(path.relative_to(root))
        parts = name.split(".")
        todo += [".".join(parts[:k]) for k in range(1, len(parts))]  # the packages its import runs first
        todo += imported_names(path, name)
    return sorted(files)


def sources_sha256(module: str, root: Path = ROOT) -> str:
    """One hash of the paths and bytes of ``closure(module)``: code that trained a run, say."""
    digest = hashlib.sha256()
    for relative in closure(module, root):
        digest.update(relative.as_posix().encode() + b"\0")
        digest.update((root / relative).read_bytes())
    return digest.hexdigest()


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print("\n".join(path.as_posix() for path in closure(name)))
