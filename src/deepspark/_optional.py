"""The one place optional dependencies are imported, with the install hint when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from deepspark.errors import MissingDependencyError

# module name -> the extra that installs it
_EXTRAS = {
    "pyspark": "spark",
    "shap": "explain",
    "lime": "explain",
    "horovod": "horovod",
    "optuna": "tune",
    "deltalake": "delta",
    "tensorboardX": "tensorboard",
}


def require(module_name: str, *, feature: str) -> ModuleType:
    """Import an optional dependency or raise ``MissingDependencyError`` with the install hint.

    Args:
        module_name: The importable module name, e.g. ``"pyspark"`` or ``"shap"``.
        feature: What the user asked for, used in the message (e.g. ``"Spark scoring"``).

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: When the module cannot be imported.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        top_level = module_name.split(".")[0]
        extra = _EXTRAS.get(top_level, "all")
        raise MissingDependencyError(
            f"{feature} needs the '{top_level}' package, which is not installed; "
            f"install it with: pip install 'deepspark[{extra}]'. Received: {error}"
        ) from error
