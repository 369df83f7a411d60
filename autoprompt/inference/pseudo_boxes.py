"""A first round's masks on the images nobody boxed, turned into pseudo-boxes for a second round
(``train.self_training``).

The first round's ensemble segments every unboxed image and slice, post-processed as ``predict`` does (re-prompted,
volumes fitted). A slice gives a pseudo-box when its mask is not empty, its runs agree (``presence``'s ``agreement``
cue: the mean Dice of each run's mask with the ensemble's) and, in a volume, its box fits the sequence (the
``sequence`` cue, against the next slice towards the volume's middle): the evidence the presence rule judges a slice
by, asked here of every slice rather than walked in from a volume's ends. The pseudo-box is the box of the final
mask's largest component, in the prepared frame where the embeddings are, so the second round trains on it as on a
drawn box. Only boxes leave this module: no mask is ever used as a target.

The same judgement, read the other way, says where the model is unsure (``doubts``, for ``autoprompt suggest
--model``): the slices left out because the runs disagree or the box breaks the sequence, which the second round
cannot learn from itself.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm import tqdm

from autoprompt.inference.predictor import Predictor
from autoprompt.inference.presence import Evidence, Presence, off_sequence

log = logging.getLogger(__name__)

REASONS = ("empty", "agreement", "sequence")  # why a slice gives no pseudo-box, in the order they are asked


@dataclass(frozen=True)
class Harvest:
    """What the first round gave: ``rows`` (the store rows that gave a pseudo-box), their M x 4 ``boxes`` (label
    frame, inclusive pixels) and M x 256 x 64 x 64 ``embeddings`` (as read, kept so that they are read once), how many
    slices were ``looked`` at, and how many were left out, by reason."""

    rows: list[int]
    boxes: Tensor
    embeddings: Tensor
    looked: int
    left_out: Counter

    def describe(self) -> str:
        why = ", ".join(f"{self.left_out[r]} {r}" for r in REASONS if self.left_out[r]) or "none"
        return f"{len(self.rows)} of {self.looked} unboxed slices gave a pseudo-box (left out: {why})"


def inner_slice(i: int, z: int) -> int | None:
    """The slice next to ``i`` towards the middle of ``z`` slices (None: ``i`` is the middle, or ``z`` is 1)."""
    middle = (z - 1) / 2
    if i < middle:
        return i + 1
    if i > middle:
        return i - 1
    return None


def reason_left_out(evidence: Evidence, i: int, rule: Presence) -> str | None:
    """Why slice ``i`` gives no pseudo-box under ``rule`` (one of ``REASONS``), or None where it gives one."""
    if not bool(evidence.found[i]):
        return "empty"
    if "agreement" in rule.cues and float(evidence.agreement[i]) < rule.min_agreement:
        return "agreement"
    if "sequence" in rule.cues and off_sequence(evidence, i, inner_slice(i, len(evidence)), rule):
        return "sequence"
    return None


class Judged(NamedTuple):
    """One unboxed slice, judged: its store ``row``, why it gives no pseudo-box (``reason_left_out``; None: it gives
    one), its input's ``evidence``, its ``index`` there and its ``embedding`` (256 x 64 x 64)."""

    row: int
    reason: str | None
    evidence: Evidence
    index: int
    embedding: Tensor


def judged(
    predictor: Predictor,
    inputs: Sequence[list[int]],
    embeddings: Callable[[list[int]], Tensor],
    boxed: set[int],
    rule: Presence,
    desc: str,
) -> Iterator[Judged]:
    """Each unboxed row of a store, judged (``Judged``). ``inputs`` lists each image's (volume's) rows in slice order,
    ``embeddings(rows)`` reads them (Z x 256 x 64 x 64), ``boxed``: the rows a user boxed, segmented with their volume
    (the volume fit needs every slice) but never judged. ``predictor``: the model, post-processed as it says and with
    no presence rule (a slice's evidence is judged here, by ``rule``)."""
    assert predictor.presence is None, "judge the evidence here: a presence rule would empty slices first"
    for volume in tqdm(inputs, desc=desc, unit="input"):
        if all(r in boxed for r in volume):
            continue
        read = embeddings(volume)
        _, evidence = predictor.decode_with_evidence(read)
        for i, row in enumerate(volume):
            if row not in boxed:
                yield Judged(row, reason_left_out(evidence, i, rule), evidence, i, read[i])


def harvest(
    predictor: Predictor,
    inputs: Sequence[list[int]],
    embeddings: Callable[[list[int]], Tensor],
    boxed: set[int],
    rule: Presence,
) -> Harvest:
    """Pseudo-boxes of the unboxed rows of a store (``judged``'s arguments): the first round's model run on each
    input, and the rows whose evidence passes ``rule``."""
    rows: list[int] = []
    boxes: list[Tensor] = []
    kept: list[Tensor] = []
    left_out: Counter = Counter()
    looked = 0
    for row, reason, evidence, i, embedding in judged(
        predictor, inputs, embeddings, boxed, rule, "first round on the unboxed images"
    ):
        looked += 1
        if reason is None:
            rows.append(row)
            boxes.append(evidence.boxes[i])
            kept.append(embedding)
        else:
            left_out[reason] += 1
    if not rows:
        return Harvest(rows, torch.zeros(0, 4, dtype=torch.long), torch.zeros(0), looked, left_out)
    return Harvest(rows, torch.stack(boxes).long(), torch.stack(kept), looked, left_out)


@dataclass(frozen=True)
class Doubts:
    """Where a model is unsure (``autoprompt suggest --model``): the unboxed ``rows`` its runs disagree on or whose
    box breaks its volume's sequence, each row's run ``agreement`` (row -> mean Dice of each run's mask with the
    ensemble's), and how many unboxed rows were ``looked`` at, counted by what the model said (``SAID``)."""

    rows: list[int]
    agreement: dict[int, float]
    looked: int
    said: Counter[str]


SAID = ("disagree", "sequence", "empty", "found")  # doubts' counts: runs disagree, box off the sequence, agreed on


def doubts(
    predictor: Predictor,
    inputs: Sequence[list[int]],
    embeddings: Callable[[list[int]], Tensor],
    boxed: set[int],
    rule: Presence,
) -> Doubts:
    """The unboxed rows the model is unsure of (``judged``'s arguments): its runs agree less than
    ``rule.min_agreement``, whether or not the final mask is empty, or the box breaks the sequence. A second round
    cannot learn these from the model itself. A slice every run leaves empty is not among them: the runs agree the
    structure is absent."""
    rows: list[int] = []
    agreement: dict[int, float] = {}
    said: Counter[str] = Counter()
    for row, reason, evidence, i, _ in judged(predictor, inputs, embeddings, boxed, rule, "the model on each input"):
        agreement[row] = float(evidence.agreement[i])
        if agreement[row] < rule.min_agreement:
            said[SAID[0]] += 1
        elif reason == "sequence":
            said[SAID[1]] += 1
        else:
            said[SAID[2] if reason == "empty" else SAID[3]] += 1
            continue
        rows.append(row)
    return Doubts(rows, agreement, len(agreement), said)
