"""Files that ask a user for boxes (``autoprompt suggest``): a ``boxes.csv`` template and a Label Studio project.

- ``boxes.csv``: the header ``image,x_min,y_min,x_max,y_max[,slice]`` and one row per image (or volume slice) to box,
  corners empty. Filled in, it is the ``boxes.csv`` that ``autoprompt train`` reads; a row still empty is refused
  there in one line (``boxes``: draw the box or delete the row). A file whose rows all lack corners is a template
  (``is_template``): the only ``boxes.csv`` that ``suggest`` replaces.
- Label Studio: ``tasks.json``, a list of tasks to import, each ``{"data": {"image": URL, "image_file": NAME[, "slice":
  K]}}``, the image a PNG render of the slice on its own pixel grid (so that a rectangle's percentages are the
  file's pixels); ``config.xml``, the labeling interface (one ``RectangleLabels`` box on the image). Label Studio keeps
  a task's data in its exports, and ``boxes`` reads ``image_file`` and ``slice`` back from them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from autoprompt.data.boxes import COLUMNS, SLICE, STUDIO_FILE, STUDIO_SLICE

CONFIG_MARK = "<!-- written by autoprompt suggest -->"


@dataclass(frozen=True)
class Wanted:
    """An image to box: its file name in ``images/``, its slice (None for a 2D image) and the id it has once
    prepared (``name`` or ``name_sliceKK``)."""

    file: str
    slice: int | None
    id: str


def csv_template(wanted: Sequence[Wanted]) -> str:
    """The text of a ``boxes.csv`` listing ``wanted`` in order, corners empty; the ``slice`` column where one is a
    slice."""
    volumes = any(w.slice is not None for w in wanted)
    lines = [",".join([*COLUMNS, SLICE] if volumes else COLUMNS)]
    for w in wanted:
        cells = [w.file, "", "", "", ""]
        if volumes:
            cells.append("" if w.slice is None else str(w.slice))
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def is_template(path: Path) -> bool:
    """Whether ``path`` is a ``boxes.csv`` template (``csv_template``'s header, no row with a corner)."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if not rows or [c.strip() for c in rows[0]] not in (list(COLUMNS), [*COLUMNS, SLICE]):
        return False
    return all(not any(cell.strip() for cell in row[1:5]) for row in rows[1:])


def studio_task(url: str, wanted: Wanted) -> dict:
    """One Label Studio task: the image's ``url``, its file and slice."""
    data: dict = {"image": url, STUDIO_FILE: wanted.file}
    if wanted.slice is not None:
        data[STUDIO_SLICE] = wanted.slice
    return {"data": data}


def studio_config(label: str) -> str:
    """A Label Studio labeling interface: the image, one rectangle label ``label``."""
    return (
        f'{CONFIG_MARK}\n<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
        f'  <RectangleLabels name="label" toName="image">\n    <Label value={quoteattr(label)}/>\n'
        "  </RectangleLabels>\n</View>\n"
    )
