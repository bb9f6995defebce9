"""Model builders: how ``deepspark.train`` gets its network, and how users plug in their own.

A builder is a function ``builder(context) -> keras.Model`` that returns an uncompiled model
taking deepspark's encoded inputs (``context.schema`` names them) and producing the task's
output; ``deepspark.train(..., model=...)`` accepts:

- ``None`` or a registered name: a builder from the registry (``"tabular_net"``, the default
  for tables: robust scaling, periodic numeric embeddings and an efficient ensemble, see
  ``deepspark.models.tabular_net``; ``"mlp"``, the plain network; ``"cnn"`` and ``"transfer"``
  for images);
- a builder function;
- a ``keras.Model`` *body*: deepspark puts its preprocessing in front (the body receives the
  encoded feature vector) and the task's head behind (the body's output is the last hidden
  layer), so the logged model still takes raw columns;
- a *complete* ``keras.Model``: no head is added, its output already is the task's output
  (regression: one number in the target's units; binary: P(positive), one sigmoid unit;
  multiclass: one softmax probability per class). The rule: a model is complete when it is
  marked with ``deepspark.models.complete(model)``, or when its class overrides ``train_step``
  (Keras 3's custom training step: on JAX the stateless ``train_step(self, state, data)``, on
  torch the stateful ``train_step(self, data)``); anything else is a body. A complete model
  takes either the encoded feature vector (deepspark puts its preprocessing in front; a
  functional subclass keeps its class, and so its ``train_step``) or deepspark's raw inputs
  (a functional model whose inputs are named ``numeric`` and / or ``categorical``: the float
  columns with NaN for missing values, and the categories' integer codes); image models take
  the ``image`` input (uint8 pixels) and are used as they are.

``BUILDER_SETTINGS`` is the table of the settings each builder reads; a run's MLflow params hold
only those of ``MODEL_SETTINGS`` that its model uses.

New model kinds register a builder here (``register_builder``); nothing else changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from deepspark.config import TrainConfig
from deepspark.data.schema import FeatureSchema
from deepspark.errors import UserInputError
from deepspark.models.kinds import kind_named, kind_of

if TYPE_CHECKING:  # the builders' modules import Keras; this one must not (backend choice)
    from deepspark.models.preprocessing import NumericStats


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a builder knows: the data (learned on the training split) and the settings."""

    schema: FeatureSchema
    numeric_stats: NumericStats | None
    config: TrainConfig
    target_center: float = 0.0
    target_scale: float = 1.0
    #: The training split's raw numeric columns, for builders that learn more than
    #: ``numeric_stats`` holds (``tabular_net``'s robust scaling); ``None`` when not given.
    numeric_train: Any = None


Builder = Callable[[BuildContext], Any]
_BUILDERS: dict[str, Builder] = {}
_TAKES: dict[str, tuple[str, ...]] = {}  # name -> the data kinds it builds for
# The builder used when ``model`` is not given is the kind's ``default_builder``. ``tabular_net``
# beats ``mlp`` and scikit-learn's tree ensembles on California housing and on average over the
# suite of benchmarks/bench_tabular_suite.py (3 seeds), so it is the tables' default.


#: Settings that only some models read; every other setting concerns the run (data, optimizer,
#: epochs, tracking, distribution) and is always logged.
MODEL_SETTINGS = (
    "hidden",
    "activation",
    "dropout",
    "batch_norm",
    "categorical_encoding",
    "ensemble_size",
    "numeric_embedding",
    "embedding_sigma",
    "filters",
    "augment",
    "base",
    "weights",
    "base_options",
    "fine_tune_layers",
    "fine_tune_lr",
    "fine_tune_epochs",
)
#: Which of ``MODEL_SETTINGS`` each builder reads (``linear`` one-hot encodes categories
#: whatever ``categorical_encoding`` says; a model given as a ``keras.Model`` reads
#: ``categorical_encoding`` for its encoded features; a builder function may read any).
BUILDER_SETTINGS: dict[str, tuple[str, ...]] = {}
_KERAS_MODEL_SETTINGS = ("categorical_encoding",)


