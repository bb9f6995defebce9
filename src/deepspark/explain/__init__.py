"""Explanations of deepspark models in terms of their raw input columns.

One call::

    result = deepspark.explain(model_uri, "houses.csv", method="gradient", output="why")

More control: pick an ``Explainer`` by method name and call ``explain(frame)`` yourself; a new
kind of explainer (images, later) subclasses ``Explainer`` and registers its method name::

    from deepspark.explain import explainer_class
    explainer = explainer_class("kernel")(model, background_rows, seed=0)
    explanation = explainer.explain(frame)

Methods: ``gradient`` (integrated gradients averaged over background baselines, additive, with
the additivity error measured), ``kernel`` and ``permutation`` (SHAP), ``lime`` (LIME tabular).

``deepspark.explain`` is both this package and the one-call function: the module is callable.
"""

from __future__ import annotations

import sys
import types

from deepspark.explain.api import ExplainResult, explain
from deepspark.explain.base import (
    Explainer,
    Explanation,
    explainer_class,
    explainer_methods,
    register_explainer,
)

__all__ = [
    "ExplainResult",
    "Explainer",
    "Explanation",
    "explain",
    "explainer_class",
    "explainer_methods",
    "register_explainer",
]


class _CallableModule(types.ModuleType):
    """Lets ``deepspark.explain(...)`` work after ``import deepspark.explain`` too (the package
    attribute then is this module, which would otherwise shadow the function)."""

    def __call__(self, *args, **kwargs):
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
