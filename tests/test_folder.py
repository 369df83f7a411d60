"""The folder reader (users' own data: images, boxes.csv, optional masks): boxes follow the preprocessing as masks
do, splits by boxes or proportions, box-only rows kept per task, bad rows refused; evaluate's agreement scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import yaml

from autoprompt.data import folder
from autoprompt.data.prepare import apply_split, prepare_cases, split_settings
from autoprompt.data.prepared import Prepared, read_index, task_table, write_prepared
from autoprompt.data.readers import get_reader
from autoprompt.errors import InputError
from autoprompt.evaluation import references, scoring
from stages import prepare
from tests.helpers import BOXES, PICTURE, prepare_section, write_csv, write_pictures

ROTATED = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # 90 degrees in-plane, and the slice axis flipped


def prepared_table(root: Path, settings: dict) -> tuple[Prepared, pd.DataFrame]:
    section = prepare_section("mine", **settings)
    reader = get_reader("mine", section)
    prepared = prepare_cases(reader, reader.find(root, section), section, "stop")
    return prepared, apply_split(prepared.table, "mine", section, seed=0)


def boxes_of(table: pd.DataFrame, name: str = "lesion") -> dict[str, tuple[int, ...]]:
    return {row["id"]: tuple(int(row[f"{name}_{k}"]) for k in ("x0", "y0", "x1", "y1")) for _, row in table.iterrows()}


def test_pictures_split_by_boxes_with_crop(tmp_path: Path) -> None:
    """Boxed images are train with their CSV box shifted by the crop (a box the crop cuts is clipped); unboxed images
    with a mask are test with the mask's box; the image with neither is left out."""
    root = write_pictures(tmp_path / "raw")
    settings = {"reader": "folder", "crop": 64, "fit": "crop", "class": "lesion"}
    prepared, table = prepared_table(root, settings)
    assert get_reader("mine", prepare_section(**settings)).classes == {"lesion": 1}
    assert table["id"].tolist() == ["img0", "img1", "img2", "img3", "img4"]
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    assert train["id"].tolist() == ["img0", "img1", "img2"] and (train["box_from"] == "boxes.csv").all()
    assert test["id"].tolist() == ["img3", "img4"] and (test["box_from"] == "mask").all()
    assert table["has_mask"].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0] and (table["split_by"] == "data").all()
    offset_row, offset_col = (90 - 64) // 2, (120 - 64) // 2  # 13, 28: the crop's centre
    assert (table["offset_row"] == -offset_row).all() and (table["offset_col"] == -offset_col).all()
    found = boxes_of(table)
    for name, (x0, y0, x1, y1) in BOXES.items():
        expected = (
            max(x0 - offset_col, 0),
            max(y0 - offset_row, 0),
            min(x1 - offset_col, 63),
            min(y1 - offset_row, 63),
        )
        assert found[name.removesuffix(".png")] == expected
    assert found["img1"][0] == 0, "the crop cut the box's left side: clipped like a mask"
    for i in (3, 4):  # test rows: the mask's tight box in the frame
        label = prepared.labels[i] == 1
        rows, cols = np.nonzero(label)
        assert found[f"img{i}"] == (cols.min(), rows.min(), cols.max(), rows.max())
    assert (table.loc[table["has_mask"] == 0, "lesion_area"] == 0).all()
    assert (table.loc[table["has_mask"] == 0, "lesion_kept"] == 1.0).all()
    assert not prepared.labels[1].any() and not prepared.labels[2].any(), "no mask: an empty label"
    assert prepared.images.shape == (5, 64, 64) and prepared.images.dtype == np.uint8


def test_pictures_with_resize_map_boxes_within_a_pixel(tmp_path: Path) -> None:
    """With resize (scale 64/120), a CSV box lands where the geometry maps its pixel edges, within one pixel."""
    root = write_pictures(tmp_path / "raw")
    settings = {"reader": "folder", "crop": 64, "fit": "resize", "class": "lesion"}
    _, table = prepared_table(root, settings)
    scale = 64 / 120
    assert table["scale"].to_numpy() == pytest.approx(scale)
    found = boxes_of(table)
    for name, (x0, y0, x1, y1) in BOXES.items():
        row = table[table["id"] == name.removesuffix(".png")].iloc[0]
        left, top = scale * x0 + row["offset_col"], scale * y0 + row["offset_row"]
        right, bottom = scale * (x1 + 1) + row["offset_col"] - 1, scale * (y1 + 1) + row["offset_row"] - 1
        assert np.allclose(found[name.removesuffix(".png")], (left, top, right, bottom), atol=1), name


