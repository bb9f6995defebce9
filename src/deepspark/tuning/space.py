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
import math
from collections.abc import Mapping
from typing import Any

from deepspark import config as config_module
from deepspark.config import TrainConfig
from deepspark.errors import UserInputError

# Derived keys: ``layers`` and ``width`` become ``hidden`` together.
DERIVED_KEYS = ("layers", "width")
# Settings a search cannot vary: the data and its split (made once, shared by every trial),
# where the run goes, and how one trial trains (one process).
NOT_SEARCHABLE = (
    "data",
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


@dataclasses.dataclass(frozen=True)
class FloatRange:
    """A float drawn from ``[low, high]``, uniformly or (``log``) log-uniformly."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def check(self, name: str) -> None:
        _check_range(name, self)

    def spec(self) -> str:
        return f"{self.low!r}:{self.high!r}" + (":log" if self.log else "")


@dataclasses.dataclass(frozen=True)
class IntRange:
    """An integer drawn from ``[low, high]``, uniformly or (``log``) log-uniformly."""

    low: int
    high: int
    log: bool = False

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)

    def check(self, name: str) -> None:
        if int(self.low) != self.low or int(self.high) != self.high:
            raise _bad(name, "integer bounds", self.spec())
        _check_range(name, self)

    def spec(self) -> str:
        return f"{self.low}:{self.high}" + (":log" if self.log else "")


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``options`` (``None``, booleans, numbers, strings or tuples such as ``hidden``
    values; non-scalar options are recorded by their label, e.g. ``64,32``)."""

    options: tuple

    def suggest(self, trial, name: str) -> Any:
        labels = [_label(option) for option in self.options]
        chosen = trial.suggest_categorical(name, labels)
        return self.options[labels.index(chosen)]

    def check(self, name: str) -> None:
        if not self.options:
            raise _bad(name, "at least one option", "")
        labels = [_label(option) for option in self.options]
        if len(set(map(repr, labels))) != len(labels):
            raise _bad(name, "distinct options", self.spec())

    def spec(self) -> str:
        labels = [str(_label(option)) for option in self.options]
        separator = "|" if any("," in label for label in labels) else ","
        return separator.join(labels)


Distribution = FloatRange | IntRange | Choice


def _label(option: Any) -> Any:
    if option is None or isinstance(option, bool | int | float | str):
        return option
    if isinstance(option, tuple | list):
        return ",".join(str(item) for item in option)
    return str(option)


def _check_range(name: str, distribution: FloatRange | IntRange) -> None:
    low, high = distribution.low, distribution.high
    finite = all(isinstance(v, int | float) and math.isfinite(v) for v in (low, high))
    if not finite or low > high:
        raise _bad(name, "LOW <= HIGH, both finite", distribution.spec())
    if distribution.log and low <= 0:
        raise _bad(name, "a positive LOW on a log scale", distribution.spec())


def _bad(name: str, expected: str, received: Any) -> UserInputError:
    return UserInputError(
        f"Invalid search space entry '{name}': expected {expected}. Received: {name}={received!r}"
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


def config_fields() -> dict[str, dataclasses.Field]:
    return {field.name: field for field in dataclasses.fields(TrainConfig)}


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
        return Choice(tuple(_coerce_option(name, option) for option in value))
    return Choice((_coerce_option(name, value),))


def parse_spec(name: str, text: str) -> Distribution:
    """``LOW:HIGH[:log]``, ``A,B,C`` / ``A|B|C`` or one value (see the module docstring)."""
    text = text.strip()
    if ":" in text:
        parts = [part.strip() for part in text.split(":")]
        log = len(parts) == 3 and parts[2].lower() == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise _bad(name, "LOW:HIGH or LOW:HIGH:log", text)
        low, high = (_number(name, part, text) for part in parts[:2])
        if isinstance(low, int) and isinstance(high, int) and not _float_field(name):
            return IntRange(low, high, log=log)
        return FloatRange(float(low), float(high), log=log)
    separator = "|" if "|" in text else ","
    if separator == "," and _tuple_field(name):
        separator = "|"  # hidden=64,32 is one option
    options = [part.strip() for part in text.split(separator)]
    if not all(options):
        raise _bad(name, "options separated by ',' or '|'", text)
    return Choice(tuple(_coerce_option(name, _typed_option(name, option)) for option in options))


def _typed_option(name: str, text: str) -> Any:
    """A choice's text as the field's type: ``none`` is ``None`` only where the field takes
    ``None``, and a ``str`` field keeps its text (``numeric_embedding=periodic,none``)."""
    kind = _field_type(name)
    if text.lower() == "none":
        return None if ("None" in kind or not kind) else text
    if kind.startswith("str"):
        return text
    return _scalar(text)


def _number(name: str, part: str, text: str) -> int | float:
    try:
        return int(part)
    except ValueError:
        pass
    try:
        return float(part)
    except ValueError as error:
        raise _bad(name, "numbers in LOW:HIGH", text) from error


def _scalar(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _field_type(name: str) -> str:
    field = config_fields().get(name)
    return str(field.type) if field is not None else ""


def _float_field(name: str) -> bool:
    """``LOW:HIGH`` of a float field is a float range even when written as integers."""
    return "float" in _field_type(name)


def _tuple_field(name: str) -> bool:
    return "tuple" in _field_type(name)


def _coerce_option(name: str, option: Any) -> Any:
    """Tuple fields (``hidden``) take ``"64,32"`` or ``[64, 32]``; the rest as given."""
    if _tuple_field(name) and not isinstance(option, tuple):
        items = str(option).split(",") if isinstance(option, str) else option
        items = items if isinstance(items, list | tuple) else [items]
        try:
            return tuple(int(str(item).strip()) for item in items)
        except ValueError as error:
            raise _bad(name, "comma-separated integers per option", option) from error
    return option


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
        if _tuple_field(name) and isinstance(value, str):
            settings[name] = _coerce_option(name, value)
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


def space_document(space: Mapping[str, Distribution]) -> dict[str, dict[str, Any]]:
    """The space as JSON-ready data that reads back exactly (``space_from_document``)."""
    document = {}
    for name, distribution in space.items():
        if isinstance(distribution, Choice):
            options = [list(o) if isinstance(o, tuple) else o for o in distribution.options]
            document[name] = {"choice": options}
        else:
            kind = "int" if isinstance(distribution, IntRange) else "float"
            document[name] = {
                kind: [distribution.low, distribution.high],
                "log": distribution.log,
            }
    return document


def space_from_document(document: Mapping[str, Mapping[str, Any]]) -> dict[str, Distribution]:
    space: dict[str, Distribution] = {}
    for name, entry in document.items():
        if "choice" in entry:
            space[name] = Choice(
                tuple(tuple(o) if isinstance(o, list) else o for o in entry["choice"])
            )
        elif "int" in entry:
            space[name] = IntRange(*entry["int"], log=entry["log"])
        else:
            space[name] = FloatRange(*entry["float"], log=entry["log"])
    return space


def space_specs(space: Mapping[str, Distribution]) -> dict[str, str]:
    """``{key: spec string}``: how a space is logged and stored (``parse_spec`` reads it back)."""
    return {name: distribution.spec() for name, distribution in space.items()}
