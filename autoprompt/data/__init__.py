"""Dataset readers, keyed by the dataset name used in params.yaml and in file names."""

from __future__ import annotations

from dataclasses import replace

from autoprompt.data import acdc, camus, folder, hc18
from autoprompt.data.records import Case, CaseFiles, Reader
from autoprompt.errors import InputError

READERS: dict[str, Reader] = {reader.name: reader for reader in (hc18.READER, camus.READER, acdc.READER, folder.READER)}


def get_reader(name: str, settings: dict | None = None) -> Reader:
    """The reader of dataset ``name``: ``settings["reader"]`` (``prepare.<name>.reader``) when given, else the
    official layout of that name. The ``folder`` reader's one class is named by ``settings["class"]``."""
    settings = settings or {}
    chosen = settings.get("reader", name)
    if chosen not in READERS:
        raise InputError(
            f"params.yaml: no reader for dataset {chosen!r}; use one of {sorted(READERS)} (prepare.{name}.reader)"
        )
    if chosen == folder.NAME:
        class_name = settings.get("class", "structure")
        if not isinstance(class_name, str) or not class_name.strip():
            raise InputError(f"params.yaml: prepare.{name}.class is {class_name!r}; name the structure, e.g. tumour")
        return replace(READERS[chosen], name=name, classes={class_name: 1})
    return READERS[chosen]


__all__ = ["READERS", "Case", "CaseFiles", "Reader", "get_reader"]