def test_prepare_stage_records_the_class_and_preprocessing(tmp_path: Path) -> None:
    """The prepare stage with reader: folder (split: boxes by default) writes the store, the index and the attrs."""
    root = write_pictures(tmp_path / "raw")
    params = {
        "prepare": {"seed": 0, "on_error": "stop", "min_foreground": 10},
        "encode": {"backbone": "lite_medsam", "checkpoint": None},
    }
    params["prepare"]["mine"] = {"reader": "folder", "crop": 64, "fit": "resize", "class": "lesion", "spacing": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    store, index = tmp_path / "mine.zarr", tmp_path / "mine.csv"
    args = ["--params", str(tmp_path / "params.yaml"), "--dataset", "mine", "--raw", str(root)]
    prepare.main([*args, "--store", str(store), "--index", str(index)])
    group, table = read_index(store, index)
    assert dict(group.attrs["classes"]) == {"lesion": 1}
    assert group.attrs["preprocessing"] == {"crop": 64, "fit": "resize", "spacing": None, "clip": [0.5, 99.5]}
    assert table["split"].tolist() == ["train"] * 3 + ["test"] * 2
    assert list(table.columns[-2:]) == ["lesion_y1", "box_from"]


def write_volume(path: Path, array: np.ndarray, spacing: tuple[float, float, float]) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((12.0, -40.0, 7.5))
    image.SetDirection(ROTATED)
    sitk.WriteImage(image, str(path))


SPACING = (0.7, 1.3, 5.0)  # x (columns), y (rows), slices: in mm
VOLUME_BOXES = {1: (5, 8, 20, 30), 3: (2, 12, 27, 35)}  # slice -> x_min, y_min, x_max, y_max


@pytest.fixture
def volume_root(tmp_path: Path) -> Path:
    """A 5 x 37 x 29 volume (odd sizes), anisotropic and rotated, its mask = the boxes' rectangles, boxed twice."""
    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    shape = (5, 37, 29)
    image = np.random.default_rng(1).normal(100, 20, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    for k, (x0, y0, x1, y1) in VOLUME_BOXES.items():
        mask[k, y0 : y1 + 1, x0 : x1 + 1] = 1
    mask[4, 10:20, 10:20] = 1  # a masked slice without a box
    image[mask > 0] += 200
    write_volume(root / "images" / "vol.nii.gz", image, SPACING)
    write_volume(root / "masks" / "vol.nii.gz", mask, SPACING)
    rows = [f"vol.nii.gz,{x0},{y0},{x1},{y1},{k}" for k, (x0, y0, x1, y1) in VOLUME_BOXES.items()]
    write_csv(root, rows, "image,x_min,y_min,x_max,y_max,slice")
    return root


def test_volume_boxes_follow_the_resampling_and_the_crop_as_masks_do(volume_root: Path) -> None:
    """spacing: 1.0 resamples in-plane (20 x 48 pixels), then the crop to 32: each boxed slice is a row whose CSV
    box equals the tight box of the same rectangle given as a mask, and lies where the mm geometry says."""
    settings = {"reader": "folder", "crop": 32, "fit": "crop", "spacing": 1.0, "class": "lesion"}
    prepared, table = prepared_table(volume_root, settings)
    assert table["id"].tolist() == ["vol_slice01", "vol_slice03"], "split: boxes reads the boxed slices only"
    assert (table["subject"] == "vol").all() and (table["split"] == "train").all()
    assert table["slice"].tolist() == [1.0, 3.0] and (table["box_from"] == "boxes.csv").all()
    assert (table["spacing_row"] == 1.0).all() and (table["height"] == 48).all() and (table["width"] == 20).all()
    found = boxes_of(table)
    for i, (k, (x0, y0, x1, y1)) in enumerate(VOLUME_BOXES.items()):
        rows, cols = np.nonzero(prepared.labels[i] == 1)
        assert found[f"vol_slice{k:02d}"] == (cols.min(), rows.min(), cols.max(), rows.max()), "as the mask's box"
        # the box's edges in mm from the first voxel edge, on 1 mm pixels, then the crop's offsets
        row = table.iloc[i]
        edges = np.array([x0 * SPACING[0], y0 * SPACING[1], (x1 + 1) * SPACING[0] - 1, (y1 + 1) * SPACING[1] - 1])
        expected = edges + np.array([row["offset_col"], row["offset_row"]] * 2)
        expected = np.clip(expected, 0, 31)
        assert np.allclose(found[f"vol_slice{k:02d}"], expected, atol=1), (found, expected)
        assert 0 < row["lesion_area"] <= row["lesion_area_raw"], "areas are the mask's, after the crop"


def test_volume_with_proportions_reads_boxed_and_masked_slices(volume_root: Path) -> None:
    settings = {"reader": "folder", "crop": 32, "fit": "crop", "spacing": 1.0, "split": {"train": 1, "test": 1}}
    _, table = prepared_table(volume_root, settings)
    assert table["id"].tolist() == ["vol_slice01", "vol_slice03", "vol_slice04"]
    assert table["box_from"].tolist() == ["boxes.csv", "boxes.csv", "mask"]
    assert table["split"].nunique() == 1 and (table["split_by"] == "proportions").all(), "one subject, one split"
    assert "structure_x0" in table, "the class's default name"


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (
            ["vol.nii.gz,5,8,20,30,1", "vol.nii.gz,1,1,4,4,1"],
            r"boxes\.csv: line 3: a second box for vol\.nii\.gz slice 1",
        ),
        (["vol.nii.gz,5,8,29,30,1"], r"boxes\.csv: line 2: box \(5, 8, 29, 30\) leaves vol\.nii\.gz \(29 columns"),
        (["vol.nii.gz,5,8,20,30,"], r"boxes\.csv: line 2: vol\.nii\.gz is a volume of 5 slices; give the box's slice"),
        (["vol.nii.gz,5,8,20,30,5"], r"boxes\.csv: line 2: slice 5 is outside vol\.nii\.gz \(slices 0 to 4\)"),
        (["vol.nii.gz,20,8,5,30,1"], r"boxes\.csv: line 2: box \(20, 8, 5, 30\) has min > max"),
        (["vol.nii.gz,5,8,20.5,30,1"], r"boxes\.csv: line 2: x_max is '20\.5'; give a whole number"),
        (["other.nii.gz,5,8,20,30,1"], r"boxes\.csv: line 2: .*other\.nii\.gz not found"),
    ],
)
def test_bad_rows_are_refused_naming_boxes_csv_and_the_line(volume_root: Path, rows: list[str], match: str) -> None:
    write_csv(volume_root, rows, "image,x_min,y_min,x_max,y_max,slice")
    settings = {"reader": "folder", "crop": 32, "fit": "crop", "spacing": 1.0}
    with pytest.raises(InputError, match=match):
        prepared_table(volume_root, settings)


