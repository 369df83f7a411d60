"""CAMUS reader and phantoms: both releases, end-diastole only, labels, spacing, split files, bad inputs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from autoprompt.data import camus
from autoprompt.data.phantoms import WRITERS
from autoprompt.data.phantoms.camus import write_camus_phantoms
from autoprompt.data.prepare import apply_split, prepare_cases
from autoprompt.data.preprocess import clip_rescale
from autoprompt.data.readers import get_reader
from autoprompt.data.records import Case
from autoprompt.errors import InputError
from tests.helpers import prepare_section, settings, split_table

SIZE = (96, 120)  # width, height: small, for speed

CAMUS = prepare_section("camus")  # the reader's defaults: 4CH, crop 512, the official split files


@pytest.fixture(scope="module")
def nifti_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("camus") / "nifti"
    write_camus_phantoms(root, 10, SIZE, seed=0, layout="nifti", split_files=True)
    return root


@pytest.fixture(scope="module")
def mhd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("camus") / "mhd"
    WRITERS["camus"](
        root,
        settings(simulate={"camus": {"subjects": 3, "size": list(SIZE), "seed": 1, "layout": "mhd"}}).simulate.camus,
    )
    return root


def _write(
    array: np.ndarray,
    path: Path,
    spacing: tuple[float, ...],
    origin: tuple[float, ...] | None = None,
    direction: tuple[float, ...] | None = None,
) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    if origin is not None:
        image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))


def _patient(root: Path, name: str = "patient0001", label: np.ndarray | None = None) -> Path:
    """A tiny NIfTI-release patient: a 4CH ED image (3D, singleton z) with a valid label and Info_4CH.cfg."""
    folder = root / "database_nifti" / name
    folder.mkdir(parents=True)
    image = np.random.default_rng(0).integers(0, 255, (1, 20, 16)).astype(np.uint8)
    if label is None:
        label = np.zeros((1, 20, 16), np.uint8)
        label[0, 2:8, 4:12], label[0, 8:10, 4:12], label[0, 12:18, 5:11] = 1, 2, 3
    _write(image, folder / f"{name}_4CH_ED.nii.gz", (0.3, 0.15, 1.0))
    _write(label, folder / f"{name}_4CH_ED_gt.nii.gz", (0.3, 0.15, 1.0))
    (folder / "Info_4CH.cfg").write_text("ED: 1\nES: 12\nNbFrame: 12\nImageQuality: Good\nEF: 55\n")
    return folder


def _load_one(root: Path) -> Case:
    (files,) = camus.find(root, CAMUS)
    (case,) = camus.load(files, CAMUS)
    return case


def test_registered() -> None:
    reader = get_reader("camus", CAMUS)
    assert reader.name == "camus" and reader.classes == {"lv": 1, "la": 3}


def test_nifti_release_end_diastole_of_the_chosen_view(nifti_root: Path) -> None:
    files = camus.find(nifti_root, CAMUS)
    assert [f.id for f in files] == [f"patient{n:04d}_4CH_ED" for n in range(1, 11)]
    assert all(f.paths[0].name.endswith("_4CH_ED.nii.gz") for f in files)
    two = camus.find(nifti_root, prepare_section("camus", view="2CH"))
    assert all(f.id.endswith("_2CH_ED") for f in two)
    both = camus.find(nifti_root, prepare_section("camus", view=["2CH", "4CH"]))
    assert len(both) == 20 and {f.subject for f in both} == {f.subject for f in files}
    with pytest.raises(InputError, match=r"prepare\.camus\.view is '3CH'"):
        prepare_section("camus", view="3CH")

    (case,) = camus.load(files[0], CAMUS)
    folder = nifti_root / "database_nifti" / "patient0001"
    ed = sitk.ReadImage(str(folder / "patient0001_4CH_ED.nii.gz"))
    es = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "patient0001_4CH_ES.nii.gz")))[0]
    assert case.image.shape == case.label.shape == (SIZE[1], SIZE[0])
    assert np.array_equal(case.image, clip_rescale(sitk.GetArrayFromImage(ed)[0]))
    assert not np.array_equal(case.image, clip_rescale(es))
    assert case.spacing == pytest.approx((ed.GetSpacing()[1], ed.GetSpacing()[0]))
    assert case.spacing[1] > case.spacing[0]  # anisotropic: columns coarser than rows
    assert case.source == "database_nifti/patient0001/patient0001_4CH_ED.nii.gz"
    assert case.extra == {"ed_frame": 1.0}


def test_mhd_release(mhd_root: Path) -> None:
    folder = mhd_root / "training" / "patient0001"
    assert (folder / "patient0001_4CH_ED.raw").is_file() and (folder / "patient0001_4CH_ED_gt.mhd").is_file()
    files = camus.find(mhd_root, CAMUS)
    assert [f.id for f in files] == ["patient0001_4CH_ED", "patient0002_4CH_ED", "patient0003_4CH_ED"]
    for f in files:
        (case,) = camus.load(f, CAMUS)
        assert case.image.dtype == np.uint8 and case.image.shape == (SIZE[1], SIZE[0])
        assert set(np.unique(case.label)) <= {0, 1, 2, 3} and case.split is None


def test_phantom_labels_realistic(nifti_root: Path) -> None:
    both = prepare_section("camus", view=["2CH", "4CH"])
    cases = [c for f in camus.find(nifti_root, both) for c in camus.load(f, both)]
    for case in cases:
        areas = np.bincount(case.label.ravel(), minlength=4) / case.label.size
        assert set(np.unique(case.label)) == {0, 1, 2, 3}
        assert 0.04 < areas[1] < 0.2 and 0.02 < areas[3] < 0.15, f"{case.id}: {areas}"
        assert case.image[case.label == 1].mean() < case.image[case.label == 2].mean()  # dark cavity, brighter wall


def test_split_files_honoured(nifti_root: Path) -> None:
    lists = {
        split: (nifti_root / "database_split" / f"subgroup_{name}.txt").read_text().split()
        for split, name in (("train", "training"), ("val", "validation"), ("test", "testing"))
    }
    assert sum(map(len, lists.values())) == 10 and all(lists.values())
    expected = {patient: split for split, patients in lists.items() for patient in patients}
    cases = [c for f in camus.find(nifti_root, CAMUS) for c in camus.load(f, CAMUS)]
    assert {c.subject: c.split for c in cases} == expected
    unofficial = prepare_section("camus", official_split=False)
    ignored = [c for f in camus.find(nifti_root, unofficial) for c in camus.load(f, unofficial)]
    assert {c.split for c in ignored} == {None}


def test_prepare_cases_crop_512(nifti_root: Path, mhd_root: Path) -> None:
    reader = get_reader("camus", CAMUS)
    prepared = prepare_cases(reader, reader.find(nifti_root, CAMUS), CAMUS)
    assert prepared.images.shape == prepared.labels.shape == (10, 512, 512)
    assert (prepared.table["lv_area"] > 100).all() and (prepared.table["la_area"] > 100).all()
    # 120 x 96 frames fit in 512 whole: nothing is cut, and the areas are those of the images as read.
    assert (prepared.table[["lv_kept", "la_kept"]] == 1.0).all().all()
    assert (prepared.table["la_area"] == prepared.table["la_area_raw"]).all()
    splits = split_table(prepared.table, {"train": 350, "val": 50, "test": 100}, seed=0)
    assert splits.tolist() == prepared.table["split"].tolist()  # the official split files fix every patient
    mhd = prepare_cases(reader, reader.find(mhd_root, CAMUS), CAMUS)
    assert mhd.images.shape == (3, 512, 512) and (mhd.table["lv_area"] > 0).all()


def test_authors_split(tmp_path: Path) -> None:
    """patient0011 (camus_test.txt) lands in test, patient0014 and patient0016 (camus_val.txt) in val, and every
    other patient, in no list, in train, as the authors' train set is every other patient."""
    root = tmp_path / "camus"
    write_camus_phantoms(root, 16, SIZE, seed=4)
    reader = get_reader("camus", CAMUS)
    section = prepare_section("camus", crop=128, view="2CH", split="authors")
    table = apply_split(prepare_cases(reader, reader.find(root, section), section).table, "camus", section, 0)
    split = dict(zip(table["subject"], table["split"], strict=True))
    assert (split.pop("patient0011"), split.pop("patient0014"), split.pop("patient0016")) == ("test", "val", "val")
    assert set(split.values()) == {"train"} and len(split) == 13
    assert table.set_index("subject").loc["patient0011", "split_by"] == "lists"
    assert set(table.set_index("subject").loc[list(split), "split_by"]) == {"unlisted"}
    assert table["id"].str.endswith("_2CH_ED").all()


