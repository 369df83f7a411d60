"""CAMUS (2D echocardiography, apical views), both public releases.

- NIfTI release (``CAMUS_public``, 500 patients): ``<root>/database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}
  .nii.gz``, their labels ``..._gt.nii.gz``, ``Info_2CH.cfg`` and ``Info_4CH.cfg``; optionally ``<root>/database_split/
  subgroup_{training,validation,testing}.txt``, one patient name a line: the official split, kept when present
  (it is 400 / 50 / 50; ``official_split: false`` ignores it, e.g. to deal the paper's 350 / 50 / 100). Patients
  the lists leave out are split by ``prepare``'s proportions, like every patient of the MHD release.
- MHD/RAW release (2019, 450 training patients): ``<root>/training/patientNNNN/patientNNNN_{2CH,4CH}_ED.mhd`` with its
  ``.raw``, its label ``..._ED_gt.mhd`` and the same ``Info_*.cfg``. Its ``testing/`` folder has no public labels.

``root`` is the folder that holds ``database_nifti/`` (read first when both are there) or ``training/``.

One end-diastole image per patient and view. The paper uses one ED image per patient (500 images) and names no view;
``view`` defaults to ``4CH``, the view where LV and LA are both in full, and may be ``2CH`` or a list of both (the
subject stays the patient, so both views of a patient fall in one split). Labels: 1 LV cavity, 2 myocardium, 3 LA.
The images are 2D, stored as 2D or as 3D with a singleton axis (either end); the singleton axis is squeezed and the
spacing of the two others is kept, (row, column) in mm. Each image is clipped to its 0.5/99.5 percentiles and
rescaled to uint8; the centre crop/pad to 512 happens in ``prepared``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoprompt.data.cardiac import check_label, ed_frame, read_image, read_info
from autoprompt.data.preprocess import clip_rescale
from autoprompt.data.records import Case, CaseFiles, Reader
from autoprompt.errors import InputError
from autoprompt.settings import CamusPrepare

DOWNLOAD = "https://www.creatis.insa-lyon.fr/Challenge/camus/"
FIX = f"restore it from the CAMUS download ({DOWNLOAD}) or set prepare.on_error: skip"
PATIENT = re.compile(r"^patient\d{4}$")
VIEWS = ("2CH", "4CH")
RELEASES = {"database_nifti": ".nii.gz", "training": ".mhd"}  # folder -> image extension, in order of preference
SPLIT_FILES = {"subgroup_training.txt": "train", "subgroup_validation.txt": "val", "subgroup_testing.txt": "test"}


def release(root: Path) -> tuple[Path, str]:
    """The patient folder of the release under ``root`` and its image extension."""
    for folder, extension in RELEASES.items():
        if (root / folder).is_dir():
            return root / folder, extension
    raise InputError(
        f"{root / 'database_nifti'}: CAMUS patient folders not found (nor {root / 'training'}); "
        f"download CAMUS from {DOWNLOAD} and unzip it into {root}/"
    )


@functools.lru_cache(maxsize=4)
def official_split(paths: tuple[Path, ...]) -> dict[str, str]:
    """Patient -> split, from the ``subgroup_*.txt`` files in ``paths``."""
    result: dict[str, str] = {}
    for path in paths:
        split = SPLIT_FILES[path.name]
        try:
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(
                f"{path}: unreadable split list ({error}); restore it from {DOWNLOAD} or delete "
                "database_split/ to split by prepare.split"
            ) from error
        for name in names:
            if result.get(name, split) != split:
                raise InputError(
                    f"{path}: {name} is also listed for {result[name]}; restore the official "
                    f"split files from {DOWNLOAD}"
                )
            result[name] = split
    return result


def find(root: Path, section: CamusPrepare) -> list[CaseFiles]:
    """The end-diastole image of each patient and view, with its label, its ``Info_<view>.cfg`` and the official
    split files that exist (unless ``official_split: false``). Files are not checked here but in ``load``."""
    folder, extension = release(root)
    split_files: tuple[Path, ...] = ()
    if section.official_split:
        split_files = tuple(p for name in SPLIT_FILES if (p := root / "database_split" / name).is_file())
    cases = []
    for patient in sorted(p for p in folder.iterdir() if p.is_dir() and PATIENT.match(p.name)):
        for view in section.views:
            stem = f"{patient.name}_{view}_ED"
            paths = (patient / f"{stem}{extension}", patient / f"{stem}_gt{extension}", patient / f"Info_{view}.cfg")
            cases.append(CaseFiles(stem, patient.name, (*paths, *split_files)))
    if not cases:
        raise InputError(f"{folder}: no patientNNNN folders found; download CAMUS from {DOWNLOAD}")
    return cases


def squeeze_2d(array: np.ndarray, spacing: tuple[float, ...], path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """The 2D image of a SimpleITK array ([z,] y, x) with singleton axes, and its (row, column) spacing.

    ``spacing`` is SimpleITK's (x, y[, z]): array axis ``i`` has spacing ``spacing[ndim - 1 - i]``.
    """
    kept = [i for i in range(array.ndim) if array.shape[i] != 1]
    if len(kept) != 2:
        raise InputError(f"{path}: expected one 2D image, got an array of shape {array.shape}; {FIX}")
    row, col = (float(spacing[array.ndim - 1 - i]) for i in kept)
    return array.reshape([array.shape[i] for i in kept]), (row, col)


def load(files: CaseFiles, section: CamusPrepare) -> list[Case]:
    """One end-diastole image, clipped and rescaled, with its label map."""
    image_path, label_path, info_path, *split_paths = files.paths
    extra = {}
    if info_path.is_file():  # the ED image is a file of its own; the info file is only checked and recorded
        extra["ed_frame"] = float(ed_frame(read_info(info_path, FIX), info_path, FIX))
    image = read_image(image_path, FIX, "image")
    label = read_image(label_path, FIX, "label")
    labels = check_label(image, label, label_path, FIX)
    pixels, spacing = squeeze_2d(sitk.GetArrayFromImage(image), image.GetSpacing(), image_path)
    labels, _ = squeeze_2d(labels, image.GetSpacing(), label_path)
    return [
        Case(
            id=files.id,
            subject=files.subject,
            image=clip_rescale(pixels),
            label=labels,
            spacing=spacing,
            source="/".join(image_path.parts[-3:]),
            split=official_split(tuple(split_paths)).get(files.subject),
            extra=extra,
        )
    ]


READER = Reader(name="camus", classes={"lv": 1, "la": 3}, find=find, load=load)
