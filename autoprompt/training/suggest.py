"""Which images to box, so that a few boxes cover a folder (``autoprompt suggest``) or a training split
(``train.draw: suggest``). Three rules, ``autoprompt suggest --method``:

- ``typical`` (the default): the folder cut into ``n`` k-means clusters, and of each the image nearest its centre.
  Each pick stands for a share of the folder, the common image of that share.
- ``kcenter``: greedy k-center (farthest-point). It starts from the medoid (the image nearest the mean) and then adds,
  each time, the image farthest from every image chosen so far: deterministic, never more than twice the best
  covering radius, and any prefix of its picks is itself a greedy cover. It reaches for the folder's outliers.
- ``cover``: greedy maximum coverage of the images within a radius.

Typical is the default because its tens scored at least as well as k-center's through ``autoprompt train`` on real
HC18 and on cardiac phantoms with a tiny apex (``bench/results/draws_rules_authors.json``, ``draws_rules.json``,
``volume_tail_draws.json``); in the pipeline's own draws on HC18 both rules scored under uniform draws
(``draw_suggest.json``). ``docs/own-data.md`` tells the studies.

The features are the backbone's embeddings pooled to one vector per image (``data.embeddings.pooled``: the mean over
the 64 x 64 grid of each of the 256 channels, L2-normalised): cheap, one read of the store, and blind to where in
the frame the structure lies, which the box says anyway.

Near-duplicates (a copy, a volume's neighbouring slices that look alike) teach nothing new: a candidate whose nearest
chosen image lies closer than ``DUPLICATE`` is skipped, so fewer than ``n`` may come back. ``DUPLICATE`` is in the
pooled, normalised space: on 12 HC18 images with LiteMedSAM, distinct images lay 0.18 to 0.47 apart, an image and
its mirror image 0.11, an exact copy 0.

Volumes: slices of one volume look alike, so a rule on the embeddings alone may take two neighbouring slices and none
from the other end, or let one cluster stand for a whole volume. ``with_positions`` appends each slice's relative
position in its volume (0 first, 1 last; 0.5 for a 2D image) as one more feature, weighted in the embeddings' own units
(the median distance of the images to their mean), so that slices apart in a volume count as apart even where they look
alike. A weighted feature rather than strata of slice position: strata would force a pick into every band even where its
slices are blank, while the feature keeps one objective. The duplicate test reads the embedding alone (``duplicates``):
two blank end slices stay duplicates.

Once a model is trained, ``box_next`` lists images where it is unsure (``autoprompt suggest --model``): the same
k-center, started from the images boxed already, first among the rows the model is unsure of
(``inference.pseudo_boxes.doubts``), then among the rest. As boxes to add they did worse than random ones on real
HC18 (``bench/results/draws_next_authors.json``): the list is for review.
"""

from __future__ import annotations

import numpy as np

DUPLICATE = 0.05  # pooled, L2-normalised embeddings closer than this are near-duplicates (see the module's docstring)
POSITION_WEIGHT = 1.0  # a volume's full extent, in units of the median distance of the images to their mean
CENTRE = 0.5  # the position of a 2D image: the middle, so that it is no nearer one end of a volume than the other


def medoid(features: np.ndarray) -> int:
    """The row of N x D ``features`` nearest their mean (the lowest index among ties)."""
    return int(np.argmin(np.linalg.norm(features - features.mean(axis=0), axis=1)))


def with_positions(features: np.ndarray, positions: np.ndarray, weight: float = POSITION_WEIGHT) -> np.ndarray:
    """N x D ``features`` and N relative slice positions (0 to 1; ``CENTRE`` for 2D images) -> N x (D + 1): the
    positions times ``weight`` times the median distance of the rows to their mean appended as the last column."""
    features = np.asarray(features, np.float32)
    scale = float(np.median(np.linalg.norm(features - features.mean(axis=0), axis=1))) if len(features) else 0.0
    column = np.asarray(positions, np.float32)[:, None] * weight * scale
    return np.concatenate([features, column], axis=1)


