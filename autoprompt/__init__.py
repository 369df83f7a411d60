"""Learn MedSAM prompt embeddings from tight boxes on a few images.

``autoprompt.predict``, ``autoprompt.load_model`` and ``autoprompt.export_model`` are the notebook entry points
(``autoprompt.inference``); they are imported on first use.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("autoprompt")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_INFERENCE = ("predict", "load_model", "export_model")


def __getattr__(name: str) -> object:
    if name in _INFERENCE:
        from autoprompt import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'autoprompt' has no attribute {name!r}")
