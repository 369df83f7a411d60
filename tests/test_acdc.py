"""ACDC reader and phantoms: ED frame from Info.cfg, 1 mm resampling, orientation, splits, bad inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from autoprompt.data import acdc
from autoprompt.data.phantoms import WRITERS
from autoprompt.data.prepare import apply_split, prepare_cases
from autoprompt.data.readers import get_reader
from autoprompt.data.records import Case
from autoprompt.errors import InputError
from autoprompt.settings import AcdcPrepare
from tests.helpers import prepare_section, settings, split_table

ROTATED = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # 90 degrees in-plane, and the slice axis flipped

ACDC = prepare_section("acdc")  # the reader's defaults: 1 mm, crop 256, empty slices dropped


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("acdc") / "raw"
    WRITERS["acdc"](
        root,
        settings(
            simulate={"acdc": {"training": 4, "testing": 2, "size": [96, 84], "slices": [6, 8], "seed": 0}}
        ).simulate.acdc,
    )
    return root


def _write(
    array: np.ndarray,
    path: Path,
    spacing: tuple[float, ...] = (1.5, 1.5, 10.0),
    origin: tuple[float, ...] = (0.0, 0.0, 0.0),
    direction: tuple[float, ...] | None = None,
) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))


def _patient(
    root: Path,
    name: str = "patient001",
    split_folder: str = "training",
    ed: int = 1,
    image: np.ndarray | None = None,
    label: np.ndarray | None = None,
    **geometry: object,
) -> Path:
    """A tiny patient: ``Info.cfg`` and frame ``ed`` (3 slices of 24 x 20 pixels unless given) with its label."""
    folder = root / split_folder / name
    folder.mkdir(parents=True)
    if label is None:
        label = np.zeros((3, 24, 20), np.uint8)
        label[:, 4:10, 3:9], label[:, 10:12, 3:9], label[:2, 14:20, 10:16] = 3, 2, 1
    if image is None:
        image = (100 * label + np.random.default_rng(0).integers(0, 20, label.shape)).astype(np.int16)
    _write(image, folder / f"{name}_frame{ed:02d}.nii.gz", **geometry)
    _write(label, folder / f"{name}_frame{ed:02d}_gt.nii.gz", **geometry)
    (folder / "Info.cfg").write_text(f"ED: {ed}\nES: 12\nGroup: DCM\nHeight: 180.0\nNbFrame: 30\nWeight: 80.0\n")
    return folder


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _load_all(root: Path, section: AcdcPrepare = ACDC) -> list[Case]:
    return [c for f in acdc.find(root, section) for c in acdc.load(f, section)]


def test_registered() -> None:
    reader = get_reader("acdc", ACDC)
    assert reader.name == "acdc" and reader.classes == {"rv": 1, "lv": 3}


def test_info_cfg_chooses_the_ed_frame(tmp_path: Path) -> None:
    folder = _patient(tmp_path, ed=5)
    other = np.zeros((3, 24, 20), np.int16)  # frame 1 exists too, but Info.cfg says ED: 5
    _write(other, folder / "patient001_frame01.nii.gz")
    _write(other.astype(np.uint8), folder / "patient001_frame01_gt.nii.gz")
    cases = _load_all(tmp_path)
    assert [c.id for c in cases] == [f"patient001_frame05_slice{k:02d}" for k in range(3)]
    assert all(c.image.max() > 200 and c.source == "training/patient001/patient001_frame05.nii.gz" for c in cases)
    assert cases[0].subject == "patient001" and cases[0].split is None and cases[0].extra["ed_frame"] == 5


def test_volume_clipping_not_per_slice(tmp_path: Path) -> None:
    label = np.zeros((2, 24, 20), np.uint8)
    label[:, 5:15, 5:15] = 3
    image = np.stack([np.full((24, 20), 100), np.full((24, 20), 1000)]).astype(np.int16)
    image[:, :4] = 0  # 4 of 24 rows: the 0.5 percentile is 0
    _patient(tmp_path, image=image, label=label, spacing=(1.0, 1.0, 10.0))
    dim, bright = _load_all(tmp_path)
    assert bright.image[10, 10] == 255 and 15 < dim.image[10, 10] < 35  # one scale for the whole volume


def test_anisotropic_spacing_resampled_to_1mm_keeps_physical_size(tmp_path: Path) -> None:
    # x (columns) 2.0 mm, y (rows) 0.5 mm: a 10 mm square is 5 columns x 20 rows
    label = np.zeros((2, 60, 15), np.uint8)
    label[:, 20:40, 5:10] = 3
    image = (200 * (label > 0) + 10).astype(np.int16)
    _patient(tmp_path, image=image, label=label, spacing=(2.0, 0.5, 10.0))
    case = _load_all(tmp_path)[0]
    assert case.spacing == (1.0, 1.0)
    assert case.image.shape == (30, 30)  # the field of view, 30 x 30 mm, is kept
    rows, cols = np.nonzero(case.label == 3)
    assert np.ptp(rows) + 1 == pytest.approx(10, abs=1) and np.ptp(cols) + 1 == pytest.approx(10, abs=1)
    assert (case.label == 3).sum() == pytest.approx(100, abs=20)
    assert _iou(case.image > 128, case.label == 3) > 0.8  # linear image, nearest label: the same square


def test_direction_keeps_image_and_label_aligned(tmp_path: Path) -> None:
    label = np.zeros((3, 40, 30), np.uint8)
    label[:, 4:12, 3:9] = 3  # near the top-left corner of the array
    label[:, 24:36, 18:27] = 1
    image = (np.where(label == 3, 300, 0) + np.where(label == 1, 150, 0) + 20).astype(np.int16)
    _patient(tmp_path, image=image, label=label, spacing=(1.5, 1.2, 8.0), origin=(30.0, -20.0, 5.0), direction=ROTATED)
    cases = _load_all(tmp_path)
    for case in cases:
        assert case.image.shape == (48, 45)  # rows 40 x 1.2 mm, columns 30 x 1.5 mm: not rotated
        lv_rows, lv_cols = np.nonzero(case.label == 3)
        assert lv_rows.max() < 16 and lv_cols.max() < 15  # still top-left: no flip, no rotation
        assert _iou(case.image > 190, case.label == 3) > 0.8
        assert _iou((case.image > 64) & (case.image < 190), case.label == 1) > 0.7


def test_testing_folder_is_the_test_split_and_keeps_its_empty_slices(tmp_path: Path) -> None:
    """Training patients' slices without any structure are dropped (drop_empty); the test patients keep every slice,
    so that their volumes can be scored whole."""
    label = np.zeros((4, 24, 20), np.uint8)
    label[1:3, 5:15, 5:15] = 3  # slices 0 and 3 hold no structure
    _patient(tmp_path, "patient001", label=label)
    _patient(tmp_path, "patient101", "testing", label=label)
    cases = _load_all(tmp_path)
    assert {c.id: c.split for c in cases if c.subject == "patient101"} == {
        f"patient101_frame01_slice{k:02d}": "test" for k in range(4)
    }
    assert [c.id[-7:] for c in cases if c.subject == "patient001"] == ["slice01", "slice02"]
    assert {c.split for c in cases if c.subject == "patient001"} == {None}
    kept = _load_all(tmp_path, prepare_section("acdc", drop_empty=False))
    assert len([c for c in kept if c.subject == "patient001"]) == 4


def test_phantoms_prepare_crop_256_and_split(phantom_root: Path) -> None:
    reader = get_reader("acdc", ACDC)
    files = reader.find(phantom_root, ACDC)
    assert [f.id for f in files] == [f"patient{n:03d}" for n in range(1, 7)]
    prepared = prepare_cases(reader, files, ACDC)
    table = prepared.table
    assert prepared.images.shape[1:] == (256, 256) and len(table) >= 6 * 6
    assert (table["spacing_row"] == 1.0).all() and (table["height"] > 84).all()  # 84 rows of 1.25-1.75 mm
    assert (table["scale"] == 1.0).all() and (table[["rv_kept", "lv_kept"]] == 1.0).all().all()  # padded, not cut
    assert (table["lv_area"] >= 100).mean() > 0.9 and (table["rv_area"] >= 100).mean() > 0.5
    assert table["lv_area"].median() > 700 and table["rv_area"].max() > 1000  # mm^2, as in real hearts
    assert set(np.unique(prepared.labels)) == {0, 1, 2, 3}
    splits = split_table(table, {"train": 90, "val": 10}, seed=0)
    by_subject = dict(zip(table["subject"], splits, strict=True))
    assert [by_subject[f"patient{n:03d}"] for n in (5, 6)] == ["test", "test"]
    assert {by_subject[f"patient{n:03d}"] for n in range(1, 5)} <= {"train", "val"}


def test_authors_split(tmp_path: Path) -> None:
    """patient012 (acdc_val.txt) is val, patient013 (under testing/) test, the other training patients train."""
    root = tmp_path / "raw"
    WRITERS["acdc"](
        root,
        settings(
            simulate={"acdc": {"training": 12, "testing": 1, "size": [48, 40], "slices": [3, 3], "seed": 1}}
        ).simulate.acdc,
    )
    reader = get_reader("acdc", ACDC)
    section = prepare_section("acdc", crop=64, split="authors")
    table = apply_split(prepare_cases(reader, reader.find(root, section), section).table, "acdc", section, seed=0)
    by_subject = table.groupby("subject")[["split", "split_by"]].first()
    assert by_subject.loc["patient012"].tolist() == ["val", "lists"]
    assert by_subject.loc["patient013"].tolist() == ["test", "data"]
    rest = by_subject.drop(["patient012", "patient013"])
    assert len(rest) == 11 and (rest["split"] == "train").all() and (rest["split_by"] == "unlisted").all()


def test_phantom_volumes_are_anisotropic_and_oblique(phantom_root: Path) -> None:
    volume = sitk.ReadImage(str(phantom_root / "training" / "patient001" / "patient001_frame01.nii.gz"))
    spacing = volume.GetSpacing()
    assert spacing[2] >= 8 and 1.2 < spacing[0] < 1.8 and volume.GetSize()[:2] == (96, 84)
    assert not np.allclose(volume.GetDirection(), np.eye(3).ravel())
    assert "ED: 1" in (phantom_root / "testing" / "patient005" / "Info.cfg").read_text()


def test_find_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="training"):
        acdc.find(tmp_path, ACDC)
    _patient(tmp_path, "patient001", "training")
    _patient(tmp_path, "patient001", "testing")
    with pytest.raises(InputError, match="also found"):
        acdc.find(tmp_path, ACDC)


def _missing_gt(folder: Path) -> Path:
    path = folder / "patient001_frame01_gt.nii.gz"
    path.unlink()
    return path


def _info_without_ed(folder: Path) -> Path:
    path = folder / "Info.cfg"
    path.write_text("ES: 12\nGroup: DCM\n")
    return path


def _missing_info(folder: Path) -> Path:
    path = folder / "Info.cfg"
    path.unlink()
    return path


def _missing_ed_volume(folder: Path) -> Path:
    (folder / "Info.cfg").write_text("ED: 4\nES: 12\n")
    return folder / "patient001_frame04.nii.gz"


def _bad_label(folder: Path, **geometry: object) -> Path:
    path = folder / "patient001_frame01_gt.nii.gz"
    array = np.zeros(geometry.pop("shape", (3, 24, 20)), np.uint8)
    array.flat[0] = geometry.pop("value", 0)
    _write(array, path, **geometry)
    return path


def _unreadable(folder: Path) -> Path:
    path = folder / "patient001_frame01.nii.gz"
    path.write_bytes(b"\x1f\x8b truncated")
    return path


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_missing_gt, "label file missing"),
        (_info_without_ed, "no end-diastole frame"),
        (_missing_info, "file missing"),
        (_missing_ed_volume, "end-diastole volume file missing"),
        (lambda f: _bad_label(f, shape=(3, 24, 21)), "size"),
        (lambda f: _bad_label(f, spacing=(1.5, 1.4, 10.0)), "spacing"),
        (lambda f: _bad_label(f, origin=(0.0, 0.0, 3.0)), "origin"),
        (lambda f: _bad_label(f, direction=ROTATED), "direction"),
        (lambda f: _bad_label(f, value=7), "unexpected label values"),
        (_unreadable, "unreadable"),
    ],
    ids=[
        "missing_gt",
        "info_without_ed",
        "missing_info",
        "missing_ed",
        "shape",
        "spacing",
        "origin",
        "direction",
        "values",
        "unreadable",
    ],
)
def test_bad_inputs_name_the_file(tmp_path: Path, breaker: Callable[[Path], Path], message: str) -> None:
    path = breaker(_patient(tmp_path))
    (files,) = acdc.find(tmp_path, ACDC)
    with pytest.raises(InputError, match=message) as error:
        acdc.load(files, ACDC)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_on_error_skip_goes_on(tmp_path: Path) -> None:
    _patient(tmp_path, "patient001")
    _info_without_ed(_patient(tmp_path, "patient002"))
    prepared = prepare_cases(get_reader("acdc", ACDC), acdc.find(tmp_path, ACDC), ACDC, on_error="skip")
    assert set(prepared.table["subject"]) == {"patient001"} and len(prepared.skipped) == 1
    assert "patient002/Info.cfg" in prepared.skipped[0]


def _ends(anatomy: str, root: Path) -> list[tuple[int, float]]:
    """Each patient's (LV pixels of its most apical slice, RV thickness in mm of its most basal), prepared at 1 mm."""
    phantoms = {"training": 3, "testing": 1, "size": [120, 110], "slices": [4, 5], "seed": 2, "anatomy": anatomy}
    WRITERS["acdc"](root, settings(simulate={"acdc": phantoms}).simulate.acdc)
    out = []
    for files in acdc.find(root, ACDC):
        cases = acdc.load(files, ACDC)
        rv = (cases[0].label == 1).astype(np.uint8)
        out.append((int((cases[-1].label == 3).sum()), 2 * float(cv2.distanceTransform(rv, cv2.DIST_L2, 5).max())))
    return out


