"""The prepare step: a dataset's files -> clipped images fitted to the square frame, label maps, tight boxes, what
the fit kept of each class, and a subject split (the authors' lists, proportions, or a user's boxes).

``prepare_dataset`` runs it for one dataset; ``prepared.write_prepared`` writes the store and its index.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from autoprompt.data.boxes import MIN_SIDE
from autoprompt.data.folder import BOXES
from autoprompt.data.prepared import BOX, Prepared
from autoprompt.data.preprocess import Geometry, fit_label, fit_to_frame, kept_fraction, tight_box
from autoprompt.data.readers import get_reader
from autoprompt.data.records import Case, CaseFiles, Reader, preprocessing
from autoprompt.data.splits import SPLITS, SplitLists, assign_splits, authors_lists, listed_subjects
from autoprompt.errors import InputError
from autoprompt.settings import DatasetPrepare, Proportions

log = logging.getLogger(__name__)

LOST = 0.01  # an image "lost" a class when the prepared frame keeps less than 1 - LOST of its area
SMALL_SIDE = 4  # pixels: a box drawn by hand this narrow or low in the frame is warned about (under MIN_SIDE: refused)
SPLIT_BY = {
    "lists": "from the lists",
    "data": "fixed by the data",
    "unlisted": "unlisted (the lists' rest)",
    "proportions": "dealt by proportions",
}


def prepare_dataset(
    name: str,
    section: DatasetPrepare,
    raw: Path,
    seed: int,
    on_error: str,
    keep: Callable[[CaseFiles], bool] | None = None,
) -> tuple[Prepared, dict]:
    """Every case of dataset ``name`` under ``raw`` (those ``keep`` keeps), prepared and split as ``section`` (its
    ``prepare.<name>``) says, and the store's attributes: the dataset, frame side, classes and preprocessing record."""
    reader = get_reader(name, section)
    files = [f for f in reader.find(raw, section) if keep is None or keep(f)]
    split_settings(name, section)  # bad split settings stop here, before the images are read
    log.info("%s: %d cases found under %s", name, len(files), raw)
    prepared = prepare_cases(reader, files, section, on_error)
    prepared.table = apply_split(prepared.table, name, section, seed)
    attrs = {
        "dataset": name,
        "crop": section.crop,
        "classes": reader.classes,
        "preprocessing": preprocessing(section).as_dict(),
    }
    return prepared, attrs


def prepare_cases(reader: Reader, files: list[CaseFiles], section: DatasetPrepare, on_error: str = "stop") -> Prepared:
    """Load every case, fit it into the ``crop`` x ``crop`` frame of ``section`` (its ``fit``: ``crop`` or
    ``resize``, see ``preprocess``), and measure each class: its area before and after, the share kept, and its tight
    box. Warns, per class, about the images that lost more than 1% of it.

    A case's boxes drawn by hand (``Case.box_label``) are fitted with its label and give its tight boxes instead of
    the label; the folder reader's rows say where their boxes came from in ``box_from`` (``boxes.csv`` or ``mask``).

    A box drawn by hand that the fit shrinks under ``boxes.MIN_SIDE`` pixels, or cuts away, is refused (a bad case);
    one under ``SMALL_SIDE`` pixels is warned about (``check_fitted_box``).

    ``on_error``: ``stop`` raises the first bad case's InputError; ``skip`` logs it, counts it and goes on.
    """
    assert on_error in ("stop", "skip"), f"on_error must be stop or skip, got {on_error!r}"
    crop, fit = section.crop, section.fit
    images, labels, rows, skipped = [], [], [], []
    for files_of_case in tqdm(files, desc=f"prepare {reader.name}", unit="case"):
        try:
            cases = reader.load(files_of_case, section)
        except InputError as error:
            if on_error == "stop":
                raise
            log.warning("skipped: %s", error)
            skipped.append(str(error))
            continue
        for case in cases:
            image, label, geometry = fit_to_frame(case.image, case.label, crop, fit)
            row = {
                "id": case.id,
                "subject": case.subject,
                "split": case.split,
                "source": case.source,
                "spacing_row": case.spacing[0] / geometry.scale,
                "spacing_col": case.spacing[1] / geometry.scale,
                "height": case.image.shape[0],
                "width": case.image.shape[1],
                "scale": geometry.scale,
                "offset_row": geometry.offset_row,
                "offset_col": geometry.offset_col,
                **case.extra,
            }
            boxes = None if case.box_label is None else fit_label(case.box_label, crop, geometry)
            if boxes is not None:
                try:
                    check_fitted_box(case, boxes, geometry, section)
                except InputError as error:
                    if on_error == "stop":
                        raise
                    log.warning("skipped: %s", error)
                    skipped.append(str(error))
                    continue
            for name, value in reader.classes.items():
                mask = label == value
                area, area_raw = int(mask.sum()), int((case.label == value).sum())
                row[f"{name}_area"] = area
                row[f"{name}_area_raw"] = area_raw
                row[f"{name}_kept"] = kept_fraction(area, area_raw, geometry.scale)
                box = tight_box(mask if boxes is None else boxes == value)
                row.update(zip((f"{name}_{k}" for k in BOX), box or (-1, -1, -1, -1), strict=True))
            if "has_mask" in case.extra:  # the folder reader's rows
                row["box_from"] = BOXES if boxes is not None else "mask"
            images.append(image)
            labels.append(label)
            rows.append(row)
    if not rows:
        raise InputError(f"{reader.name}: no usable case was read ({len(skipped)} skipped); see the log above")
    table = pd.DataFrame(rows)
    duplicates = table["id"][table["id"].duplicated()].tolist()
    assert not duplicates, f"{reader.name}: duplicate case ids {duplicates[:5]}"
    log_losses(table, reader.name, list(reader.classes), fit, crop)
    return Prepared(np.stack(images), np.stack(labels), table, skipped)


