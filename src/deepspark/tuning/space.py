"""The search space: which ``TrainConfig`` settings a search tries, and from which distribution.

A space is a mapping from a ``TrainConfig`` field name to a distribution. The default space
(``default_space()``)::

    key                distribution                          becomes
    layers             IntRange(1, 4)                        hidden = (width,) * layers
    width              IntRange(16, 512, log=True)           (units of every hidden layer)
    dropout            FloatRange(0.0, 0.5)                  dropout
    lr                 FloatRange(1e-4, 1e-2, log=True)      lr
    weight_decay       FloatRange(1e-6, 1e-2, log=True)      (*)
    numeric_embedding  Choice(NUMERIC_EMBEDDINGS)            (*) embeddings on / off
    embeddings         Choice((False, True))                 (*)
    ensemble_size      Choice((1, 8, 32))                    (*) k, the ensemble's members
    k                  Choice((1, 8, 32))                    (*)

(*) Only when ``TrainConfig`` has that field (checked when the search starts), and with only
the values that ``TrainConfig`` accepts (``NUMERIC_EMBEDDINGS``: the choices
``deepspark.config`` lists, when it does): the entries follow the network's settings as they
are added; one more is one line in ``OPTIONAL_ENTRIES``. Every other ``TrainConfig`` field
can be searched too (``activation``, ``batch_size``, ``optimizer``, ``categorical_encoding``
...), except the ones that change the data or where the run goes (``NOT_SEARCHABLE``): the
split is made once and every trial is scored on the same validation rows.

Distributions are given as objects (``FloatRange``, ``IntRange``, ``Choice``) or as the spec
strings the command line takes (``parse_spec``): ``LOW:HIGH`` (integers or floats),
``LOW:HIGH:log``, ``A,B,C`` or ``A|B|C`` (choices; ``|`` when an option holds commas, such as
``hidden=64,32|128,64``), or one value (the setting is fixed, not searched).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from deepspark import config as config_module
from deepspark.config import TrainConfig
from deepspark.errors import UserInputError
from deepspark.tuning.distributions import Choice, Distribution, FloatRange, IntRange
from deepspark.tuning.spec import (
    coerce_option,
    config_fields,
    parse_spec,
    space_document,
    space_from_document,
    space_specs,
    tuple_field,
)

__all__ = [
    "DEFAULT_ENTRIES",
    "DERIVED_KEYS",
    "NOT_SEARCHABLE",
    "OPTIONAL_ENTRIES",
    "Choice",
    "Distribution",
    "FloatRange",
    "IntRange",
    "as_distribution",
    "check_key",
    "config_fields",
    "default_space",
    "parse_spec",
    "resolve_space",
    "space_document",
    "space_from_document",
    "space_specs",
    "suggest",
    "to_settings",
    "trial_config",
]

# Derived keys: ``layers`` and ``width`` become ``hidden`` together.
DERIVED_KEYS = ("layers", "width")

# Settings a search cannot vary: the data and its split (made once, shared by every trial),
# where the run goes, and how one trial trains (one process).
NOT_SEARCHABLE = (
    "data",
    "register",
    "aliases",
    "tensorboard",
    "target",
    "task",
    "exclude",
    "val_fraction",
    "test_fraction",
    "seed",
    "experiment",
    "run_name",
    "tracking_uri",
    "checkpoint_dir",
    "store",
    "max_memory_mb",
    "workers",
    "launcher",
    "collectives",
    "max_restarts",
    "scale_lr",
    "warmup_epochs",
    "keras_backend",
    "image_size",
    "on_bad_image",
)

DEFAULT_ENTRIES: dict[str, Distribution] = {
    "layers": IntRange(1, 4),
    "width": IntRange(16, 512, log=True),
    "dropout": FloatRange(0.0, 0.5),
    "lr": FloatRange(1e-4, 1e-2, log=True),
}

# Entries for settings of the tabular network that TrainConfig may or may not have yet.
OPTIONAL_ENTRIES: dict[str, Distribution] = {
    "weight_decay": FloatRange(1e-6, 1e-2, log=True),
    "numeric_embedding": Choice(("none", "periodic")),
    "embeddings": Choice((False, True)),
    "ensemble_size": Choice((1, 8, 32)),
    "k": Choice((1, 8, 32)),
}

# Optional entries whose choices are the values deepspark.config lists, when it lists them.
_CHOICES_FROM_CONFIG = {"numeric_embedding": "NUMERIC_EMBEDDINGS"}


def default_space(base: TrainConfig | None = None) -> dict[str, Distribution]:
    """The default space for ``TrainConfig`` as it is now (see the module docstring).

    Args:
        base: The fixed settings; optional entries keep only the values ``TrainConfig``
            accepts with them.
    """
    space = dict(DEFAULT_ENTRIES)
    fields = config_fields()
    for name, distribution in OPTIONAL_ENTRIES.items():
        if name not in fields:
            continue
        listed = getattr(config_module, _CHOICES_FROM_CONFIG.get(name, ""), None)
        if isinstance(listed, tuple) and listed:
            distribution = Choice(listed)
        kept = _accepted(base, name, distribution) if base is not None else distribution
        if kept is not None:
            space[name] = kept
    return space


def _accepted(base: TrainConfig, name: str, distribution: Distribution) -> Distribution | None:
    """``distribution`` with only the values ``TrainConfig`` accepts (ranges: both bounds)."""
    if isinstance(distribution, Choice):
        options = tuple(o for o in distribution.options if _valid(base, {name: o}))
        return Choice(options) if options else None
    bounds_valid = _valid(base, {name: distribution.low}) and _valid(
        base, {name: distribution.high}
    )
    return distribution if bounds_valid else None


def _valid(base: TrainConfig, settings: dict[str, Any]) -> bool:
    try:
        trial_config(base, settings)
    except (UserInputError, TypeError, ValueError):
        return False
    return True


def resolve_space(
    space: Mapping[str, Any] | None, base: TrainConfig, fixed: set[str] = frozenset()
) -> dict[str, Distribution]:
    """The space a search uses: the default, with ``space``'s entries added or replacing
    (``None`` removes one) and the settings the caller ``fixed`` left out.

    Raises:
        UserInputError: An unknown or unsearchable key, or a malformed distribution.
    """
    resolved = default_space(base)
    for name in fixed:
        resolved.pop(name, None)
        if name in ("hidden", *DERIVED_KEYS):
            for derived in DERIVED_KEYS:
                resolved.pop(derived, None)
    for name, value in (space or {}).items():
        check_key(name)
        if value is None:
            resolved.pop(name, None)
            continue
        resolved[name] = as_distribution(name, value)
    if "hidden" in (space or {}):
        for derived in DERIVED_KEYS:
            if derived not in (space or {}):
                resolved.pop(derived, None)
    _check_derived(resolved)
    for name, distribution in resolved.items():
        distribution.check(name)
    return resolved


def _check_derived(space: Mapping[str, Distribution]) -> None:
    given = [name for name in DERIVED_KEYS if name in space]
    if given and "hidden" in space:
        raise UserInputError(
            "The search space has both 'hidden' and layers/width; search either the layer "
            f"sizes (hidden) or layers and width. Received: {', '.join(['hidden', *given])}"
        )
    if len(given) == 1:
        missing = "width" if given[0] == "layers" else "layers"
        raise UserInputError(
            f"The search space has '{given[0]}' without '{missing}'; layers and width go "
            f"together (hidden = (width,) * layers). Received: {given[0]}"
        )


def check_key(name: str) -> None:
    """Raise ``UserInputError`` for a key that is neither a searchable ``TrainConfig`` field
    nor ``layers`` / ``width``."""
    fields = config_fields()
    searchable = sorted(
        [*DERIVED_KEYS, *(field for field in fields if field not in NOT_SEARCHABLE)]
    )
    if name in NOT_SEARCHABLE:
        raise UserInputError(
            f"'{name}' cannot be searched: the data is split once and every trial trains in "
            f"one process on the same rows; set it as a fixed setting instead. Received: {name}"
        )
    if name not in fields and name not in DERIVED_KEYS:
        raise UserInputError(
            f"Unknown search space key '{name}'; valid keys are {', '.join(searchable)}. "
            f"Received: {name}"
        )


def as_distribution(name: str, value: Any) -> Distribution:
    """A distribution from an object, a spec string or a list of options."""
    if isinstance(value, FloatRange | IntRange | Choice):
        return value
    if isinstance(value, str):
        return parse_spec(name, value)
    if isinstance(value, list):
        return Choice(tuple(coerce_option(name, option) for option in value))
    return Choice((coerce_option(name, value),))


def suggest(trial, space: Mapping[str, Distribution]) -> dict[str, Any]:
    """The settings one trial uses, drawn from ``space`` through the Optuna ``trial``
    (``layers`` and ``width`` become ``hidden``)."""
    drawn = {name: distribution.suggest(trial, name) for name, distribution in space.items()}
    return to_settings(drawn)


def to_settings(drawn: Mapping[str, Any]) -> dict[str, Any]:
    """Drawn values -> ``TrainConfig`` settings (``layers`` x ``width`` -> ``hidden``; choice
    labels of tuple fields back to tuples)."""
    settings = {name: value for name, value in drawn.items() if name not in DERIVED_KEYS}
    if all(name in drawn for name in DERIVED_KEYS):
        settings["hidden"] = (int(drawn["width"]),) * int(drawn["layers"])
    for name, value in list(settings.items()):
        if tuple_field(name) and isinstance(value, str):
            settings[name] = coerce_option(name, value)
    return settings


def trial_config(base: TrainConfig, settings: Mapping[str, Any]) -> TrainConfig:
    """``base`` with one trial's ``settings``, validated like any ``TrainConfig``.

    Raises:
        UserInputError: The settings are not a valid configuration.
    """
    try:
        return dataclasses.replace(base, **dict(settings))
    except TypeError as error:
        raise UserInputError(
            f"Invalid trial settings: {error}. Received: {dict(settings)}"
        ) from error
