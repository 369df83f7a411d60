"""The picks study (``bench/studies/picks.py``): what it says of a rule's tens before any training, and which
committed tens it reads them against."""

from __future__ import annotations

import numpy as np

from autoprompt.training import suggest
from bench.studies import picks


def blobs(seed: int = 0) -> np.ndarray:
    """60 rows in three tight, unequal clusters in 8 dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:3] * 4
    return np.concatenate([c + 0.1 * rng.standard_normal((n, 8)) for c, n in zip(centres, (30, 20, 10), strict=True)])


def test_cost_is_the_mean_distance_to_the_nearest_pick() -> None:
    """On a line, picks 0 and 3 leave rows 1, 2 at 1 and 2 from their nearest pick and row 4 at 1: (0+1+1+0+1) / 5
    with row 2 nearer pick 3."""
    features = np.arange(5, dtype=np.float32)[:, None]
    assert picks.cost(features, [0, 3]) == np.float32(0.6)
    assert picks.cost(features, [0, 1, 2, 3, 4]) == 0


def test_best_typical_keeps_the_lowest_cost_start() -> None:
    """Of several k-means++ starts, the ten kept is one of theirs, of the lowest cost; one start gives typical's."""
    features = blobs()
    seeds = range(6)
    each = [suggest.typical(features, 4, seed=s) for s in seeds]
    best = picks.best_typical(features, 4, seeds)
    assert best in each
    assert picks.cost(features, best) == min(picks.cost(features, t) for t in each)
    assert picks.best_typical(features, 4, range(2, 3)) == each[2]


def test_percentiles_deciles_and_a_rules_summary() -> None:
    """Percentiles are the share of the pool's areas under each; deciles count the tenths they fall in; two equal
    tens overlap fully, and a ten holding the smallest area boxes a small head."""
    areas = {f"i{k}": float(k) for k in range(20)}
    assert picks.percentiles(["i10", "i0", "i19"], areas) == [0.0, 50.0, 95.0]
    assert picks.deciles([0.0, 5.0, 50.0, 95.0, 100.0]) == 3  # 100 belongs to the top decile
    pool = picks.Pool(list(areas), np.arange(20, dtype=np.float32)[:, None], areas, lambda rule, start: [])
    small, large = picks.ten_record(pool, ["i0", "i9"]), picks.ten_record(pool, ["i15", "i18"])
    assert small["smallest"] == 0.0 and small["deciles"] == 2 and large["smallest"] == 75.0
    summary = picks.rule_summary([small, small, large])
    assert summary["small_head_share"] == round(2 / 3, 2)
    assert summary["jaccard"] == round((1 + 0 + 0) / 3, 3)
    assert summary["distinct"] == 4


def test_committed_tens_are_read_by_pool_and_rule() -> None:
    """The pipeline's runs are read by draw (typical is ``suggest``'s), the folders' tens by name and start; a rule
    the study did not train gives None, and ``same_as`` compares only the tens it trained."""
    pipeline = {"draws": {"suggest": {"runs": [{"ids": ["b", "a"]}]}, "uniform": {"runs": [{"ids": ["c"]}]}}}
    assert picks.committed_ten(pipeline, "pipeline", "typical", 0) == ["b", "a"]
    assert picks.committed_ten(pipeline, "pipeline", "typical", 1) is None
    assert picks.committed_ten(pipeline, "pipeline", "kcenter", 0) is None
    own = {"draws": {"suggested_typical": ["x"], "suggested_typical_seed1": ["y"], "uniform1": ["z"]}}
    assert picks.committed_ten(own, "authors", "typical", 1) == ["y"]
    assert picks.committed_ten(own, "authors", "uniform", 1) == ["z"]
    assert picks.committed_ten(own, "authors", "typical_best", 0) is None
    tens = {"typical": [["a", "b"], ["q"]], "uniform": [["c"], ["r"]], "kcenter": [["d"], ["e"]]}
    assert picks.same_as(pipeline, "pipeline", tens) == {
        "file": "bench/results/draw_suggest.json",
        "typical": True,
        "uniform": True,
    }
    assert picks.same_as(pipeline, "pipeline", {"typical": [["a"], ["q"]]})["typical"] is False