def register_builder(
    name: str,
    builder: Builder,
    *,
    takes: tuple[str, ...] = ("tabular",),
    settings: tuple[str, ...] = MODEL_SETTINGS,
):
    """Make ``builder`` available as ``deepspark.train(..., model=name)`` for data of the kinds
    in ``takes`` (``tabular``, ``image``); ``settings``: which of ``MODEL_SETTINGS`` it reads
    (default all of them)."""
    _BUILDERS[name] = builder
    _TAKES[name] = tuple(takes)
    BUILDER_SETTINGS[name] = tuple(settings)


def unused_settings(model: Any, kind: str, config: TrainConfig) -> set[str]:
    """The ``MODEL_SETTINGS`` that ``model`` (as given to ``train``) does not read, for data of
    ``kind``: they are left out of the run's MLflow params."""
    if model is None or isinstance(model, str):
        used = BUILDER_SETTINGS.get(model or default_model(kind, config), MODEL_SETTINGS)
    elif callable(model) and not is_keras_model(model):
        used = MODEL_SETTINGS  # a builder function may read any setting
    else:
        used = _KERAS_MODEL_SETTINGS
    return set(MODEL_SETTINGS) - set(used)


def is_keras_model(model: Any) -> bool:
    return any(cls.__name__ == "Model" and "keras" in cls.__module__ for cls in type(model).__mro__)


def complete(model):
    """Mark ``model`` as a complete network: ``deepspark.train(model=model)`` adds no head.

    Its output must already be the task's output (see the module docstring); a model whose
    class overrides ``train_step`` is complete without the mark.

    Args:
        model: A ``keras.Model``.

    Returns:
        ``model`` itself, marked.

    Example:
        >>> inputs = keras.Input((8,))
        >>> model = deepspark.models.complete(keras.Model(inputs, keras.layers.Dense(1)(inputs)))
        >>> deepspark.train("houses.csv", "median_house_value", model=model)
    """
    if not is_keras_model(model):
        raise UserInputError(
            f"complete() marks a keras.Model. Received: model={type(model).__name__}"
        )
    object.__setattr__(model, "_deepspark_complete", True)  # not a tracked Keras attribute
    return model


def has_own_train_step(model: Any) -> bool:
    """Whether ``model``'s class overrides ``keras.Model.train_step``."""
    from deepspark._backend import import_keras

    keras = import_keras()
    return getattr(type(model), "train_step", None) is not keras.Model.train_step


def is_complete(model: Any) -> bool:
    """Whether ``model`` is a complete network (marked with ``complete``, or its own
    ``train_step``), not a body that gets deepspark's head."""
    if not is_keras_model(model):
        return False
    return bool(getattr(model, "_deepspark_complete", False)) or has_own_train_step(model)


def check_model(model: Any, kind: str | None = None) -> None:
    """Raise ``UserInputError`` now (before any run starts) for a ``model`` that cannot build,
    or (given the data's ``kind``) that does not take that kind of data."""
    if model is None or callable(model):
        return
    if not isinstance(model, str) or model not in _BUILDERS:
        raise UserInputError(
            f"Unknown model; valid models are {', '.join(sorted(_BUILDERS))}, a builder "
            f"function or a keras.Model. Received: model={model!r}"
        )
    if kind is not None and kind not in _TAKES[model]:
        fitting = [name for name, kinds in sorted(_TAKES.items()) if kind in kinds]
        given = kind_named(kind).data_description
        raise UserInputError(
            f"Model '{model}' takes {' or '.join(_TAKES[model])} data, but the data is {given}; "
            f"use --model {' or '.join(fitting)}. Received: model={model!r}"
        )


def default_model(kind: str, config: TrainConfig) -> str:
    """The builder used when no ``model`` is given: ``transfer`` with a pretrained ``base``,
    ``mlp`` with ``activation="linear"`` (a linear network, whose coefficients the run
    reports), else the kind's default (``tabular_net`` for tables, ``cnn`` for images)."""
    if config.base:
        return "transfer"
    if config.activation == "linear":
        return "mlp"
    return kind_named(kind).default_builder