def check_fitted_box(case: Case, fitted: np.ndarray, geometry: Geometry, section: DatasetPrepare) -> None:
    """Refuse a case whose box drawn by hand (``case.box_label``) keeps under ``boxes.MIN_SIDE`` pixels of width or
    height in the frame (``fitted``: the box label fitted by ``geometry``), or none at all (shrunk by ``fit:
    resize``, cut by ``fit: crop``, or lost to the in-plane resampling): the run would train on no box, and the
    image would go missing from the training set further on. Warn where it keeps fewer than ``SMALL_SIDE``."""
    drawn, kept = tight_box(case.box_label), tight_box(fitted)
    size = (0, 0) if kept is None else (kept[2] - kept[0] + 1, kept[3] - kept[1] + 1)
    if drawn is None:
        raise InputError(
            f"{case.source} ({case.id}): its box has no pixel left after the resampling to {section.spacing_mm} mm; "
            f"draw a larger box, set a finer spacing ({section.key('spacing')}), or leave the image out"
        )
    x0, y0, x1, y1 = drawn
    fit = f"{section.fit} to {section.crop}"
    shown = f"its box ({x0}, {y0}, {x1}, {y1}) is {size[0]} x {size[1]} pixels after the {fit}"
    if min(size) < MIN_SIDE:
        other = " (or fit: resize)" if section.fit == "crop" else ""
        raise InputError(
            f"{case.source} ({case.id}): {shown}, under {MIN_SIDE}; set a larger crop ({section.key('crop')}){other}, "
            "or leave the image out (remove its box)"
        )
    if min(size) < SMALL_SIDE:
        log.warning(
            "%s (%s): %s; so small a box prompts little: a larger crop (%s) would keep more of it",
            case.source, case.id, shown, section.key("crop"),
        )  # fmt: skip


def log_losses(table: pd.DataFrame, dataset: str, classes: list[str], fit: str, crop: int) -> None:
    """Warn, per class, how many images the fit cut by more than ``LOST`` of the class's area, and the worst one."""
    for name in classes:
        lost = table[table[f"{name}_kept"] < 1 - LOST]
        if lost.empty:
            log.info("%s: every image keeps at least %.0f%% of %s (fit: %s)", dataset, 100 * (1 - LOST), name, fit)
            continue
        worst = lost.loc[lost[f"{name}_kept"].idxmin()]
        log.warning(
            "%s: %d of %d images lost more than %.0f%% of %s to the %s to %d (worst: %s keeps %.1f%%); "
            "see %s_kept in the index, or set fit: resize",
            dataset,
            len(lost),
            len(table),
            100 * LOST,
            name,
            fit,
            crop,
            worst["id"],
            100 * worst[f"{name}_kept"],
            name,
        )


