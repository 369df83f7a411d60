"""Inference: trained models applied to new images and volumes, and models exported to one file."""

from autoprompt.inference.model import Model, export_model, load_model
from autoprompt.inference.predict import Summary, predict

__all__ = ["Model", "Summary", "export_model", "load_model", "predict"]
