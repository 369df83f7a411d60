"""Dataset readers, keyed by the dataset name used in params.yaml and in file names."""

from __future__ import annotations

from autoprompt.data import acdc, camus, hc18
from autoprompt.data.records import Case, CaseFiles, Reader
from autoprompt.errors import InputError

READERS: dict[str, Reader] = {reader.name: reader for reader in (hc18.READER, camus.READER, acdc.READER)}


def get_reader(name: str) -> Reader:
    if name not in READERS:
        raise InputError(f"params.yaml: unknown dataset {name!r}; use one of {sorted(READERS)}")
    return READERS[name]


__all__ = ["READERS", "Case", "CaseFiles", "Reader", "get_reader"]
