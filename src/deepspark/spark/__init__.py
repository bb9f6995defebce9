"""deepspark on Spark: the session builder, data sources, scoring UDFs, SQL functions and the
Spark ML ``KerasEstimator`` / ``KerasTransformer``.

PySpark is optional (``pip install 'deepspark[spark]'``); it is imported when first used.
"""

from __future__ import annotations

import importlib

__all__ = ["get_session", "read_source"]

_LAZY = {
    "get_session": "deepspark.spark.session",
    "read_source": "deepspark.spark.session",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deepspark.spark' has no attribute {name!r}")
