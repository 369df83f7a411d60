"""The picks study (``bench/studies/picks.py``): what it says of a rule's tens before any training, and which
committed tens it reads them against."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from autoprompt.training import suggest
from autoprompt.training.fewshot import Spread, plan_runs
from bench.studies import picks


def blobs(seed: int = 0) -> np.ndarray:
    """60 rows in three tight, unequal clusters in 8 dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:3] * 4
    return np.concatenate([c + 0.1 * rng.standard_normal((n, 8)) for c, n in zip(centres, (30, 20, 10), strict=True)])


def test_cost_is_the_mean_distance_to_the_nearest_pick() -> None:
    """On a line with picks 0 and 3, rows 1, 2 (nearer pick 3) and 4 lie 1 from their nearest pick, rows 0 and 3 on
    one: 3 / 5."""
    features = np.arange(5, dtype=np.float32)[:, None]
    assert picks.cost(features, [0, 3]) == np.float32(0.6)
    assert picks.cost(features, [0, 1, 2, 3, 4]) == 0


def test_best_typical_keeps_the_lowest_cost_start() -> None:
    """Of several k-means++ starts, the ten kept is one of theirs, of the lowest cost (here not the first start's);
    one start gives typical's."""
    features = blobs()
    seeds = range(1, 6)
    each = [suggest.typical(features, 4, seed=s) for s in seeds]
    best = picks.best_typical(features, 4, seeds)
    assert best in each
    assert picks.cost(features, best) == min(picks.cost(features, t) for t in each)
    assert picks.cost(features, each[0]) > picks.cost(features, best), "the first start must not be the best here"
    assert picks.best_typical(features, 4, range(3, 4)) == each[2]


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


def test_the_pipeline_pools_tens_are_train_draws_subsets() -> None:
    """Each rule's ten from start k is subset k of the pipeline's plan for that train.draw (subset seed 0)."""
    features = blobs(1)
    ids = sorted(f"img{i:03d}" for i in range(len(features)))
    for rule in ("uniform", "typical", "kcenter"):
        spread = None if rule == "uniform" else Spread(dict(zip(ids, features, strict=True)), rule)
        plan = plan_runs(ids[::-1], 5, 3, [0], 0, False, spread=spread)
        for start, run in enumerate(plan):
            assert picks.pipeline_ten(ids, features, 5, 4, rule, start) == list(run.ids), (rule, start)


def test_coverage_pairs_each_run_with_its_own_reprompted_dice() -> None:
    """The pipeline's re-prompted runs are paired with their runs by name, whatever their order; a ten reaching the
    smaller heads scoring higher gives rho -1 on the smallest percentile."""
    areas = {f"i{k}": float(k) for k in range(10)}
    runs = [{"run": f"subset{k}-seed0", "ids": [f"i{k}", "i9"], "dice": 80.0 + k} for k in range(4)]
    again = [{"run": r["run"], "dice": 90.0 - 2 * k} for k, r in enumerate(runs)][::-1]
    results = {
        "draw_suggest": {"draws": {"uniform": {"runs": runs, "runs_reprompted_masks_boxes": again}}},
        "draws_rules_authors": {
            "draws": {f"t{k}": [f"i{k}", "i8"] for k in range(3)},
            "draws_area_percentiles": {f"t{k}": [] for k in range(3)},
            "dice": {f"t{k}": {"mean": 85.0} for k in range(3)},
        },
    }
    pool = picks.Pool(list(areas), np.zeros((10, 1)), areas, lambda rule, start: [])
    found = picks.coverage_and_dice(results, {"pipeline": pool, "authors": pool})
    assert found["pipeline_runs"]["smallest"]["rho"] == 1.0
    assert found["pipeline_runs_reprompted"]["smallest"]["rho"] == -1.0
    assert found["own_data_tens"]["smallest"] == {"rho": None, "p": None, "n": 3}, "constant Dice: no correlation"


def test_bad_options_are_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ten at all, and a results name that would write over a result the study reads, are refused before any
    work, each in one line naming the option."""
    for argv, said in ((["--starts", "0"], "--starts 0: give 1 or more"), (["--name", "draw_suggest"], "--name")):
        monkeypatch.setattr(sys, "argv", ["picks", *argv, "--hc18", "/nonexistent"])
        with pytest.raises(SystemExit) as stopped:
            picks.main()
        assert str(stopped.value).startswith(said)