def check_base(model: Any, config: TrainConfig) -> None:
    """A pretrained ``base`` goes with the ``transfer`` builder only.

    Raises:
        UserInputError: ``base`` with another model, or ``transfer`` without a ``base``.
    """
    if config.base and model not in (None, "transfer"):
        raise UserInputError(
            f"--base {config.base} builds a transfer-learning model; leave out --model (or use "
            f"--model transfer). Received: model={model!r}"
        )
    if model == "transfer" and not config.base:
        raise UserInputError(
            "--model transfer needs a pretrained network: add --base mobilenet_v2 (or another "
            "keras.applications name). Received: base=None"
        )


def build_model(context: BuildContext, model: Any = None):
    """The uncompiled network for ``context`` from ``model`` (see the module docstring).

    Raises:
        UserInputError: An unknown name, or something that is neither a builder nor a Keras model.
    """
    from deepspark._backend import import_keras

    keras = import_keras()
    kind = context.schema.kind
    check_model(model, kind)
    if model is None or isinstance(model, str):
        return _BUILDERS[model or default_model(kind, context.config)](context)
    if isinstance(model, keras.Model):
        if is_complete(model):
            return _wrap_complete(context, model, keras)
        return _wrap_body(context, model, keras)
    built = model(context)
    if not isinstance(built, keras.Model):
        raise UserInputError(
            "A model builder must return a keras.Model. "
            f"Received: model={model!r} returned {type(built).__name__}"
        )
    return built


def _wrap_body(context: BuildContext, body, keras):
    from deepspark.models.mlp import encoded_features, task_head

    inputs, features = encoded_features(context.schema, context.numeric_stats, context.config)
    try:
        hidden = body(features)
    except Exception as error:  # noqa: BLE001  the user's body does not fit the features
        raise UserInputError(
            f"The Keras model given as model= must take the {int(features.shape[-1])} encoded "
            f"features as its input ({type(error).__name__}: {error}). "
            f"Received: model={body.name!r}"
        ) from error
    outputs = task_head(hidden, context.schema, context.target_center, context.target_scale)
    return keras.Model(inputs=inputs, outputs=outputs, name=f"deepspark_{body.name}")


def _wrap_complete(context: BuildContext, model, keras):
    """A complete model with deepspark's inputs in front, its own class kept (and so its
    ``train_step``): the encoded features (preprocessing included) or the raw ``numeric`` /
    ``categorical`` inputs, whichever it takes. Models of a kind without encoded features
    (images) are used as they are."""
    schema = context.schema
    if kind_of(schema).encoded_features:
        from deepspark.models.mlp import encoded_features

        inputs, features = encoded_features(schema, context.numeric_stats, context.config)
        raw = _raw_input_names(schema) if _takes_raw_inputs(model) else None
        try:
            if raw is None:
                outputs = model(features)
            else:
                given = [inputs[tensor.name] for tensor in model.inputs]
                outputs = model(given[0] if len(given) == 1 else given)
        except Exception as error:  # noqa: BLE001  the user's model does not fit the inputs
            names = " and ".join(repr(name) for name in _raw_input_names(schema))
            raise UserInputError(
                f"A complete model given as model= must take the {int(features.shape[-1])} "
                f"encoded features, or deepspark's raw inputs named {names} "
                f"({type(error).__name__}: {error}). Received: model={model.name!r}"
            ) from error
        if raw is not None:
            inputs = {name: inputs[name] for name in raw}
        model = _rebuild(model, inputs, outputs, keras)
    _check_output(model, schema)
    return model


def _raw_input_names(schema) -> list[str]:
    from deepspark.data.encoding import CATEGORICAL_INPUT, NUMERIC_INPUT

    return [NUMERIC_INPUT] * bool(schema.numeric_names) + [CATEGORICAL_INPUT] * bool(
        schema.categorical_names
    )


