"""The explainer interface: ``Explainer.explain(frame) -> Explanation``, and the method registry.

Callers (the one-call API, the CLI, the Spark job, the report writer) only know this interface
and the registry, so a new explainer slots in by subclassing ``Explainer`` and registering its
method name for the kind of model it explains (``tabular`` or ``image``). The same method name
can mean one idea on both kinds (``gradient``: integrated gradients on encoded features or on
pixels); each kind has its own class.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from deepspark.errors import UserInputError

TABULAR = "tabular"
IMAGE = "image"
_KIND_NAMES = {TABULAR: "tables", IMAGE: "images"}
# model kind -> method name -> "module:Class"; imported only when asked for, so listing methods
# stays cheap.
_REGISTRY: dict[str, dict[str, str]] = {
    TABULAR: {
        "gradient": "deepspark.explain.gradient:IntegratedGradientsExplainer",
        "kernel": "deepspark.explain.shap_methods:KernelShapExplainer",
        "permutation": "deepspark.explain.shap_methods:PermutationShapExplainer",
        "lime": "deepspark.explain.lime_method:LimeExplainer",
    },
    IMAGE: {
        "gradcam": "deepspark.explain.images.gradcam:GradCamExplainer",
        "gradcam++": "deepspark.explain.images.gradcam:GradCamPlusPlusExplainer",
        "gradient": "deepspark.explain.images.integrated:PixelIntegratedGradientsExplainer",
        "shap": "deepspark.explain.images.partition_shap:PartitionShapExplainer",
        "lime": "deepspark.explain.images.superpixels:LimeImageExplainer",
    },
}
ROW_ID = "row_id"
PREDICTION = "prediction"
BASELINE = "baseline"
EXPLAINED_CLASS = "explained_class"
ADDITIVITY_SCALE = "additivity_scale"


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Attributions of some rows, in terms of the model's raw input columns.

    Attributes:
        method: The method name (``gradient``, ``kernel``...).
        row_ids: Position of each explained row in the input data.
        attributions: One column per raw feature, one row per explained row.
        prediction: The explained output per row (regression: the prediction in target units;
            classification: the probability of ``explained_class``).
        baseline: The reference output per row (additive methods: the mean output over the
            background sample; LIME: its local model's intercept).
        explained_class: The class whose probability is explained (``None`` for regression).
        features: The explained rows' raw values (for plots).
        additive: Whether the method promises ``sum(attributions) == prediction - baseline``.
        additivity_scale: The spread that additivity errors are divided by: the standard
            deviation of the explained output over the background sample.
        details: Method-specific facts (integration steps, LIME conditions...).
    """

    method: str
    row_ids: np.ndarray
    attributions: pd.DataFrame
    prediction: np.ndarray
    baseline: np.ndarray
    explained_class: list[Any] | None
    features: pd.DataFrame
    additive: bool
    additivity_scale: np.ndarray
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.row_ids)

    @property
    def feature_names(self) -> list[str]:
        return list(map(str, self.attributions.columns))

    def additivity_errors(self) -> np.ndarray:
        """Per row: ``|sum(attributions) - (prediction - baseline)| / additivity_scale``."""
        total = self.attributions.to_numpy(dtype=np.float64).sum(axis=1)
        gap = np.abs(total - (self.prediction - self.baseline))
        return gap / self.additivity_scale

    @property
    def max_additivity_error(self) -> float | None:
        """The largest relative additivity error, or ``None`` for a method that promises none."""
        if not self.additive or not len(self):
            return None
        return float(self.additivity_errors().max())

    def table(self) -> pd.DataFrame:
        """Row id, prediction, baseline (and explained class), one column per raw feature."""
        columns: dict[str, Any] = {
            ROW_ID: self.row_ids.astype(np.int64),
            PREDICTION: self.prediction.astype(np.float64),
            BASELINE: self.baseline.astype(np.float64),
        }
        if self.explained_class is not None:
            columns[EXPLAINED_CLASS] = [str(label) for label in self.explained_class]
        frame = pd.DataFrame(columns)
        for name in self.feature_names:
            frame[name] = self.attributions[name].to_numpy(dtype=np.float64)
        return frame


def concat_explanations(parts: list[Explanation]) -> Explanation:
    """Join explanations of disjoint row sets (same method and model), ordered by row id."""
    first = parts[0]
    row_ids = np.concatenate([part.row_ids for part in parts])
    order = np.argsort(row_ids, kind="stable")
    classes = None
    if first.explained_class is not None:
        classes = [label for part in parts for label in part.explained_class]
        classes = [classes[position] for position in order]

    def stacked(name: str) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts])[order]

    def joined(name: str) -> pd.DataFrame:
        frame = pd.concat([getattr(part, name) for part in parts], ignore_index=True)
        return frame.iloc[order].reset_index(drop=True)

    details = {key: value for part in parts for key, value in part.details.items()}
    return dataclasses.replace(
        first,
        row_ids=row_ids[order],
        attributions=joined("attributions"),
        prediction=stacked("prediction"),
        baseline=stacked("baseline"),
        explained_class=classes,
        features=joined("features"),
        additivity_scale=stacked("additivity_scale"),
        details=details,
    )