def test_bad_layouts_are_refused(tmp_path: Path) -> None:
    root = write_pictures(tmp_path / "raw")
    settings = {"reader": "folder", "crop": 64, "fit": "crop"}
    write_csv(root, ["img0.png,1,2,3"], "image,x_min,y_min,x_max")
    with pytest.raises(InputError, match=r"boxes\.csv: columns \['y_max'\] missing"):
        folder.find(root, prepare_section(**settings))
    write_csv(root, ["img0.png,1,2,3,4", "img0.png,5,6,7,8"])
    with pytest.raises(InputError, match=r"boxes\.csv: line 3: a second box for img0\.png \(first on line 2\)"):
        folder.find(root, prepare_section(**settings))
    write_csv(root, ["img0.png,1,2,3,4"])
    cv2.imwrite(str(root / "masks" / "img0.png"), np.zeros((90, 100), np.uint8))
    with pytest.raises(InputError, match=r"masks/img0\.png: size \(100, 90\) differs from its image's \(120, 90\)"):
        prepared_table(root, settings)
    (root / "boxes.csv").unlink()
    with pytest.raises(InputError, match=r"boxes\.csv: file not found"):
        folder.find(root, prepare_section(**settings))


def test_masks_may_have_another_suffix_and_hidden_files_are_ignored(tmp_path: Path) -> None:
    root = write_pictures(tmp_path / "raw", masked=())
    (root / "images" / "._img0.png").write_bytes(b"resource fork")
    (root / "images" / "notes.txt").write_text("not an image")
    (root / "masks").mkdir()
    cv2.imwrite(str(root / "masks" / "img2.bmp"), np.zeros(PICTURE, np.uint8))
    files = {f.id: f.paths for f in folder.find(root, prepare_section(reader="folder"))}
    assert sorted(files) == [f"img{i}" for i in range(6)]
    assert files["img2"][2] == root / "masks" / "img2.bmp" and len(files["img1"]) == 2
    cv2.imwrite(str(root / "masks" / "img2.tif"), np.zeros(PICTURE, np.uint8))
    with pytest.raises(InputError, match=r"img2\.bmp: 2 masks for img2\.png; keep the one named img2\.png"):
        folder.find(root, prepare_section(reader="folder"))