def test_tail_phantoms_have_a_tiny_apex_and_a_thin_basal_rv(tmp_path: Path) -> None:
    """anatomy: tail draws the cases real scans miss: an apical LV of a few dozen pixels, a basal RV crescent a few
    millimetres thick; classic keeps the smooth shrink."""
    tail, classic = _ends("tail", tmp_path / "tail"), _ends("classic", tmp_path / "classic")
    assert all(10 <= lv <= 80 and rv <= 7 for lv, rv in tail), tail
    assert all(lv > 200 and rv > 15 for lv, rv in classic), classic


def test_beyond_adds_unlabelled_slices_with_blood_above_the_base_and_tissue_below_the_apex(tmp_path: Path) -> None:
    """simulate.acdc.beyond: that many slices more at each end, labelled empty, whose content is what real scans
    show there (bright pools of blood above the base, tissue below the apex); the ventricles' labels are those of
    beyond 0."""
    phantoms = {"training": 1, "testing": 0, "size": [120, 110], "slices": [4, 4], "seed": 2, "anatomy": "tail"}
    volumes = {}
    for beyond in (0, 2):
        root = tmp_path / str(beyond)
        WRITERS["acdc"](root, settings(simulate={"acdc": {**phantoms, "beyond": beyond}}).simulate.acdc)
        stem = root / "training" / "patient001" / "patient001_frame01"
        image = sitk.GetArrayFromImage(sitk.ReadImage(f"{stem}.nii.gz"))
        label = sitk.GetArrayFromImage(sitk.ReadImage(f"{stem}_gt.nii.gz"))
        volumes[beyond] = image, label
    (image0, label0), (image2, label2) = volumes[0], volumes[2]
    assert len(image2) == len(label2) == len(image0) + 4
    assert not label2[:2].any() and not label2[-2:].any() and (label2[2:-2] == label0).all()
    assert label0[0].any() and (label0[0] == 1).any()  # the base holds the RV: the slice above it is the atria
    blood = np.percentile(image0[label0 == 3], 50)
    assert (image2[1] > 0.8 * blood).sum() > 200  # the atria and vessels: a bright pool of blood
    assert (np.abs(image2[-1].astype(float) - 0.55 * blood) < 0.1 * blood).sum() > 1000  # the liver's mid-grey
