"""Dataset readers, keyed by the reader name of ``prepare.<dataset>.reader`` (by default the dataset's own name)."""

from __future__ import annotations

from dataclasses import replace

from autoprompt.data import acdc, camus, folder, hc18
from autoprompt.data.records import Reader
from autoprompt.settings import DatasetPrepare, FolderPrepare

READERS: dict[str, Reader] = {reader.name: reader for reader in (hc18.READER, camus.READER, acdc.READER, folder.READER)}


def get_reader(name: str, section: DatasetPrepare) -> Reader:
    """The reader of dataset ``name`` (``section``: its ``prepare.<name>``). A user's folder is named after the
    dataset, and its one class after ``section``'s ``class``."""
    reader = READERS[section.reader]
    if isinstance(section, FolderPrepare):
        return replace(reader, name=name, classes={section.class_name: 1})
    return reader