def choose(
    features: np.ndarray,
    n: int,
    start: int | None = None,
    min_distance: float = 0.0,
    duplicates: np.ndarray | None = None,
) -> list[int]:
    """Up to ``n`` distinct rows of ``features`` (N x D) by greedy k-center, in the order picked.

    ``start``: the first pick (default: the medoid). Then, each time, the row whose nearest chosen row is farthest
    (the lowest index among ties), skipped where its nearest chosen row in ``duplicates`` (N x D', default
    ``features``) is closer than ``min_distance``: then fewer than ``n`` rows come back. No randomness: the same
    features give the same picks."""
    features = np.asarray(features, np.float32)
    if len(features) == 0 or n <= 0:
        return []
    first = medoid(features) if start is None else int(start)
    assert 0 <= first < len(features), f"start {first} is outside 0..{len(features) - 1}"
    picks = _Picks(features, duplicates, min_distance)
    picks.take(first)
    while len(picks.rows) < n and picks.open.any():
        picks.take(picks.farthest())
    return picks.rows


class _Picks:
    """The rows of N x D ``features`` chosen so far (``rows``, in order), those still open (neither chosen nor
    skipped), and each row's distance to the nearest chosen one, in ``features`` and in ``duplicates`` (N x D',
    default ``features``), where a row nearer a chosen one than ``min_distance`` is a near-duplicate."""

    def __init__(self, features: np.ndarray, duplicates: np.ndarray | None, min_distance: float) -> None:
        self.features = features
        self.same = features if duplicates is None else np.asarray(duplicates, np.float32)
        assert len(self.same) == len(features), f"duplicates has {len(self.same)} rows, features {len(features)}"
        self.min_distance = min_distance
        self.rows: list[int] = []
        self.open = np.ones(len(features), bool)
        self.nearest = np.full(len(features), np.inf, np.float32)
        self.nearest_same = np.full(len(features), np.inf, np.float32)

    def farthest(self, among: np.ndarray | None = None) -> int:
        """The open row (of ``among``, an N bool mask, where given) farthest from every chosen one (the lowest index
        among ties)."""
        candidates = self.open if among is None else self.open & among
        return int(np.argmax(np.where(candidates, self.nearest, -np.inf)))

    def centre(self, row: int) -> None:
        """Close ``row`` as one chosen before (a boxed image): the picks keep away from it, and it is not returned."""
        self.open[row] = False
        self.nearest = np.minimum(self.nearest, np.linalg.norm(self.features - self.features[row], axis=1))
        self.nearest_same = np.minimum(self.nearest_same, np.linalg.norm(self.same - self.same[row], axis=1))

    def take(self, row: int) -> bool:
        """Close ``row`` and choose it, unless it is a near-duplicate of a chosen row; whether it was chosen."""
        self.open[row] = False
        if self.nearest_same[row] < self.min_distance:
            return False
        self.rows.append(row)
        self.nearest = np.minimum(self.nearest, np.linalg.norm(self.features - self.features[row], axis=1))
        self.nearest_same = np.minimum(self.nearest_same, np.linalg.norm(self.same - self.same[row], axis=1))
        return True


METHODS = ("kcenter", "typical", "cover")  # greedy k-center (``choose``), k-means' typical rows, max coverage


def box_next(
    features: np.ndarray,
    n: int,
    boxed: list[int],
    doubtful: list[int],
    min_distance: float = 0.0,
    duplicates: np.ndarray | None = None,
) -> list[int]:
    """Up to ``n`` rows of ``features`` (N x D) to box after the ``boxed`` ones, in the order picked: greedy k-center
    from the boxed rows, first among the ``doubtful`` rows (those a trained model is unsure of), then, once none is
    left, among the rest; near-duplicates skipped as in ``choose`` (with nothing boxed, the first pick is the lowest
    open row).

    The model's doubt says where it fails; k-center among the doubtful rows keeps two boxes from going to one
    failure (a volume's neighbouring slices, a run of alike images) and each away from the images boxed already."""
    features = np.asarray(features, np.float32)
    if len(features) == 0 or n <= 0:
        return []
    picks = _Picks(features, duplicates, min_distance)
    for row in boxed:
        picks.centre(row)
    doubt = np.zeros(len(features), bool)
    doubt[list(doubtful)] = True
    while len(picks.rows) < n and picks.open.any():
        picks.take(picks.farthest(doubt if (picks.open & doubt).any() else None))
    return picks.rows


