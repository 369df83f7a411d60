"""Subject-level splits: disjoint, complete, seeded, proportional; fixed subjects keep their split; the authors'
lists: shipped, checked, resolved by subject, conflicts refused."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from autoprompt.data.prepare import apply_split, split_settings
from autoprompt.data.splits import SplitLists, assign_splits, authors_lists, listed_subjects, read_list
from autoprompt.errors import InputError
from tests.helpers import prepare_section, split_table

PAPER = {"train": 507, "val": 77, "test": 148}


def _subjects(n: int = 300, seed: int = 0) -> dict[str, int]:
    """n subjects with one or two images each."""
    sizes = np.random.default_rng(seed).integers(1, 3, size=n)
    return {f"{k:03d}": int(size) for k, size in enumerate(sizes)}


def test_every_subject_gets_exactly_one_split() -> None:
    sizes = _subjects()
    result = assign_splits(sizes, PAPER, seed=0)
    assert set(result) == set(sizes)
    assert set(result.values()) == {"train", "val", "test"}


def test_proportions_of_images_are_kept() -> None:
    """Image counts per split approach the normalised weights (overshoot by at most one subject)."""
    sizes = _subjects()
    total = sum(sizes.values())
    result = assign_splits(sizes, PAPER, seed=0)
    weight = sum(PAPER.values())
    for split in ("test", "val"):
        count = sum(n for subject, n in sizes.items() if result[subject] == split)
        target = round(PAPER[split] / weight * total)
        assert target <= count <= target + 1, f"{split}: {count} images for a target of {target}"
    train = sum(n for subject, n in sizes.items() if result[subject] == "train")
    assert train == pytest.approx(PAPER["train"] / weight * total, abs=3)


def test_same_seed_same_split_other_seed_differs() -> None:
    sizes = _subjects()
    assert assign_splits(sizes, PAPER, seed=3) == assign_splits(dict(reversed(sizes.items())), PAPER, seed=3)
    assert assign_splits(sizes, PAPER, seed=3) != assign_splits(sizes, PAPER, seed=4)


def test_fixed_subjects_keep_their_split() -> None:
    """Fixed subjects keep their split and do not count towards the free subjects' proportions."""
    sizes = _subjects()
    fixed = {f"{k:03d}": "test" for k in range(50)} | {"060": "train", "061": "val"}
    result = assign_splits(sizes, PAPER, seed=0, fixed=fixed)
    assert set(result) == set(sizes)
    for subject, split in fixed.items():
        assert result[subject] == split
    free = {s: n for s, n in sizes.items() if s not in fixed}
    test_free = sum(n for s, n in free.items() if result[s] == "test")
    target = round(PAPER["test"] / sum(PAPER.values()) * sum(free.values()))
    assert target <= test_free <= target + 1


def test_missing_splits_and_bad_proportions() -> None:
    sizes = _subjects(40)
    result = assign_splits(sizes, {"train": 3, "test": 1}, seed=0)
    assert set(result.values()) == {"train", "test"}
    with pytest.raises(AssertionError, match="unknown splits"):
        assign_splits(sizes, {"train": 1, "holdout": 1}, seed=0)
    with pytest.raises(AssertionError, match="positive"):
        assign_splits(sizes, {"train": 0, "test": 0}, seed=0)


def _table(sizes: dict[str, int], fixed: dict[str, str] | None = None) -> pd.DataFrame:
    fixed = fixed or {}
    rows = [
        {"id": f"{subject}_{k}HC", "subject": subject, "split": fixed.get(subject)}
        for subject, n in sizes.items()
        for k in range(n)
    ]
    return pd.DataFrame(rows)


def test_split_table_is_disjoint_by_subject() -> None:
    """Every row gets a split; all the images of one subject share it."""
    sizes = _subjects()
    table = _table(sizes)
    splits = split_table(table, PAPER, seed=0)
    assert splits.notna().all()
    assert (table.assign(split=splits).groupby("subject")["split"].nunique() == 1).all()
    assert splits.tolist() == split_table(table, PAPER, seed=0).tolist()
    assert splits.tolist() != split_table(table, PAPER, seed=1).tolist()
    counts = splits.value_counts()
    assert counts["test"] == pytest.approx(PAPER["test"] / sum(PAPER.values()) * len(table), abs=2)


