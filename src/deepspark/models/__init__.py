"""Keras model builders and the preprocessing layers that live inside deepspark models.

Importing this package does not import Keras (the backend is chosen first); the names below load
on first use.
"""

from __future__ import annotations

from deepspark._lazy import lazy_attributes

__all__ = [
    "BUILDER_SETTINGS",
    "BuildContext",
    "NumericStats",
    "build_mlp",
    "complete",
    "fit_numeric_stats",
    "register_builder",
]

_LAZY = {
    "BuildContext": "deepspark.models.builders",
    "register_builder": "deepspark.models.builders",
    "complete": "deepspark.models.builders",
    "BUILDER_SETTINGS": "deepspark.models.builders",
    "build_mlp": "deepspark.models.mlp",
    "NumericStats": "deepspark.models.preprocessing",
    "fit_numeric_stats": "deepspark.models.preprocessing",
}


__getattr__ = lazy_attributes(__name__, _LAZY)
