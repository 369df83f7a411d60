"""Inference: trained models applied to new images and volumes, and models exported to one file.

``Model``, ``load_model``, ``export_model`` (``inference.model``), ``predict``, its options (``Compute``,
``Writing``, ``PostProcessing``, ``Review``, ``Part``) and ``Summary`` (``inference.files``) are imported on first
use, so that a step that needs one module of this package (``reprompt``) loads only that one.
"""

from importlib import import_module

_EXPORTS = {
    "Model": "model",
    "load_model": "model",
    "export_model": "model",
    "predict": "files",
    "Summary": "files",
    "Compute": "files",
    "Writing": "files",
    "PostProcessing": "files",
    "Review": "files",
    "Part": "files",
}


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(import_module(f"autoprompt.inference.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'autoprompt.inference' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
