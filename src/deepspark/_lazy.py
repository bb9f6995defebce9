"""Package attributes that load their module on first use (``import deepspark`` stays light)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_attributes(
    package: str, modules: Mapping[str, str], *, before: Callable[[], object] | None = None
) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``modules[name]`` when ``name`` is first used.

    Args:
        package: The package's ``__name__`` (for the AttributeError message).
        modules: Attribute name -> the module that defines it.
        before: Called before such an import (e.g. a check that an optional extra is installed).
    """

    def __getattr__(name: str):
        if name in modules:
            if before is not None:
                before()
            return getattr(importlib.import_module(modules[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