def test_split_boxes_settings() -> None:
    section = prepare_section(reader="folder", crop=64)
    assert split_settings("mine", section) == (None, None), "boxes is the folder reader's default"
    with pytest.raises(InputError, match=r"test params: prepare\.mine: proportions deal the subjects .* remove it"):
        prepare_section(reader="folder", crop=64, proportions={"train": 1})
    with pytest.raises(InputError, match=r"test params: prepare\.hc18: split: boxes needs reader: folder"):
        prepare_section("hc18", crop=64, split="boxes")
    table = pd.DataFrame({"id": ["a", "b"], "subject": ["a", "b"], "split": ["train", None]})
    with pytest.raises(InputError, match=r"prepare\.mine\.split: boxes, but the reader fixes no split for 1 subjects"):
        apply_split(table, "mine", section, seed=0)


def test_box_only_rows_are_kept_per_task(tmp_path: Path) -> None:
    """No masks/ and a proportional split: every boxed image is a task row without a mask; images without a box are
    not read. Written and read back, the index keeps has_mask."""
    boxes = {f"img{i}.png": (30 + i, 25, 90, 65 - i) for i in range(5)}
    root = write_pictures(tmp_path / "raw", masked=(), boxes=boxes)
    settings = {"reader": "folder", "crop": 64, "fit": "crop", "split": {"train": 3, "val": 1, "test": 1}}
    prepared, table = prepared_table(root, settings)
    prepared.table = table
    write_prepared(tmp_path / "mine.zarr", tmp_path / "mine.csv", prepared, {"crop": 64})
    _, index = read_index(tmp_path / "mine.zarr", tmp_path / "mine.csv")
    assert (index["structure_area"] == 0).all() and (index["has_mask"] == 0).all()
    rows = task_table(index, "structure", min_foreground=10)
    assert rows["id"].tolist() == [f"img{i}" for i in range(5)] and not rows["has_mask"].any()
    assert set(rows["split"]) == {"train", "val", "test"} and (rows["x0"] >= 0).all()
    index.loc[0, "structure_x0"] = -1  # a box the frame cut entirely: nothing to train on
    assert task_table(index, "structure", 10)["id"].tolist() == [f"img{i}" for i in range(1, 5)]


def test_task_table_of_an_official_dataset_is_unchanged() -> None:
    """Without has_mask in the index, rows are kept by area alone and has_mask is True."""
    table = pd.DataFrame(
        {"id": ["a", "b"], "subject": ["a", "b"], "split": ["train", "test"], "head_area": [50, 3]}
        | {f"head_{k}": [1, -1] for k in ("x0", "y0", "x1", "y1")}
    )
    rows = task_table(table, "head", 10)
    assert rows["id"].tolist() == ["a"] and rows["has_mask"].tolist() == [True]
    assert list(rows.columns) == ["id", "subject", "split", "row", "x0", "y0", "x1", "y1", "has_mask"]


def _scores(refs: list[references.Reference], runs: dict[str, list[torch.Tensor]]) -> list[references.Scored]:
    """Every run scored on every reference's rows, as evaluate's main does, then each reference's rows summarised."""
    tight = TIGHT_PROBS
    scored = []
    means = {group: torch.stack(probs).mean(0) for group, probs in runs.items()}
    for ref in refs:
        groups = {group: [ref.score(p, 0.5, 1.0) for p in probs] for group, probs in runs.items()}
        tight_rows = tight if ref.name == references.MASK else None
        scored.append(references.score_rows(ref, groups, means, tight_rows, 0.5, 1.0))
    return scored


def _disc(size: int, centre: tuple[int, int], radius: float) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2).float()


