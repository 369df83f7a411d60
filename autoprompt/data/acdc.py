"""ACDC (cardiac cine MRI, short axis), official layout.

``<root>/training/patientNNN/`` and ``<root>/testing/patientNNN/``, each with ``Info.cfg`` (``ED: 1``, ``ES: 12``,
``Group: DCM``, ...), the frame volumes ``patientNNN_frameXX.nii.gz`` and their labels ``patientNNN_frameXX_gt.nii.gz``
(1 RV, 2 myocardium, 3 LV). ``XX`` is the frame number, two digits.

Only the end-diastole frame (``ED`` in ``Info.cfg``) is read. Its volume is clipped to its own 0.5/99.5 percentiles and
rescaled to [0, 255] (the volume, not each slice), resampled in-plane to 1 mm x 1 mm on the volume's own voxel grid,
and cut into 2D slices along its third axis (the slice axis of ACDC's NIfTI files). Resampling keeps the direction
matrix and the field of view, so a slice has the orientation stored in the file, a 10 mm structure is 10 pixels wide,
and image and label, resampled onto the same grid (linear / nearest), stay aligned whatever the direction matrix.

Slices whose label is empty of every structure are dropped here from the training patients (no task trains on them,
and each costs an encoder pass); set ``drop_empty: false`` to keep them. The test patients keep every slice: their
volumes are also scored whole, as users have them (``autoprompt.evaluation.volumes``; the paper's protocol still
scores only the slices that hold the structure). Slices without a given class, or below the minimum foreground size,
are left in and dropped per task later (``prepared.task_table``). Patients under ``testing/`` are the test set; those
under ``training/`` are split later by ``prepare``'s split proportions (the paper: 90 train / 10 val patients).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoprompt.data.cardiac import check_label, ed_frame, read_image, read_info
from autoprompt.data.images import on_grid_of, resample_in_plane
from autoprompt.data.preprocess import clip_rescale
from autoprompt.data.records import Case, CaseFiles, Reader
from autoprompt.errors import InputError
from autoprompt.settings import AcdcPrepare

DOWNLOAD = "https://humanheart-project.creatis.insa-lyon.fr/database/"
FIX = f"restore it from the ACDC download ({DOWNLOAD}) or set prepare.on_error: skip"
PATIENT = re.compile(r"^patient\d{3}$")
TEST = "test"
FOLDERS = {"training": None, "testing": TEST}  # folder -> the split it fixes (None: split later)


def find(root: Path, section: AcdcPrepare) -> list[CaseFiles]:
    """Every ``patientNNN`` folder under ``root/training`` and ``root/testing``, with its ``Info.cfg`` (the frame to
    read is known only once that file is read, in ``load``)."""
    folders = [root / name for name in FOLDERS if (root / name).is_dir()]
    if not folders:
        raise InputError(
            f"{root / 'training'}: ACDC patient folders not found; download ACDC from {DOWNLOAD} and "
            f"unzip it so that {root}/training/ and {root}/testing/ exist"
        )
    cases: dict[str, CaseFiles] = {}
    for folder in folders:
        for patient in sorted(p for p in folder.iterdir() if p.is_dir() and PATIENT.match(p.name)):
            if patient.name in cases:
                raise InputError(
                    f"{patient}: patient also found in {cases[patient.name].paths[0].parent}; "
                    "keep one of the two folders"
                )
            cases[patient.name] = CaseFiles(patient.name, patient.name, (patient / "Info.cfg",))
    if not cases:
        raise InputError(f"{folders[0]}: no patientNNN folders found; download ACDC from {DOWNLOAD}")
    return list(cases.values())


def load(files: CaseFiles, section: AcdcPrepare) -> list[Case]:
    """The end-diastole volume of one patient as 1 mm x 1 mm slices (see the module's docstring)."""
    (info_path,) = files.paths
    folder = info_path.parent
    frame = ed_frame(read_info(info_path, FIX), info_path, FIX)
    stem = f"{folder.name}_frame{frame:02d}"
    image_path, label_path = folder / f"{stem}.nii.gz", folder / f"{stem}_gt.nii.gz"
    image = read_image(image_path, f"Info.cfg names ED frame {frame}; {FIX}", "end-diastole volume")
    label = read_image(label_path, FIX, "label")
    if image.GetDimension() != 3:
        raise InputError(f"{image_path}: expected a 3D volume, got {image.GetDimension()}D; {FIX}")
    labels = check_label(image, label, label_path, FIX)

    pixel_mm = section.spacing
    volume = clip_rescale(sitk.GetArrayFromImage(image)).astype(np.float32)
    volume = resample_in_plane(on_grid_of(volume, image), pixel_mm, sitk.sitkLinear)
    labels = resample_in_plane(on_grid_of(labels, image), pixel_mm, sitk.sitkNearestNeighbor)
    slices = np.rint(np.clip(sitk.GetArrayFromImage(volume), 0, 255)).astype(np.uint8)
    label_slices = sitk.GetArrayFromImage(labels)

    split = FOLDERS.get(folder.parent.name)
    return [
        Case(
            id=f"{stem}_slice{k:02d}",
            subject=files.subject,
            image=slices[k],
            label=label_slices[k],
            spacing=(pixel_mm, pixel_mm),
            source="/".join(image_path.parts[-3:]),
            split=split,
            extra={"ed_frame": float(frame), "slice": float(k), "slice_mm": float(image.GetSpacing()[2])},
        )
        for k in range(slices.shape[0])
        if label_slices[k].any() or not section.drop_empty or split == TEST
    ]


READER = Reader(name="acdc", classes={"rv": 1, "lv": 3}, find=find, load=load)
