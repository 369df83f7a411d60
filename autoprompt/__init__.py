"""Learn MedSAM prompt embeddings from tight boxes on a few images."""

__version__ = "0.1.0"