def test_split_table_keeps_rows_the_dataset_fixes() -> None:
    sizes = _subjects(60)
    fixed = {f"{k:03d}": "test" for k in range(10)}
    table = _table(sizes, fixed)
    splits = split_table(table, PAPER, seed=0)
    fixed_rows = table["subject"].isin(fixed)
    assert (splits[fixed_rows] == "test").all()
    assert splits.notna().all()
    assert (table.assign(split=splits).groupby("subject")["split"].nunique() == 1).all()


# --- the authors' lists ---


def test_authors_lists_ship_with_the_package() -> None:
    """The lists are package data, checked against authors.yaml: HC18 561 / 80 / 165 first images (806), CAMUS
    50 val and 100 test patients, ACDC 10 val patients; no entry in two lists."""
    expected = {
        "hc18": ("image", "proportions", {"train": 561, "val": 80, "test": 165}),
        "camus": ("subject", "train", {"val": 50, "test": 100}),
        "acdc": ("subject", "train", {"val": 10}),
    }
    for dataset, (names, unlisted, counts) in expected.items():
        lists = authors_lists(dataset)
        assert (lists.names, lists.unlisted) == (names, unlisted)
        assert {split: len(entries) for split, entries in lists.entries.items()} == counts
        everything = [entry for entries in lists.entries.values() for entry in entries]
        assert len(set(everything)) == len(everything), f"{dataset}: an entry in two lists"
        assert all(source.startswith("autoprompt/reference/splits/") for source in lists.sources.values())
    hc = authors_lists("hc18").entries
    assert all(re.fullmatch(r"\d{3}_HC", entry) for entries in hc.values() for entry in entries)
    assert ("000_HC" in hc["train"], "002_HC" in hc["test"], "014_HC" in hc["test"]) == (True, True, True)
    assert "patient0011" in authors_lists("camus").entries["test"]
    assert "patient012" in authors_lists("acdc").entries["val"]
    manifest = yaml.safe_load(resources.files("autoprompt.reference").joinpath("splits/authors.yaml").read_text())
    assert manifest["source"]["arxiv"] == "2507.02743" and "box-prompt-learning-VFM" in manifest["source"]["code"]


