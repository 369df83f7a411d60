"""Which images to box: typical images of k-means clusters, greedy k-center and coverage on pooled embeddings
(``training.suggest``), ``train.draw: suggest``, and
``autoprompt suggest`` on a tiny folder of pictures and a volume, with a stand-in encoder (the choice and the files
are under test here, not the backbone): its boxes.csv template, its Label Studio tasks read back from an export, a
second call and ``train``'s encoding reusing its embeddings."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zarr
from pydantic import ValidationError

from autoprompt import cli, suggest_boxes
from autoprompt.data.box_templates import is_template
from autoprompt.data.boxes import read_boxes
from autoprompt.data.prepared import task_table
from autoprompt.errors import InputError
from autoprompt.model import runtimes
from autoprompt.own_data import DATASET, encode_boxed, folder_settings, prepare_boxed, read_folder, work_layout
from autoprompt.settings import FolderPrepare, TrainSettings, load_settings
from autoprompt.training import suggest
from autoprompt.training.fewshot import Spread, draw_features, draw_subset, fewshot_ids, plan_runs
from tests.helpers import RUNTIME_CACHE, write_pictures
from tests.test_cli import write_volume


# ------------------------------------------------------------------------------------------------------- the core
def clusters(k: int, per: int, dims: int = 16, spread: float = 0.01, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` tight clusters of ``per`` unit vectors each: the features, and each row's cluster."""
    rng = np.random.default_rng(seed)
    centres = normalise(rng.normal(size=(k, dims)))
    labels = np.repeat(np.arange(k), per)
    return normalise(centres[labels] + spread * rng.normal(size=(k * per, dims))), labels


def normalise(features: np.ndarray) -> np.ndarray:
    """N x D rows scaled to unit L2 norm (a zero row stays zero), float32."""
    features = np.asarray(features, np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1)


def test_k_center_takes_one_image_from_each_cluster() -> None:
    features, labels = clusters(k=5, per=8)
    picked = suggest.choose(features, 5)
    assert sorted(labels[picked]) == [0, 1, 2, 3, 4], "one pick per cluster"
    assert picked[0] == suggest.medoid(features), "from the medoid"
    assert suggest.choose(features, 5) == picked, "deterministic"
    assert suggest.choose(features, 5, start=7)[0] == 7 and len(set(suggest.choose(features, 40))) == 40


def test_near_duplicates_are_skipped() -> None:
    features, _ = clusters(k=3, per=1)
    copies = np.concatenate([features, features, features + 1e-4])  # each image three times
    picked = suggest.choose(copies, 6, min_distance=suggest.DUPLICATE)
    assert len(picked) == 3 and sorted(np.array(picked) % 3) == [0, 1, 2], "never two copies of one image"
    assert len(suggest.choose(copies, 6)) == 6, "without a threshold, the copies come last"


def test_box_next_takes_the_doubtful_far_from_the_boxed_then_covers_the_rest() -> None:
    """Five clusters: 0 boxed, the model unsure of a row of cluster 1 and of two near-copies in 2, sure of 3 and 4."""
    features, labels = clusters(k=5, per=4)
    boxed = [0, 1]
    doubtful = [4, 8, 9]
    features[9] = features[8] + 1e-4  # a near-copy of a doubtful row
    picked = suggest.box_next(features, 4, boxed, doubtful, min_distance=suggest.DUPLICATE)
    assert sorted(labels[picked[:2]]) == [1, 2] and set(picked[:2]) <= set(doubtful), "the doubtful first"
    assert not {8, 9} <= set(picked), "never a near-copy"
    assert sorted(labels[picked[2:]]) == [3, 4], "then the folder the boxes leave uncovered"
    assert not set(picked) & set(boxed), "never a boxed row"
    assert suggest.box_next(features, 4, boxed, doubtful, min_distance=suggest.DUPLICATE) == picked, "deterministic"
    alone = suggest.box_next(features, 4, boxed, [], min_distance=suggest.DUPLICATE)
    assert sorted(labels[alone]) == [1, 2, 3, 4], "in no doubt: k-center from the boxed rows"
    assert suggest.box_next(features, 0, boxed, doubtful) == [] and suggest.box_next(features[:0], 3, [], []) == []