@pytest.fixture(scope="module")
def tall_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two patients as tall as real CAMUS frames (840 rows x 600 columns), the LA reaching the bottom rows."""
    root = tmp_path_factory.mktemp("camus") / "tall"
    write_camus_phantoms(root, 2, (600, 840), seed=5)
    return root


def test_crop_reports_what_it_cuts_and_resize_keeps_it(tall_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """fit: crop at 512 cuts the LA of 840-row frames (kept < 0.99, recorded and warned about); fit: resize keeps
    every class (>= 0.97, nearest-neighbour rounding) and scales the spacing by 840 / 512."""
    reader = get_reader("camus", CAMUS)
    files = reader.find(tall_root, prepare_section("camus", view="2CH"))
    cases = [case for f in files for case in reader.load(f, CAMUS)]
    assert all(case.image.shape == (840, 600) for case in cases)
    assert all(np.nonzero(case.label == 3)[0].max() > 676 for case in cases), "the LA reaches below the crop"

    with caplog.at_level(logging.WARNING):
        crop = prepare_cases(reader, files, prepare_section("camus", fit="crop")).table
    assert (crop["la_kept"] < 0.99).all()
    np.testing.assert_allclose(crop["la_kept"], crop["la_area"] / crop["la_area_raw"])
    np.testing.assert_array_equal(crop["la_area_raw"], [(case.label == 3).sum() for case in cases])
    assert "2 of 2 images lost more than 1% of la to the crop to 512" in caplog.text
    assert crop[["scale", "offset_row", "offset_col"]].values.tolist() == [[1.0, -164, -44]] * 2
    np.testing.assert_allclose(crop["spacing_row"], [case.spacing[0] for case in cases])

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        resize = prepare_cases(reader, files, prepare_section("camus", fit="resize"))
    table = resize.table
    assert (table[["lv_kept", "la_kept"]] >= 0.97).all().all() and (table[["lv_kept", "la_kept"]] <= 1.03).all().all()
    assert "lost more than" not in caplog.text
    np.testing.assert_allclose(table["scale"], 512 / 840)
    assert table[["offset_row", "offset_col"]].values.tolist() == [[0, 73]] * 2  # 366 columns centred in 512
    np.testing.assert_allclose(table["spacing_row"], [case.spacing[0] * 840 / 512 for case in cases])
    np.testing.assert_allclose(table["spacing_col"], [case.spacing[1] * 840 / 512 for case in cases])
    np.testing.assert_array_equal(table[["height", "width"]].values, [[840, 600]] * 2)
    assert table["la_y1"].max() < 512 and (resize.labels[:, :, :73] == 0).all()


@pytest.mark.parametrize("shape", [(20, 16), (1, 20, 16), (20, 16, 1)])
def test_singleton_axis_either_end(tmp_path: Path, shape: tuple[int, ...]) -> None:
    folder = _patient(tmp_path)
    image = np.arange(320, dtype=np.uint8).reshape(shape)
    label = np.zeros(shape, np.uint8)
    spacing = {2: (0.3, 0.15), 3: (0.3, 0.15, 1.0) if shape[0] == 1 else (1.0, 0.3, 0.15)}[len(shape)]
    _write(image, folder / "patient0001_4CH_ED.nii.gz", spacing)
    _write(label, folder / "patient0001_4CH_ED_gt.nii.gz", spacing)
    case = _load_one(tmp_path)
    assert case.image.shape == (20, 16)
    assert case.spacing == pytest.approx((0.15, 0.3))
    assert np.array_equal(case.image, clip_rescale(image.reshape(20, 16)))


def test_release_detection(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="database_nifti"):
        camus.find(tmp_path, CAMUS)
    (tmp_path / "training").mkdir()
    with pytest.raises(InputError, match="no patientNNNN"):
        camus.find(tmp_path, CAMUS)


def _break_missing_gt(folder: Path) -> Path:
    path = folder / "patient0001_4CH_ED_gt.nii.gz"
    path.unlink()
    return path


def _break_info(folder: Path) -> Path:
    path = folder / "Info_4CH.cfg"
    path.write_text("ES: 12\nNbFrame: 12\n")
    return path


def _break_label(folder: Path, **geometry: object) -> Path:
    path = folder / "patient0001_4CH_ED_gt.nii.gz"
    array = np.zeros(geometry.pop("shape", (1, 20, 16)), np.uint8)
    array.flat[0] = geometry.pop("value", 0)
    _write(array, path, geometry.pop("spacing", (0.3, 0.15, 1.0)), **geometry)
    return path


def _break_image(folder: Path) -> Path:
    path = folder / "patient0001_4CH_ED.nii.gz"
    path.write_bytes(b"not a NIfTI file")
    return path


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_break_missing_gt, "label file missing"),
        (_break_info, "no end-diastole frame"),
        (lambda f: _break_label(f, shape=(1, 20, 15)), "size"),
        (lambda f: _break_label(f, spacing=(0.3, 0.2, 1.0)), "spacing"),
        (lambda f: _break_label(f, origin=(5.0, 0.0, 0.0)), "origin"),
        (lambda f: _break_label(f, direction=(-1.0, 0, 0, 0, 1, 0, 0, 0, 1)), "direction"),
        (lambda f: _break_label(f, value=4), "unexpected label values"),
        (_break_image, "unreadable"),
    ],
    ids=["missing_gt", "info_without_ed", "shape", "spacing", "origin", "direction", "values", "unreadable"],
)
def test_bad_inputs_name_the_file(tmp_path: Path, breaker: Callable[[Path], Path], message: str) -> None:
    path = breaker(_patient(tmp_path))
    with pytest.raises(InputError, match=message) as error:
        _load_one(tmp_path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_mhd_without_raw_is_unreadable(tmp_path: Path) -> None:
    root = tmp_path / "mhd"
    write_camus_phantoms(root, 1, (32, 40), seed=2, layout="mhd")
    mhd = root / "training" / "patient0001" / "patient0001_4CH_ED.mhd"
    mhd.with_suffix(".raw").unlink()
    with pytest.raises(InputError, match="unreadable") as error:
        _load_one(root)
    assert str(mhd) in str(error.value)


def test_split_file_conflict(tmp_path: Path) -> None:
    _patient(tmp_path)
    (tmp_path / "database_split").mkdir()
    (tmp_path / "database_split" / "subgroup_training.txt").write_text("patient0001\n")
    (tmp_path / "database_split" / "subgroup_testing.txt").write_text("patient0001\n")
    with pytest.raises(InputError, match="also listed") as error:
        _load_one(tmp_path)
    assert "subgroup_testing.txt" in str(error.value)