def split_settings(dataset: str, section: DatasetPrepare) -> tuple[SplitLists | None, dict[str, float] | None]:
    """``section``'s split: the authors' lists (None for a split by proportions or by boxes) and the proportions that
    deal the subjects nothing else assigns (None where there are none to deal). ``split: boxes`` (a user's folder)
    gives neither: the reader fixes every split."""
    if section.split == "boxes":
        return None, None
    if isinstance(section.split, Proportions):
        return None, section.split.weights()
    lists = authors_lists(dataset, section.key("split"))
    if lists.unlisted == "proportions":
        if section.proportions is None:
            raise InputError(
                f"{section.key('proportions')}: missing; the authors' lists leave subjects of {dataset} unnamed: add "
                "the proportions that deal them, e.g. proportions: {train: 7, val: 1, test: 2}"
            )
        return lists, section.proportions.weights()
    if section.proportions is not None:
        raise InputError(
            f"{section.key('proportions')}: not used: the authors' {dataset} lists put every subject they do not "
            "name in train; remove it"
        )
    return lists, None


def apply_split(table: pd.DataFrame, dataset: str, section: DatasetPrepare, seed: int) -> pd.DataFrame:
    """``table`` with its ``split`` set for every row, by subject, and ``split_by`` (after ``split``) saying what
    decided it: ``lists`` (the authors' lists), ``data`` (the dataset fixes it: ACDC testing/, CAMUS split files),
    ``unlisted`` (the lists' rule for the subjects they leave out: train) or ``proportions`` (dealt with ``seed``).

    ``section`` is ``prepare.<dataset>``: ``split: authors`` (with ``proportions`` where the lists leave subjects
    to deal, HC18), ``split: {train, val, test}`` proportions, or ``split: boxes`` (the reader fixes every split).
    Logs how many images each way gave each split.
    """
    lists, proportions = split_settings(dataset, section)
    sizes = table.groupby("subject").size().to_dict()
    by_subject = table.dropna(subset=["split"]).groupby("subject")["split"].first().to_dict()
    how = dict.fromkeys(by_subject, "data")
    if lists is None and proportions is None and sizes.keys() - by_subject.keys():
        unfixed = sorted(sizes.keys() - by_subject.keys())
        raise InputError(
            f"{section.key('split')}: boxes, but the reader fixes no split for {len(unfixed)} subjects "
            f"({unfixed[0]}, ...); split: boxes needs reader: folder, or give split proportions"
        )
    if lists is not None:
        listed = listed_subjects(table, lists)
        for subject, split in listed.items():
            if by_subject.get(subject, split) != split:
                raise InputError(
                    f"{lists.sources[split]}: {subject} is listed for {split}, but the data fixes it to "
                    f"{by_subject[subject]} (an official test folder or split file); set "
                    f"prepare.{dataset}.official_split: false where the dataset has it, or split by proportions"
                )
            how.setdefault(subject, "lists")
            by_subject[subject] = split
        if lists.unlisted == "train":
            for subject in sizes.keys() - by_subject.keys():
                by_subject[subject], how[subject] = "train", "unlisted"
        log.info(
            "%s: the authors' lists (%s) name %d of the %d subjects",
            dataset,
            ", ".join(lists.sources.values()),
            len(listed),
            len(sizes),
        )
    if proportions is not None:
        dealt = assign_splits(sizes, proportions, seed, fixed=by_subject)
        how.update(dict.fromkeys(dealt.keys() - by_subject.keys(), "proportions"))
        by_subject = dealt
    out = table.copy()
    out["split"] = out["subject"].map(by_subject)
    out.insert(out.columns.get_loc("split") + 1, "split_by", out["subject"].map(how))
    assert out["split"].notna().all() and out["split_by"].notna().all(), f"{dataset}: rows left without a split"
    log_split_counts(out, dataset)
    return out


def log_split_counts(table: pd.DataFrame, dataset: str) -> None:
    """One line: for each way a split was decided, the images it gave train, val and test."""
    counts = table.groupby(["split_by", "split"]).size()
    parts = []
    for key, words in SPLIT_BY.items():
        if key in counts.index.get_level_values(0):
            shown = ", ".join(f"{split} {counts[key].get(split, 0)}" for split in SPLITS)
            parts.append(f"{words}: {shown}")
        else:
            parts.append(f"{words}: 0")
    log.info("%s: images per split %s", dataset, "; ".join(parts))
