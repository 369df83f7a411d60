"""Subject-level splits: no subject's images fall into two splits; the same seed gives the same split.

Two ways to split, chosen by ``prepare.<dataset>.split``:

- proportions, ``{train: .., val: .., test: ..}``: weights (not image counts), normalised; subjects are shuffled with
  the seed and dealt until each split's share of the images is reached (``assign_splits``).
- ``authors``: the split lists of the authors' follow-up, shipped in ``autoprompt/reference/splits/`` and described by
  its ``authors.yaml`` (``authors_lists``). ``listed_subjects`` resolves them against a prepared table.

Where the data itself fixes a subject's split (ACDC's ``testing/``, CAMUS's official split files), it keeps it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import numpy as np
import pandas as pd
import yaml

from autoprompt.errors import InputError

SPLITS = ("train", "val", "test")
NAMES = ("image", "subject")
UNLISTED = ("train", "proportions")
REFERENCE = "autoprompt/reference/splits"


@dataclass(frozen=True)
class SplitLists:
    """Named split lists of one dataset.

    ``names`` says what an entry names (``image``: an image id, whose subject takes the split; ``subject``).
    ``entries`` maps a split to its entries and ``sources`` to the file they came from (for messages).
    ``unlisted``: what the subjects no list names get, ``train`` or ``proportions`` (dealt by proportions).
    """

    names: str
    entries: dict[str, tuple[str, ...]]
    sources: dict[str, str]
    unlisted: str

    def __post_init__(self) -> None:
        assert self.names in NAMES, f"names must be one of {NAMES}, got {self.names!r}"
        assert self.unlisted in UNLISTED, f"unlisted must be one of {UNLISTED}, got {self.unlisted!r}"
        assert set(self.entries) <= set(SPLITS) and set(self.entries) == set(self.sources), self.entries.keys()


def assign_splits(
    subject_sizes: dict[str, int],
    proportions: dict[str, float],
    seed: int,
    fixed: dict[str, str] | None = None,
) -> dict[str, str]:
    """Subject -> split, so that the image counts of the free subjects approach ``proportions`` (weights such
    as the paper's counts 507 / 77 / 148, normalised here).

    Subjects in ``fixed`` keep their split (an official test folder, a split file). The others are shuffled with
    ``seed`` and dealt to test, then val, each until its share of images is reached; the rest is train.
    """
    assert set(proportions) <= set(SPLITS), f"unknown splits in {proportions}"
    weight = sum(proportions.values())
    assert weight > 0, f"split proportions must be positive, got {proportions}"
    fixed = dict(fixed or {})
    free = sorted(s for s in subject_sizes if s not in fixed)
    total = sum(subject_sizes[s] for s in free)
    order = [free[i] for i in np.random.default_rng(seed).permutation(len(free))]
    result = dict(fixed)
    position = 0
    for split in ("test", "val"):
        target = round(proportions.get(split, 0) / weight * total)
        count = 0
        while position < len(order) and count < target:
            result[order[position]] = split
            count += subject_sizes[order[position]]
            position += 1
    for subject in order[position:]:
        result[subject] = "train"
    return result


def read_list(path: Traversable, shown: str, lines: int | None = None, sha256: str | None = None) -> tuple[str, ...]:
    """The non-empty, stripped lines of a split list; ``lines`` and ``sha256``, when given, must match the file.
    ``shown`` is the path used in messages."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"{shown}: split list unreadable ({error}); restore it from the repository") from error
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise InputError(f"{shown}: contents differ from the sha256 in authors.yaml; restore it from the repository")
    entries = tuple(line.strip() for line in data.decode().splitlines() if line.strip())
    if lines is not None and len(entries) != lines:
        raise InputError(f"{shown}: {len(entries)} entries, authors.yaml says {lines}; restore it from the repository")
    return entries


def authors_lists(dataset: str, key: str = "split") -> SplitLists:
    """The authors' split lists of ``dataset`` (hc18, camus or acdc), as ``autoprompt/reference/splits/authors.yaml``
    describes them, each checked against its line count and sha256; ``key`` names the setting in messages."""
    folder = resources.files("autoprompt.reference").joinpath("splits")
    manifest = yaml.safe_load(folder.joinpath("authors.yaml").read_text())["datasets"]
    if dataset not in manifest:
        raise InputError(
            f"{key}: authors, but {REFERENCE}/authors.yaml has no lists for "
            f"{dataset} (only {sorted(manifest)}); give proportions instead, e.g. split: {{train: 7, val: 1, test: 2}}"
        )
    spec = manifest[dataset]
    entries, sources = {}, {}
    for split, item in spec["lists"].items():
        sources[split] = f"{REFERENCE}/{item['file']}"
        entries[split] = read_list(folder.joinpath(item["file"]), sources[split], item["lines"], item["sha256"])
    return SplitLists(spec["names"], entries, sources, spec["unlisted"])


def listed_subjects(table: pd.DataFrame, lists: SplitLists) -> dict[str, str]:
    """Subject -> split for the subjects that ``lists`` name among the rows of ``table`` (columns ``id``,
    ``subject``). An image entry names the subject of the row with that id; entries absent from the table are
    ignored. A subject named in two lists (or twice in one list's images) for two splits is an InputError."""
    subject_of = dict(zip(table["id"], table["subject"], strict=True)) if lists.names == "image" else None
    present = set(table["subject"])
    result: dict[str, str] = {}
    named_by: dict[str, str] = {}
    for split, entries in lists.entries.items():
        for entry in entries:
            subject = subject_of.get(entry) if subject_of is not None else entry
            if subject is None or subject not in present:
                continue
            if result.get(subject, split) != split:
                raise InputError(
                    f"{lists.sources[split]}: {entry} puts subject {subject} in {split}, but "
                    f"{lists.sources[result[subject]]} ({named_by[subject]}) puts it in {result[subject]}; "
                    "a subject belongs to one list: correct the lists or split by proportions"
                )
            result[subject] = split
            named_by[subject] = entry
    return result
