"""The project's Python sources that a module runs: its import closure, and the hashes of its code.

A DVC stage depends on the code it runs, and a trained run's fingerprint hashes the code that trained it; both must
cover every file the step imports, directly or not, or a change to one of them leaves a stale result that looks
current. ``closure`` finds those files by reading the sources (``ast``, nothing is imported): every ``import`` and
``from ... import`` anywhere in a module (imports inside functions too: heavy libraries are imported lazily here), and
the package ``__init__`` files that each import runs. A module-level ``__getattr__`` (a lazy export) is not followed:
importing its package does not run it.

Both hash the parsed code, not the bytes (``code_sha256``): comments, docstrings, blank lines and layout do not count,
so a docstring edit neither retrains a run nor reruns a stage. The hash is stable across machines and across Python
versions whose parsers build the same tree for the code (new optional fields, empty, are left out); a Python release
that parses a construct into another tree changes it once. ``fingerprint_text`` is what the ``fingerprint`` stage of
each pipeline writes for a stage's module (``stages/fingerprint.py``), and the other stages depend on that file.

    python -m autoprompt.sources stages.train      # the files of a stage's import closure
"""

from __future__ import annotations

import ast
import hashlib
import json
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


def code_sha256(source: str, filename: str = "<code>") -> str:
    """The SHA-256 of a module's parsed code: its syntax tree without line numbers, and without the strings that
    stand alone as statements (docstrings, attribute docstrings), which only ``__doc__`` and ``help`` read. Comments
    and layout never reach the tree. A ``SyntaxError`` names ``filename``."""
    return hashlib.sha256(_canonical(ast.parse(source, filename)).encode()).hexdigest()


def _canonical(value: object) -> str:
    """``value`` (a syntax tree, a list of them, or a literal) as text: each node's type and its fields by name;
    a field left empty (``None`` or ``[]``) is left out, so a field that a newer Python adds, empty, changes nothing."""
    if isinstance(value, ast.AST):
        fields = []
        for name in value._fields:
            item = getattr(value, name, None)
            if isinstance(item, list):
                item = [node for node in item if not _is_string_statement(node)]
            if item is None or (isinstance(item, list) and not item):
                continue
            fields.append(f"{name}={_canonical(item)}")
        return f"{type(value).__name__}({','.join(fields)})"
    if isinstance(value, list):
        return f"[{','.join(_canonical(item) for item in value)}]"
    return repr(value)


def _is_string_statement(node: object) -> bool:
    """A string literal standing alone as a statement: a docstring, or a comment written as a string."""
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def closure_hashes(module: str, root: Path = ROOT) -> dict[str, str]:
    """``closure(module)`` as ``{path relative to root: code_sha256 of the file}``, sorted by path."""
    return {
        relative.as_posix(): code_sha256((root / relative).read_text(), str(root / relative))
        for relative in closure(module, root)
    }


def fingerprint_text(module: str, root: Path = ROOT) -> str:
    """The fingerprint of the code ``module`` runs, as its file holds it: ``closure_hashes`` as indented JSON. The
    same code gives the same bytes, whatever its comments, docstrings and layout; the path of every file counts too
    (a module moved or newly imported changes it)."""
    return json.dumps(closure_hashes(module, root), indent=2, sort_keys=True) + "\n"


def sources_sha256(module: str, root: Path = ROOT) -> str:
    """One hash of the code ``module`` runs (the SHA-256 of its ``fingerprint_text``): the code that trained a run."""
    return hashlib.sha256(fingerprint_text(module, root).encode()).hexdigest()


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print("\n".join(path.as_posix() for path in closure(name)))