def cover(features: np.ndarray, n: int, min_distance: float = 0.0, duplicates: np.ndarray | None = None) -> list[int]:
    """Up to ``n`` distinct rows of ``features`` (N x D) by greedy maximum coverage, in the order picked: each time
    the row whose ball holds the most rows that no chosen row's ball holds yet (the lowest index among ties), skipped
    where its nearest chosen row in ``duplicates`` (N x D', default ``features``) is closer than ``min_distance``.
    Once every row is covered, the rest are taken as ``choose`` takes them, each the farthest from those chosen.

    The balls' radius is the median distance of a row to its (N / n)-th nearest neighbour, so that ``n`` balls in
    the folder's typical density hold about the whole folder. k-center picks the rows farthest from those chosen, the
    outliers first; here a pick stands for the dense share of the folder around it, and an isolated row comes only
    once the shares are covered (maximum coverage for few labels, as in ProbCover, Yehuda et al. 2022). N x N
    distances are held: 100 MB for 5,000 slices."""
    features = np.asarray(features, np.float32)
    count = len(features)
    if count == 0 or n <= 0:
        return []
    picks = _Picks(features, duplicates, min_distance)
    distances = _distances(features)
    k = min(count - 1, max(1, round(count / n)))
    radius = float(np.median(np.partition(distances, k, axis=1)[:, k])) if count > 1 else 0.0
    balls = distances <= radius
    gains = balls.sum(axis=1)  # uncovered rows in each row's ball
    covered = np.zeros(count, bool)
    while len(picks.rows) < n and picks.open.any():
        candidate = picks.farthest() if covered.all() else int(np.argmax(np.where(picks.open, gains, -1)))
        if picks.take(candidate):
            new = balls[candidate] & ~covered
            covered |= new
            gains -= balls[:, new].sum(axis=1)
    return picks.rows


def _distances(features: np.ndarray) -> np.ndarray:
    """N x N Euclidean distances between the rows of N x D ``features`` (float32), without an N x N x D array."""
    squares = np.sum(features.astype(np.float64) ** 2, axis=1)
    gram = features.astype(np.float64) @ features.astype(np.float64).T
    distances = np.sqrt(np.maximum(squares[:, None] + squares[None] - 2 * gram, 0)).astype(np.float32)
    np.fill_diagonal(distances, 0)  # exactly, whatever the rounding
    return distances


def typical(
    features: np.ndarray,
    n: int,
    seed: int = 0,
    iterations: int = 100,
    min_distance: float = 0.0,
    duplicates: np.ndarray | None = None,
) -> list[int]:
    """Up to ``n`` distinct rows of ``features`` (N x D): the folder cut into ``n`` clusters by k-means (k-means++
    start, ``seed``), and of each cluster the row nearest its centre, the largest clusters first. A row whose nearest
    chosen row in ``duplicates`` (N x D', default ``features``) is closer than ``min_distance`` is a near-duplicate:
    the cluster's next most central row is taken instead, and a cluster of near-duplicates alone gives none. Where
    fewer than ``n`` clusters gave a row (that, or a cluster left empty), the rest are taken as ``choose`` takes them,
    each the farthest from those chosen: fewer than ``n`` come back only where the rest are near-duplicates.

    k-center takes the rows farthest from those chosen, the folder's outliers among them; with ten boxes a few
    outliers are a few images that teach the rare case and leave the common one to chance. Here each pick stands for
    a share of the folder (its cluster), the typical image of that share: diverse across clusters, typical within
    them (``bench/results/draws.json`` compares both with uniform draws)."""
    features = np.asarray(features, np.float64)
    count = len(features)
    if count == 0 or n <= 0:
        return []
    k = min(n, count)
    rng = np.random.default_rng(seed)
    centres = [features[int(rng.integers(count))]]
    for _ in range(1, k):  # k-means++: each next centre drawn by squared distance to the nearest chosen one
        nearest = np.min([np.sum((features - c) ** 2, axis=1) for c in centres], axis=0)
        total = nearest.sum()
        index = int(rng.choice(count, p=nearest / total)) if total > 0 else int(rng.integers(count))
        centres.append(features[index])
    centres = np.stack(centres)
    for _ in range(iterations):
        labels = np.argmin(((features[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        moved = np.stack([features[labels == c].mean(0) if np.any(labels == c) else centres[c] for c in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    labels = np.argmin(((features[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    picks = _Picks(features.astype(np.float32), duplicates, min_distance)
    for c in sorted(range(k), key=lambda c: (-int(np.sum(labels == c)), c)):
        members = np.flatnonzero(labels == c)
        for row in members[np.argsort(np.linalg.norm(features[members] - centres[c], axis=1), kind="stable")]:
            if picks.take(int(row)):
                break
    while len(picks.rows) < n and picks.open.any():
        picks.take(picks.farthest())
    return picks.rows