N, S = 6, 24
MASKS = torch.stack([_disc(S, (12, 12), 5 + i % 3) for i in range(N)]).bool()
TIGHT_PROBS = torch.stack([_disc(S, (12, 13), 6) for _ in range(N)]) * 0.9
RUNS = {
    "workshop/fewshot": [torch.stack([_disc(S, (12, 12 + r), 6) for _ in range(N)]) * 0.8 for r in range(2)],
    "workshop/all": [torch.stack([_disc(S, (11, 12), 4 + i % 2) for i in range(N)]) * 0.7],
}
SPACINGS = torch.ones(N, 2, dtype=torch.float64)


def test_rows_without_masks_are_scored_for_agreement_with_the_box_prompted_masks() -> None:
    has_masks = torch.tensor([True, False, True, False, False, True])
    refs = references.references(MASKS, has_masks, TIGHT_PROBS > 0.5, SPACINGS, None)
    scored = _scores(refs, RUNS)
    blocks = references.metric_blocks(scored)
    assert blocks["reference"] == {"masks": 3, "box_prompted": 3}
    with_masks, without = torch.tensor([0, 2, 5]), torch.tensor([1, 3, 4])
    run = RUNS["workshop/all"][0]
    expected = scoring.over_images(scoring.score(run[with_masks] > 0.5, MASKS[with_masks], SPACINGS[:3], None, 1.0))
    assert blocks["dice"]["workshop"]["all"]["mean"] == pytest.approx(expected["dice"]["mean"])
    agreement = scoring.score(run[without] > 0.5, TIGHT_PROBS[without] > 0.5, SPACINGS[:3], None, 1.0)
    assert blocks["agreement"]["dice"]["workshop"]["all"]["mean"] == pytest.approx(100 * float(agreement.dice.mean()))
    assert "tight_box" in blocks["dice"] and "tight_box" not in blocks["agreement"]["dice"]
    assert blocks["agreement"]["dice"]["workshop"]["fewshot"]["n"] == 2, "two runs: a row over runs"
    assert set(blocks["agreement"]["dice"]["workshop"]) == {"fewshot", "fewshot_ensemble", "all"}
    table = references.per_image(pd.DataFrame({"id": list("abcdef"), "subject": list("abcdef")}), scored)
    assert table["id"].tolist() == list("abcdef") and list(table.columns[:3]) == ["id", "subject", "reference"]
    assert table["reference"].tolist() == ["mask", "box_prompted", "mask", "box_prompted", "box_prompted", "mask"]
    assert table.loc[has_masks.numpy(), "dice:tight_box"].notna().all()
    assert table.loc[~has_masks.numpy(), "dice:tight_box"].isna().all()
    json.dumps(blocks)


def test_without_any_mask_the_metrics_live_under_agreement_only() -> None:
    refs = references.references(MASKS, torch.zeros(N, dtype=torch.bool), TIGHT_PROBS > 0.5, SPACINGS, list("aabbcc"))
    blocks = references.metric_blocks(_scores(refs, RUNS))
    assert blocks["reference"] == {"masks": 0, "box_prompted": 6}
    assert set(blocks) == {"reference", "agreement"}
    assert set(blocks["agreement"]) == {"dice", "nsd", "hd95_mm", "dice_3d", "misses"}, "3D Dice and misses too"


def test_with_every_mask_the_scores_are_as_before() -> None:
    """Every row with a mask: the metric keys hold what scoring the whole test set gives, nothing under agreement."""
    refs = references.references(MASKS, torch.ones(N, dtype=torch.bool), TIGHT_PROBS > 0.5, SPACINGS, None)
    blocks = references.metric_blocks(_scores(refs, RUNS))
    whole = {
        "tight_box": scoring.over_images(scoring.score(TIGHT_PROBS > 0.5, MASKS, SPACINGS, None, 1.0)),
        "workshop/fewshot": scoring.over_runs(
            [scoring.score(p > 0.5, MASKS, SPACINGS, None, 1.0) for p in RUNS["workshop/fewshot"]]
        ),
    }
    expected = scoring.metrics_json(whole)
    assert blocks["reference"] == {"masks": 6, "box_prompted": 0} and "agreement" not in blocks
    assert blocks["dice"]["tight_box"] == expected["dice"]["tight_box"]
    assert blocks["nsd"]["workshop"]["fewshot"] == expected["nsd"]["workshop"]["fewshot"]
    assert not math.isnan(blocks["dice"]["workshop"]["fewshot_ensemble"]["mean"])
