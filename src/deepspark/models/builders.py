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
  layer), so the logged model still takes raw columns.

New model kinds register a builder here (``register_builder``); nothing else changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from deepspark.config import TrainConfig
from deepspark.data.schema import FeatureSchema
from deepspark.errors import UserInputError

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
#: The builder used when ``model`` is not given, per data kind. ``tabular_net`` beats ``mlp``
#: and scikit-learn's tree ensembles on California housing and on average over the suite of
#: benchmarks/bench_tabular_suite.py (3 seeds), so it is the tables' default.
DEFAULT_MODELS = {"tabular": "tabular_net", "image": "cnn"}


def register_builder(name: str, builder: Builder, *, takes: tuple[str, ...] = ("tabular",)):
    """Make ``builder`` available as ``deepspark.train(..., model=name)`` for data of the kinds
    in ``takes`` (``tabular``, ``image``)."""
    _BUILDERS[name] = builder
    _TAKES[name] = tuple(takes)


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
        given = "an image folder or image table" if kind == "image" else "a table"
        raise UserInputError(
            f"Model '{model}' takes {' or '.join(_TAKES[model])} data, but the data is {given}; "
            f"use --model {' or '.join(fitting)}. Received: model={model!r}"
        )


def default_model(kind: str, config: TrainConfig) -> str:
    """The builder used when no ``model`` is given: ``transfer`` with a pretrained ``base``,
    else the kind's default (``tabular_net`` for tables, ``cnn`` for images)."""
    return "transfer" if config.base else DEFAULT_MODELS[kind]


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


def _build_mlp(context: BuildContext):
    from deepspark.models.mlp import build_mlp, build_pixel_mlp

    if context.schema.image is not None:
        return build_pixel_mlp(context.schema, context.config)
    return build_mlp(
        context.schema,
        context.numeric_stats,
        context.config,
        target_center=context.target_center,
        target_scale=context.target_scale,
    )


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


register_builder("mlp", _build_mlp, takes=("tabular", "image"))
register_builder("tabular_net", _build_tabular_net, takes=("tabular",))
register_builder("cnn", _build_cnn, takes=("image",))
register_builder("transfer", _build_transfer, takes=("image",))
