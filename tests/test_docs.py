"""The README and docs/ for users: every relative link resolves, and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import REPO

PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.name}: links to nothing: {broken}"


def test_the_readme_is_read_in_five_minutes() -> None:
    text = (REPO / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 250, f"{len(lines)} lines"
    commands = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert "dvc repro demo/dvc.yaml" in commands[0] and "pip install" in commands[0], "the first command runs the demo"
    assert "pytest" in commands[1], "the second runs the tests"
    assert not re.search(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b", text), "no commit hashes"
    assert not re.search(r"20\d\d-\d\d-\d\d", text), "no dates of runs"


SOURCES = [
    *sorted((REPO / "autoprompt").rglob("*.py")),
    *sorted((REPO / "stages").glob("*.py")),
    *sorted((REPO / "bench").rglob("*.py")),
    *sorted((REPO / ".ci").rglob("*.py")),
    *sorted((REPO / "docs").rglob("*.py")),
    *[REPO / f for f in ("params.yaml", "demo/params.yaml", "demo/cardiac/params.yaml")],
    REPO / "examples/own-data/params.yaml",
]
README_POINTER = re.compile(r"README(?::|'s) \"?([A-Z][\w ]+?)[\")]")  # (README: Heading) or the README's "Heading"
DOCS_POINTER = re.compile(r"docs/([\w-]+\.md)(?:: ([A-Z][\w ,]+?))?[),;\s]")


def _headings(page: Path) -> set[str]:
    """A page's headings and its bold paragraph labels (``**Augmented views.**``), as written."""
    text = page.read_text()
    return {h.strip() for h in re.findall(r"^#+ (.+)$", text, re.M)} | set(re.findall(r"\*\*([^*]+?)\.\*\*", text))


def test_every_pointer_in_code_and_params_resolves() -> None:
    """A comment or docstring that sends the reader to the README or docs/ names a page that exists, and a heading of
    it where it names one."""
    readme = _headings(REPO / "README.md")
    broken = []
    for source in SOURCES:
        text = source.read_text()
        name = source.relative_to(REPO).as_posix()
        broken += [f"{name}: README: {h}" for h in README_POINTER.findall(text) if h not in readme]
        for page, heading in DOCS_POINTER.findall(text):
            path = REPO / "docs" / page
            if not path.exists():
                broken.append(f"{name}: docs/{page}")
            elif heading and not any(h.startswith(heading) for h in _headings(path)):
                broken.append(f"{name}: docs/{page}: {heading}")
    assert not broken, f"pointers to nothing: {broken}"
