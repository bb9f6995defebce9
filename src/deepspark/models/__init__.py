"""Keras model builders and the preprocessing layers that live inside deepspark models."""

from deepspark.models.mlp import build_mlp
from deepspark.models.preprocessing import NumericStats, fit_numeric_stats

__all__ = ["NumericStats", "build_mlp", "fit_numeric_stats"]
