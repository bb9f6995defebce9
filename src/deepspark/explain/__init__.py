"""Explanations of deepspark models: tables per raw input column, images pixel by pixel.

One call::

    result = deepspark.explain(model_uri, "houses.csv", method="gradient", output="why")
    result = deepspark.explain(image_model_uri, "photos/", method="gradcam", output="cams")

More control: pick an ``Explainer`` by method name and model kind and call ``explain(frame)``
yourself; a new explainer subclasses ``Explainer`` and registers its method name::

    from deepspark.explain import explainer_class
    explainer = explainer_class("kernel")(model, background_rows, seed=0)
    explanation = explainer.explain(frame)

Methods for tables: ``gradient`` (integrated gradients averaged over background baselines,
additive, with the additivity error measured), ``kernel`` and ``permutation`` (SHAP), ``lime``
(LIME tabular). For images: ``gradcam`` / ``gradcam++`` (class activation maps of a convolution
layer), ``gradient`` (integrated gradients on pixels, additive, measured), ``shap`` (SHAP's
partition explainer with an image masker, additive), ``lime`` (superpixels).

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