def _takes_raw_inputs(model) -> bool:
    from deepspark.data.encoding import CATEGORICAL_INPUT, NUMERIC_INPUT

    try:
        names = {tensor.name for tensor in model.inputs}
    except (AttributeError, ValueError):  # a subclassed model: no symbolic inputs
        return False
    return bool(names) and names <= {NUMERIC_INPUT, CATEGORICAL_INPUT}


def _rebuild(model, inputs, outputs, keras):
    """The preprocessing and ``model`` as one functional model of ``model``'s own class."""
    name = f"deepspark_{model.name}"
    if not has_own_train_step(model):
        return keras.Model(inputs=inputs, outputs=outputs, name=name)
    try:
        return type(model)(inputs=inputs, outputs=outputs, name=name)
    except TypeError as error:
        raise UserInputError(
            f"A model with its own train_step that takes the encoded features must be a "
            f"functional subclass, built as {type(model).__name__}(inputs, outputs), so that "
            f"deepspark can put its preprocessing in front ({error}); or take deepspark's raw "
            f"inputs. Received: model={model.name!r}"
        ) from error


def _check_output(model, schema) -> None:
    expected = len(schema.class_labels) if schema.task == "multiclass" else 1
    try:
        shape = tuple(model.outputs[0].shape)
    except (AttributeError, ValueError, IndexError):  # a subclassed model: checked by fit
        return
    if len(model.outputs) != 1 or shape[-1] != expected:
        meaning = {
            "regression": "one number in the target's units",
            "binary": "P(positive) from one sigmoid unit",
            "multiclass": f"one softmax probability per class ({expected})",
        }[schema.task]
        raise UserInputError(
            f"A complete model given as model= must output the {schema.task} task's output, "
            f"{meaning}: width {expected}; or leave out deepspark.models.complete() to get "
            f"deepspark's head. Received: model={model.name!r} with output shape {shape}"
        )


def _build_mlp(context: BuildContext):
    return kind_of(context.schema).build_mlp(context)


def _build_tabular_net(context: BuildContext):
    from deepspark.models.tabular_net import build_tabular_net

    return build_tabular_net(
        context.schema,
        context.numeric_stats,
        context.config,
        target_center=context.target_center,
        target_scale=context.target_scale,
        numeric_train=context.numeric_train,
    )


def _build_cnn(context: BuildContext):
    from deepspark.models.cnn import build_cnn

    config, spec = context.config, context.schema.image
    return build_cnn(
        spec.size,
        classes=len(context.schema.class_labels),
        channels=spec.channels,
        filters=config.filters,
        batch_norm=True if config.batch_norm is None else config.batch_norm,
        dropout=config.dropout,
        augment=config.augment,
    )


def _build_transfer(context: BuildContext):
    from deepspark.models.transfer import build_transfer

    return build_transfer(context.schema, context.config)


def _build_linear(context: BuildContext):
    from deepspark.models.linear import build_linear

    return build_linear(
        context.schema,
        context.numeric_train,
        context.config,
        target_center=context.target_center,
        target_scale=context.target_scale,
    )


_MLP_SETTINGS = ("hidden", "activation", "dropout", "batch_norm", "categorical_encoding")
register_builder("mlp", _build_mlp, takes=("tabular", "image"), settings=_MLP_SETTINGS)
register_builder(
    "tabular_net",
    _build_tabular_net,
    takes=("tabular",),
    settings=(*_MLP_SETTINGS, "ensemble_size", "numeric_embedding", "embedding_sigma"),
)
register_builder(
    "cnn", _build_cnn, takes=("image",), settings=("filters", "batch_norm", "dropout", "augment")
)
register_builder(
    "transfer",
    _build_transfer,
    takes=("image",),
    settings=(
        "base",
        "weights",
        "base_options",
        "augment",
        "dropout",
        "fine_tune_layers",
        "fine_tune_lr",
        "fine_tune_epochs",
    ),
)
register_builder("linear", _build_linear, takes=("tabular",), settings=())
