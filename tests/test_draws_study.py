"""The draws study's tens per rule (``bench/studies/draws.py --tens``): the other tens come from the same store and
rule as ``suggest``'s, and each rule is compared with the uniform tens by the spread between tens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from autoprompt.own_data import suggest_store
from autoprompt.training import suggest
from bench.studies import draws


def _store(data: Path, count: int = 40, seed: int = 0) -> np.ndarray:
    """A ``suggest`` store for the folder ``data`` in ``DATA.work`` (N x 8 x 2 x 2 embeddings, ids ``case00``...)
    and its pooled features, as ``suggest`` reads them."""
    store = suggest_store(data.with_name(data.name + ".work"))
    store.parent.mkdir(parents=True)
    group = zarr.open_group(store, mode="w")
    values = np.random.default_rng(seed).normal(size=(count, 8, 2, 2)).astype(np.float32)
    group.create_array("embeddings", data=values)
    group.attrs.update({"ids": [f"case{i:02d}" for i in range(count)], "backbone": "test"})
    pooled = values.mean(axis=(2, 3))
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


@pytest.mark.parametrize("method", ["kcenter", "typical"])
def test_other_tens_follow_the_rule_from_other_starts(tmp_path: Path, method: str) -> None:
    data = tmp_path / "folder"
    features = _store(data)
    first_rows = suggest.typical(features, 10) if method == "typical" else suggest.choose(features, 10)
    first = [f"case{i:02d}.png" for i in first_rows]
    others = draws.other_tens(data, first, method, 4)
    assert len(others) == 3 and all(len(ten) == 10 and len(set(ten)) == 10 for ten in others)
    assert all(ten != first for ten in others), "another start gives another ten"
    assert others == draws.other_tens(data, first, method, 4), "the same seeds give the same tens"
    if method == "kcenter":  # each is a greedy k-center from its own first pick
        for ten in others:
            rows = [int(name[4:6]) for name in ten]
            assert suggest.choose(features, 10, start=rows[0], min_distance=suggest.DUPLICATE) == rows


def test_other_tens_refuse_a_store_that_is_not_the_one_suggest_listed_from(tmp_path: Path) -> None:
    data = tmp_path / "folder"
    _store(data)
    with pytest.raises(AssertionError, match="not those suggest listed"):
        draws.other_tens(data, [f"case{i:02d}.png" for i in range(10)], "kcenter", 2)


def test_rules_compare_each_rule_with_the_uniform_tens_by_their_spread() -> None:
    means = {"uniform0": 85.0, "uniform1": 87.0, "uniform2": 89.0, "suggested_kcenter": 86.0,
             "suggested_kcenter_seed1": 88.0, "suggested_typical": 90.0, "suggested_typical_seed1": 91.0}  # fmt: skip
    scores = {draw: {"mean": mean, "below_50": int(mean < 86)} for draw, mean in means.items()}
    found = draws.rules(scores, ["kcenter", "typical"], 2, 3)
    assert found["uniform"] == {"each": [85.0, 87.0, 89.0], "mean": 87.0, "std": 2.0, "below_50_each": [1, 0, 0]}
    assert found["kcenter"]["minus_uniform"] == 0.0
    assert found["typical"]["minus_uniform"] == 3.5
    # sqrt(0.5 / 2 + 4 / 3): the rule's tens' variance over their count plus the uniform tens'
    assert found["typical"]["standard_error"] == pytest.approx(np.sqrt(0.5 / 2 + 4 / 3), abs=0.01)


def test_rules_of_the_second_round_read_its_models() -> None:
    scores = {f"{draw}{suffix}": {"mean": mean + bonus, "below_50": 0}
              for draw, mean in {"uniform0": 85.0, "uniform1": 87.0, "suggested_typical": 88.0,
                                 "suggested_typical_seed1": 90.0}.items()
              for suffix, bonus in (("", 0.0), ("_second_round", 1.0))}  # fmt: skip
    first = draws.rules(scores, ["typical"], 2, 2)
    second = draws.rules(scores, ["typical"], 2, 2, "_second_round")
    assert first["typical"]["mean"] == 89.0 and second["typical"]["mean"] == 90.0
    assert second["uniform"]["each"] == [86.0, 88.0] and second["typical"]["minus_uniform"] == 3.0


def test_training_takes_the_rules_and_the_uniform_tens_in_turn() -> None:
    names = ["suggested_kcenter", "suggested_typical", "suggested_kcenter_seed1", "suggested_typical_seed1",
             "uniform0", "uniform1", "kcenter_plus_uniform1"]  # fmt: skip
    assert sorted(names, key=draws.ten_index) == [
        "suggested_kcenter", "suggested_typical", "uniform0", "kcenter_plus_uniform1",
        "suggested_kcenter_seed1", "suggested_typical_seed1", "uniform1",
    ]  # fmt: skip