def test_read_list_checks_count_and_checksum(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("a\n b \n\nc\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_list(path, "list.txt", 3, digest) == ("a", "b", "c")
    with pytest.raises(InputError, match=r"^list\.txt: 3 entries, authors\.yaml says 4"):
        read_list(path, "list.txt", 4)
    with pytest.raises(InputError, match=r"^list\.txt: contents differ from the sha256"):
        read_list(path, "list.txt", 3, "0" * 64)


def _lists(entries: dict[str, tuple[str, ...]], names: str = "subject", unlisted: str = "train") -> SplitLists:
    return SplitLists(names, entries, {split: f"{split}.txt" for split in entries}, unlisted)


def test_a_subject_in_two_lists_raises() -> None:
    table = _table({"001": 1, "002": 1, "003": 1})
    with pytest.raises(InputError, match=r"^test\.txt: 002 puts subject 002 in test, but val\.txt") as error:
        listed_subjects(table, _lists({"val": ("002",), "test": ("003", "002")}))
    assert "\n" not in str(error.value)
    # Two images of one subject in two lists: the subject would straddle them.
    images = _table({"001": 2, "002": 1})
    with pytest.raises(InputError, match="subject 001"):
        listed_subjects(images, _lists({"train": ("001_0HC",), "test": ("001_1HC",)}, names="image"))
    assert listed_subjects(table, _lists({"val": ("002", "002"), "test": ("404",)})) == {"002": "val"}


def test_image_lists_name_the_subject_of_the_image() -> None:
    """An image entry gives its subject's split to all of that subject's images."""
    table = _table({"001": 3, "002": 1, "003": 1})
    lists = _lists({"train": ("001_0HC",), "test": ("002_0HC", "999_0HC")}, names="image", unlisted="proportions")
    assert listed_subjects(table, lists) == {"001": "train", "002": "test"}


def test_apply_split_by_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listed subjects take their list's split; unlisted ones go to train (CAMUS's rule) or are dealt by the
    proportions (HC18's); split_by says which rule decided each row."""
    table = _table({f"{k:03d}": 1 + k % 2 for k in range(40)})
    lists = _lists({"val": ("000_0HC",), "test": ("001_0HC", "002_0HC")}, names="image", unlisted="proportions")
    monkeypatch.setattr("autoprompt.data.prepare.authors_lists", lambda dataset, key: lists)
    out = apply_split(table, "hc18", prepare_section("hc18", split="authors", proportions={"test": 1.0}), seed=0)
    assert list(out.columns[:4]) == ["id", "subject", "split", "split_by"]
    by_subject = out.groupby("subject")[["split", "split_by"]].first()
    assert by_subject.loc["000"].tolist() == ["val", "lists"]
    assert by_subject.loc["001"].tolist() == ["test", "lists"]
    rest = by_subject.drop(["000", "001", "002"])
    assert (rest["split"] == "test").all() and (rest["split_by"] == "proportions").all()
    assert (out[out["subject"] == "001"]["split"] == "test").all(), "the second image follows the first"

    monkeypatch.setattr("autoprompt.data.prepare.authors_lists", lambda dataset, key: _lists(lists.entries, "image"))
    out = apply_split(table, "camus", prepare_section("camus", split="authors"), seed=0)
    rest = out[~out["subject"].isin(["000", "001", "002"])]
    assert (rest["split"] == "train").all() and (rest["split_by"] == "unlisted").all()


def test_apply_split_lists_against_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """A subject the data fixes (ACDC testing/) keeps its split; a list that puts it elsewhere is an error."""
    table = _table({"p1": 1, "p2": 1, "p3": 1}, fixed={"p3": "test"})
    monkeypatch.setattr("autoprompt.data.prepare.authors_lists", lambda dataset, key: _lists({"val": ("p1",)}))
    out = apply_split(table, "acdc", prepare_section("acdc", split="authors"), seed=0)
    assert out.set_index("subject")[["split", "split_by"]].to_dict("index") == {
        "p1": {"split": "val", "split_by": "lists"},
        "p2": {"split": "train", "split_by": "unlisted"},
        "p3": {"split": "test", "split_by": "data"},
    }
    monkeypatch.setattr("autoprompt.data.prepare.authors_lists", lambda dataset, key: _lists({"val": ("p3",)}))
    with pytest.raises(InputError, match=r"^val\.txt: p3 is listed for val, but the data fixes it to test"):
        apply_split(table, "acdc", prepare_section("acdc", split="authors"), seed=0)


def test_apply_split_by_proportions_matches_split_table() -> None:
    table = _table(_subjects(60), fixed={"000": "test"})
    out = apply_split(table, "hc18", prepare_section("hc18", split=PAPER), seed=0)
    assert out["split"].tolist() == split_table(table, PAPER, seed=0).tolist()
    assert set(out["split_by"]) == {"proportions", "data"}
    assert set(out.loc[out["subject"] == "000", "split_by"]) == {"data"}


@pytest.mark.parametrize(
    ("dataset", "settings", "message"),
    [
        ("hc18", {"split": "paper"}, r"prepare\.hc18\.split: 'paper' is not a split; use authors"),
        ("hc18", {"split": {"train": 1, "holdout": 1}}, r"prepare\.hc18\.split: unknown key 'holdout'"),
        ("hc18", {"split": {"train": 0, "test": 0}}, "positive sum"),
        ("hc18", {"split": PAPER, "proportions": PAPER}, r"prepare\.hc18: proportions deal the subjects"),
        ("hc18", {"split": "authors", "proportions": {"train": -1, "test": 2}}, r"proportions\.train is -1"),
    ],
)
def test_bad_split_settings_name_the_params_file(dataset: str, settings: dict, message: str) -> None:
    """Wrong split settings are refused as the file is read: one line naming the file and the key."""
    with pytest.raises(InputError, match=message) as error:
        prepare_section(dataset, **settings)
    assert str(error.value).startswith("test params: prepare.") and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("dataset", "settings", "message"),
    [
        ("hc18", {"split": "authors"}, r"prepare\.hc18\.proportions: missing; the authors' lists leave"),
        ("camus", {"split": "authors", "proportions": PAPER}, r"prepare\.camus\.proportions: not used"),
    ],
)
def test_split_settings_that_the_lists_contradict(dataset: str, settings: dict, message: str) -> None:
    """Whether proportions are needed depends on the authors' lists: checked against them, named the same way."""
    with pytest.raises(InputError, match=message) as error:
        split_settings(dataset, prepare_section(dataset, **settings))
    assert str(error.value).startswith("test params: prepare.") and "\n" not in str(error.value)