def test_slices_spread_across_a_volume() -> None:
    """A volume of 21 slices that look alike: with their positions as a feature, the picks reach both ends and the
    middle; two volumes, each still spread; the duplicate test reads the embeddings alone."""
    rng = np.random.default_rng(1)
    volumes = [rng.normal(size=(1, 8)).repeat(21, 0) + 0.02 * rng.normal(size=(21, 8)) for _ in range(2)]
    look = normalise(np.concatenate(volumes))
    positions = np.tile(np.linspace(0, 1, 21), 2)
    features = suggest.with_positions(look, positions)
    picked = suggest.choose(features, 6)
    for volume in (0, 1):
        mine = sorted(positions[[p for p in picked if p // 21 == volume]])
        assert len(mine) == 3 and mine[0] == 0 and mine[-1] == 1 and 0.25 <= mine[1] <= 0.75, (volume, mine)
    same = suggest.choose(features, 6, min_distance=suggest.DUPLICATE, duplicates=look)
    assert len(same) == 2, "slices that look alike are near-duplicates, wherever they lie"


# ------------------------------------------------------------------------------------------------ train.draw: suggest
def test_typical_spreads_a_volumes_slices_by_thirds() -> None:
    """Two volumes of 21 slices that look alike: with their positions as a feature, the k-means clusters cut each
    volume along its length, so each volume's three picks lie one in each third; without the positions, the picks
    fall where the noise puts them."""
    rng = np.random.default_rng(1)
    volumes = [rng.normal(size=(1, 8)).repeat(21, 0) + 0.02 * rng.normal(size=(21, 8)) for _ in range(2)]
    look = normalise(np.concatenate(volumes))
    positions = np.tile(np.linspace(0, 1, 21), 2)
    picked = suggest.typical(suggest.with_positions(look, positions), 6)
    for volume in (0, 1):
        mine = sorted(positions[[p for p in picked if p // 21 == volume]])
        assert [int(min(p * 3, 2)) for p in mine] == [0, 1, 2], (volume, mine)
    blind = suggest.typical(look, 6)
    assert any(sorted(int(min(positions[p] * 3, 2)) for p in blind if p // 21 == v) != [0, 1, 2] for v in (0, 1))


def test_train_draw_suggest_is_a_setting(tmp_path: Path) -> None:
    assert TrainSettings(draw="suggest").draw == "suggest"
    with pytest.raises(ValidationError):
        TrainSettings(draw="sugest")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"draw": "k-center"}}))
    with pytest.raises(InputError, match=r"train\.draw.*uniform.*box_area.*suggest"):
        load_settings(path)


@pytest.mark.parametrize("draw", ["suggest", "kcenter"])
def test_the_suggest_draws_give_distinct_spread_shots_as_augment_draws_them(draw: str) -> None:
    """Ten ids in five pairs of look-alikes: four shots take four pairs, each once, whichever subset; subsets take
    different k-means++ seeds (``suggest``) or start from different images (``kcenter``), so on features without
    clusters they differ; subset 0 is what ``autoprompt suggest`` lists by the same rule; ``fewshot_ids`` (augment)
    draws what ``plan_runs`` (train) does."""
    features, labels = clusters(k=5, per=2, seed=3)
    ids = [f"img{i:02d}" for i in range(10)]
    store = zarr.open_group(zarr.storage.MemoryStore(), mode="w")  # pooled reads any grid: 2 x 2 here
    store.create_array("embeddings", data=np.repeat(features[:, :, None, None], 2, 2).repeat(2, 3).astype("float16"))
    table = pd.DataFrame({"id": ids, "subject": ids, "split": "train", "head_area": 500})
    table = table.assign(head_x0=0, head_y0=0, head_x1=20, head_y1=20)
    rows = task_table(table, "head", 10)
    train = TrainSettings(shots=4, subsets=2, draw=draw)
    found = draw_features(rows, train, store)
    assert draw_features(rows, TrainSettings(draw="uniform"), store) is None
    rule = {"suggest": "typical", "kcenter": "kcenter"}[draw]
    assert found.rule == rule
    first, second = (draw_subset(ids, 4, s, 0, spread=found) for s in (0, 1))
    for shots in (first, second):
        assert len(set(shots)) == 4 and len({labels[ids.index(i)] for i in shots}) == 4, shots
    assert draw_subset(ids, 4, 0, 0, spread=found) == first, "the same arguments, the same shots"
    pool = sorted(found.features)
    pooled = np.stack([found.features[i] for i in pool])
    listed = suggest_boxes.pick(pooled, np.zeros(len(pool)), False, 4, min_distance=0.0, method=rule)
    assert first == tuple(sorted(pool[i] for i in listed)), "subset 0: the images autoprompt suggest lists"
    apart = Spread(dict(zip(ids, normalise(np.random.default_rng(4).normal(size=(10, 16))), strict=True)), rule)
    assert len({draw_subset(ids, 4, s, 0, spread=apart) for s in range(3)}) > 1, "subsets differ"
    plan = plan_runs(ids, 4, 2, [0], 0, False, spread=found)
    assert fewshot_ids(table, {"hc18": "head"}, 10, train, store) == sorted({i for r in plan for i in r.ids})


# ------------------------------------------------------------------------------------------------ autoprompt suggest
def fake_embed(encoder, name: str, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A stand-in encoder: N x S x S uint8 -> N x 256 x 64 x 64, each channel the image times a fixed random pattern
    (so that the pooled channels are random projections of the image: copies alike, other images apart)."""
    small = torch.nn.functional.interpolate(images[:, None].float() / 255, size=(64, 64), mode="area")
    patterns = torch.randn(256, 64, 64, generator=torch.Generator().manual_seed(0))
    return (small * patterns).half()


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The encoder replaced by ``fake_embed``; counts the encoders built."""
    built: list[int] = []
    monkeypatch.setattr(runtimes, "build_encoder", lambda *a, **k: built.append(1) or object())
    monkeypatch.setattr(runtimes, "embed", fake_embed)
    return built


def folder(root: Path) -> Path:
    """Six pictures, a copy of the first (img6.png) and a 5-slice volume; an empty boxes.csv header."""
    write_pictures(root, masked=(), boxes={})
    shutil.copy(root / "images/img0.png", root / "images/img6.png")
    write_volume(root / "images/scan.nii.gz")
    return root


def params(root: Path) -> Path:
    path = root / "params.yaml"
    encode = {"runtime_cache": str(RUNTIME_CACHE), "batch_size": 4, "shard_size": 4}
    path.write_text(yaml.safe_dump({"prepare": {"mine": {"reader": "folder", "crop": 64}}, "encode": encode}))
    return path


def run_suggest(root: Path, *extra: object) -> None:
    argv = ["suggest", "-i", root / "data", "-n", 6, "--params", params(root), "--device", "cpu", "--threads", 2]
    cli.main([str(a) for a in [*argv, *extra]])


def test_suggest_writes_a_template_and_label_studio_tasks_that_read_back(tmp_path: Path, stand_in, caplog) -> None:
    data = folder(tmp_path / "data")
    with caplog.at_level(logging.INFO):
        run_suggest(tmp_path)
    assert stand_in == [1] and "data/boxes.csv" in caplog.text and " 1. " in caplog.text
    boxes = data / "boxes.csv"
    rows = pd.read_csv(boxes, dtype=str, keep_default_na=False)
    assert is_template(boxes) and list(rows.columns) == ["image", "x_min", "y_min", "x_max", "y_max", "slice"]
    assert len(rows) == 6 and not {"img0.png", "img6.png"} <= set(rows["image"]), "never the copy and its image"
    with pytest.raises(InputError, match=r"boxes\.csv: line 2: no box yet for .*; draw the box or delete the row$"):
        read_boxes(boxes, data / "images")

    studio = data / "label-studio"
    tasks = json.loads((studio / "tasks.json").read_text())
    assert [(t["data"]["image_file"], str(t["data"].get("slice", ""))) for t in tasks] == list(
        zip(rows["image"], rows["slice"], strict=True)
    )
    assert "RectangleLabels" in (studio / "config.xml").read_text()
    export, minimal = [], []
    for number, task in enumerate(tasks, 1):
        png = studio / task["data"]["image"].split("?d=")[1].removeprefix("label-studio/")
        height, width = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).shape
        value = {"x": 10.0, "y": 10.0, "width": 50.0, "height": 50.0, "rotation": 0, "rectanglelabels": ["structure"]}
        result = {"type": "rectanglelabels", "value": value, "original_width": width, "original_height": height}
        export.append({"id": number, **task, "annotations": [{"result": [result]}]})
        minimal.append({"id": number, **task["data"], "label": [{**value, "original_width": width,
                                                                  "original_height": height}]})  # fmt: skip
    for name, content in (("export.json", export), ("min.json", minimal)):
        (tmp_path / name).write_text(json.dumps(content))
        found = read_boxes(tmp_path / name, data / "images")
        read = sorted((image, "" if b.slice is None else str(b.slice)) for image, bs in found.items() for b in bs)
        assert read == sorted(zip(rows["image"], rows["slice"], strict=True)), name


def test_suggest_lists_typical_images_unless_told_otherwise(tmp_path: Path, stand_in, caplog) -> None:
    """The default rule is ``typical``: the list ``--method typical`` gives, not the one ``--method kcenter`` gives."""
    lists = {}
    for name, extra in (("default", ()), ("typical", ("--method", "typical")), ("kcenter", ("--method", "kcenter"))):
        folder(tmp_path / name / "data")
        caplog.clear()
        with caplog.at_level(logging.INFO):
            run_suggest(tmp_path / name, *extra)
        assert f"chosen by {extra[1] if extra else 'typical'}," in caplog.text, "the log names the rule"
        lists[name] = pd.read_csv(tmp_path / name / "data/boxes.csv", dtype=str, keep_default_na=False)
    assert lists["default"].equals(lists["typical"])
    assert not lists["default"].equals(lists["kcenter"]), "the rules list differently on this folder"


def test_a_second_call_encodes_nothing_and_train_copies_the_embeddings(tmp_path: Path, stand_in, caplog) -> None:
    data = folder(tmp_path / "data")
    run_suggest(tmp_path)
    first = (data / "boxes.csv").read_text()
    with caplog.at_level(logging.INFO):
        run_suggest(tmp_path)
    assert stand_in == [1], "no encoder built the second time"
    assert "embeddings.zarr is complete; nothing to do" in caplog.text
    assert (data / "boxes.csv").read_text() == first, "the same choice"

    chosen = pd.read_csv(data / "boxes.csv", dtype=str, keep_default_na=False)
    filled = ["image,x_min,y_min,x_max,y_max,slice"]
    for image, k in zip(chosen["image"], chosen["slice"], strict=True):
        filled.append(f"{image},5,8,20,30,{k}")
    (data / "boxes.csv").write_text("\n".join(filled) + "\n")
    with pytest.raises(InputError, match=r"holds boxes .*give another -o"):
        run_suggest(tmp_path)

    settings = cli.command_settings(cli.build_parser().parse_args(
        ["suggest", "-i", str(data), "--params", str(params(tmp_path)), "--device", "cpu"]), "test")  # fmt: skip
    settings = folder_settings(settings, data / "boxes.csv", None, None)
    work = tmp_path / "data.work"
    prepare_boxed(work_layout(work, data), settings.prepare.dataset(DATASET), work, 0)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        encode_boxed(data, work, settings)
    assert stand_in == [1] and "data: 6 of its images encoded before, copied" in caplog.text


def test_the_boxed_rows_are_matched_as_train_matches_them(tmp_path: Path) -> None:
    """A picture boxed with slice 0 (as a viewer's ROI names it) or none, a volume's slice by its index."""
    data = folder(tmp_path / "data")
    wanted, _, _ = read_folder(data / "images", FolderPrepare(crop=64))
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x_min,y_min,x_max,y_max,slice\nimg0.png,1,1,9,9,0\nimg1.png,1,1,9,9,\n"
                     "scan.nii.gz,1,1,9,9,2\n")  # fmt: skip
    rows = suggest_boxes.boxed_rows(wanted, boxes, data / "images", None)
    assert sorted((wanted[r].file, wanted[r].slice) for r in rows) == [("img0.png", None), ("img1.png", None),
                                                                        ("scan.nii.gz", 2)]  # fmt: skip


def test_suggest_never_writes_into_the_images_or_over_a_users_folder(tmp_path: Path, stand_in) -> None:
    data = folder(tmp_path / "data")
    with pytest.raises(InputError, match=r"-o .* lies inside the input DATA/images"):
        run_suggest(tmp_path, "-o", data / "images")
    (data / "label-studio").mkdir()
    with pytest.raises(InputError, match="label-studio: not written by autoprompt suggest"):
        run_suggest(tmp_path)
    (data / "label-studio").rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(InputError, match=r"--studio-root .*elsewhere: Label Studio serves local files only below"):
        run_suggest(tmp_path, "--studio-root", elsewhere)  # its task URLs would climb out of the root
    assert stand_in == [], "refused before any work"


def test_typical_takes_each_clusters_most_central_image_largest_first():
    """k-means into n clusters; of each, the image nearest its centre, the largest cluster first; an outlier, which
    k-center reaches for, is left alone."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sizes = [30, 20, 10]
    points = np.concatenate([c + rng.normal(0, 0.5, (k, 2)) for c, k in zip(centres, sizes, strict=True)])
    owner = np.repeat([0, 1, 2], sizes)
    picks = suggest.typical(points, 3)
    assert [int(owner[i]) for i in picks] == [0, 1, 2], "one per cluster, the largest first"
    for i in picks:
        members = points[owner == owner[i]]
        spread = np.sort(np.linalg.norm(members - members.mean(0), axis=1))
        assert np.linalg.norm(points[i] - members.mean(0)) <= spread[1], "the most central member"
    with_outlier = np.concatenate([points, [[30.0, 30.0]]])
    assert len(points) in suggest.choose(with_outlier, 3), "k-center reaches for the outlier"
    assert len(points) not in suggest.typical(with_outlier, 3)
    assert suggest.typical(with_outlier, 3) == suggest.typical(with_outlier, 3), "seeded: the same picks"


def test_typical_skips_near_duplicates_as_k_center_does():
    """Blank slices at both ends of a volume: apart by position, alike in the embedding. Each end is a cluster, but
    the second end's slices are near-duplicates of the first's pick: none of them is taken, and the third pick is
    another of the slices that show something."""
    rng = np.random.default_rng(0)
    embedding = np.concatenate([np.zeros(8), np.zeros(8), 10 + rng.normal(0, 0.5, 8)])[:, None]
    position = np.concatenate([rng.normal(0, 0.1, 8), 10 + rng.normal(0, 0.1, 8), 5 + rng.normal(0, 0.1, 8)])
    spread = np.column_stack([embedding, position])
    assert len(suggest.typical(spread, 3)) == 3, "three clusters, three picks"
    picks = suggest.typical(spread, 3, min_distance=0.05, duplicates=embedding)
    assert len(picks) == 3 and sum(int(i) < 16 for i in picks) == 1, "one blank slice, two that show something"
    assert len(suggest.typical(spread[:16], 3, min_distance=0.05, duplicates=embedding[:16])) == 1, "blank alone"


def test_cover_takes_the_dense_shares_first_and_an_outlier_last():
    """Max coverage: the first picks lie in the folder's dense shares, largest first, one per share; an outlier,
    which k-center reaches for, comes only once the shares are covered; copies are skipped."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sizes = [30, 20, 10]
    points = np.concatenate([c + rng.normal(0, 0.5, (k, 2)) for c, k in zip(centres, sizes, strict=True)])
    owner = np.repeat([0, 1, 2], sizes)
    with_outlier = np.concatenate([points, [[30.0, 30.0]]])
    picks = suggest.cover(with_outlier, 3)
    assert [int(owner[i]) for i in picks] == [0, 1, 2], "one per share, the largest first"
    assert len(points) not in picks and len(points) in suggest.choose(with_outlier, 3), "k-center takes the outlier"
    assert suggest.cover(with_outlier, 3) == picks, "deterministic"
    tight, labels = clusters(k=3, per=10)
    five = suggest.cover(tight, 5)
    assert sorted(labels[five[:3]]) == [0, 1, 2] and len(set(five)) == 5, "three cover all; two more, the farthest"
    everything = suggest.cover(with_outlier, len(with_outlier) + 5)
    assert sorted(everything) == list(range(len(with_outlier))), "n over the rows: every row, once"
    assert (
        suggest.cover(points, 0) == []
        and suggest.cover(points[:1], 3) == [0]
        and len(suggest.cover(points[:2], 5)) == 2
    )
    # near-duplicates by another measure (a volume's slices: alike in the embedding, apart by position) are skipped
    alike = points + 0.001  # the embedding without the positions: every row a near-copy of its neighbour below
    positions = np.concatenate([points, np.repeat([[0.0], [50.0]], [30, 30], axis=0)], axis=1)
    skipped = suggest.cover(positions, 6, min_distance=0.05, duplicates=np.concatenate([alike[:30], alike[:30]]))
    firsts = [i % 30 for i in skipped]
    assert len(set(firsts)) == len(firsts), "never two rows whose duplicates-features coincide"
    assert suggest_boxes.pick(with_outlier, np.full(len(with_outlier), 0.5), False, 3, method="cover") == picks
