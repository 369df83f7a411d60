"""Every hostile case (``bench.hostile.cases``) as a test: the command is refused in one line, or succeeds where the
input is valid. Outside ``tests/``: each case starts a command, some of them a training, minutes in all, more than the
suite's budget holds (``tests/`` keeps one test per class of failure). Run them with

    python -m pytest bench/hostile
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.hostile.cases import Probe, answer, cases, names


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Probe:
    """The box-only folder, its params and a model trained on them, shared by every case."""
    return Probe(tmp_path_factory.mktemp("hostile")).build()


@pytest.mark.parametrize(("kind", "name"), names(), ids=[f"{kind}: {name}" for kind, name in names()])
def test_the_case_is_answered_as_expected(probe: Probe, kind: str, name: str) -> None:
    run = next(run for k, n, run in cases(probe) if (k, n) == (kind, name))
    row = answer(kind, name, run(), Path(probe.root))
    assert row["answer"] == row["expected"], f"{kind}, {name}: {row['answer']} ({row['message'] or 'no message'})"