class Explainer(abc.ABC):
    """Explains a model's predictions for rows of raw input.

    Subclasses set ``method`` and ``additive`` and implement ``explain``. The constructor only
    stores its arguments; work happens in ``explain``.

    Args:
        model: The loaded deepspark model.
        background: Reference rows (raw columns) that define the baseline; for image
            explainers, decoded images (uint8, NHWC) or ``None`` when the method needs none.
        seed: Seeds every random choice, per row, so results do not depend on how rows are
            batched or distributed.
        options: Method-specific settings (see each subclass).
        explained_class: Explain this class's probability on every row instead of the default
            (the predicted class; binary tables: the second label). Must be one of the model's
            class labels (``class_index`` checks it).
    """

    method: ClassVar[str]
    additive: ClassVar[bool]
    modality: ClassVar[str] = TABULAR
    #: Whether ``explain`` needs ``background`` (image methods without one skip decoding it).
    needs_background: ClassVar[bool] = True

    def __init__(
        self,
        model,
        background,
        *,
        seed: int = 0,
        options: dict | None = None,
        explained_class: Any = None,
    ):
        self.model = model
        self.background = background
        self.seed = seed
        self.options = dict(options or {})
        self.explained_class = explained_class

    @abc.abstractmethod
    def explain(self, frame, *, row_ids=None) -> Explanation:
        """Explain the rows of ``frame``; ``row_ids`` default to ``0..len(frame)-1``."""

    def validate(self) -> None:
        """Check the options against the model before any data is read (a layer that does not
        exist, a class the model does not have); raise ``UserInputError``. Cheap by default."""
        if self.explained_class is not None:
            class_index(self.model.schema, self.explained_class)

    def row_seed(self, row_id: int) -> int:
        """The seed of one row: the same row gets the same randomness wherever it runs."""
        return int(np.random.SeedSequence([self.seed, int(row_id)]).generate_state(1)[0])


def explainer_methods(kind: str | None = TABULAR) -> list[str]:
    """Names of the explanation methods registered for ``kind`` (``None``: for any kind)."""
    if kind is None:
        return sorted({method for methods in _REGISTRY.values() for method in methods})
    return sorted(_REGISTRY.get(kind, {}))


def check_method(method: str) -> None:
    """Fail fast, before a model is loaded, on a method no kind of model has.

    Raises:
        UserInputError: Unknown method; the message lists the valid ones per kind.
    """
    if method not in explainer_methods(None):
        raise UserInputError(
            f"Unknown explanation method; valid methods are {_listing()}. "
            f"Received: method={method!r}"
        )


def _listing() -> str:
    return "; ".join(
        f"{', '.join(explainer_methods(kind))} for {_KIND_NAMES.get(kind, kind)}"
        for kind in _REGISTRY
    )


def explainer_class(method: str, kind: str = TABULAR) -> type[Explainer]:
    """The ``Explainer`` subclass registered for ``method`` on models of ``kind``.

    Raises:
        UserInputError: Unknown method, or one that does not explain this kind of model; the
            message lists the valid ones.
    """
    check_method(method)
    if method not in _REGISTRY.get(kind, {}):
        name = _KIND_NAMES.get(kind, kind)
        raise UserInputError(
            f"Method {method!r} does not explain models of {name}; for {name} use "
            f"{', '.join(explainer_methods(kind))}. Received: method={method!r}"
        )
    module_name, class_name = _REGISTRY[kind][method].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def register_explainer(method: str, target: str, *, kind: str = TABULAR) -> None:
    """Register an explainer class under ``method`` for models of ``kind``, as
    ``"package.module:ClassName"``."""
    _REGISTRY.setdefault(kind, {})[method] = target


def class_index(schema, explained_class: Any) -> int:
    """The output column (class position) of ``explained_class``, matched to the model's class
    labels as given or as text (the CLI passes text: ``--class 3`` finds the label ``3``).

    Raises:
        UserInputError: A regression model, or a class the model does not have.
    """
    labels = list(schema.class_labels or ())
    if schema.task == "regression" or not labels:
        raise UserInputError(
            "--class chooses which class probability to explain; a regression model has none. "
            f"Received: class={explained_class!r}"
        )
    for position, label in enumerate(labels):
        if label == explained_class and type(label) is type(explained_class):
            return position
    for position, label in enumerate(labels):
        if str(label) == str(explained_class):
            return position
    shown = ", ".join(map(str, labels[:20])) + (", ..." if len(labels) > 20 else "")
    raise UserInputError(
        f"Unknown --class: not one of the model's {len(labels)} classes ({shown}). "
        f"Received: class={explained_class!r}"
    )
