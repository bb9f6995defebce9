"""The distributions of a search space: a float or integer range (uniform or log-uniform) and a
choice among options. Each draws through an Optuna trial, checks itself and writes its spec."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from deepspark.errors import UserInputError


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
            raise bad_entry(name, "integer bounds", self.spec())
        _check_range(name, self)

    def spec(self) -> str:
        return f"{self.low}:{self.high}" + (":log" if self.log else "")


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``options`` (``None``, booleans, numbers, strings or tuples such as ``hidden``
    values; non-scalar options are recorded by their label, e.g. ``64,32``)."""

    options: tuple

    def suggest(self, trial, name: str) -> Any:
        labels = [label(option) for option in self.options]
        chosen = trial.suggest_categorical(name, labels)
        return self.options[labels.index(chosen)]

    def check(self, name: str) -> None:
        if not self.options:
            raise bad_entry(name, "at least one option", "")
        labels = [label(option) for option in self.options]
        if len(set(map(repr, labels))) != len(labels):
            raise bad_entry(name, "distinct options", self.spec())

    def spec(self) -> str:
        labels = [str(label(option)) for option in self.options]
        separator = "|" if any("," in label for label in labels) else ","
        return separator.join(labels)


Distribution = FloatRange | IntRange | Choice


def label(option: Any) -> Any:
    """How Optuna records an option: scalars as they are, tuples as ``64,32``."""
    if option is None or isinstance(option, bool | int | float | str):
        return option
    if isinstance(option, tuple | list):
        return ",".join(str(item) for item in option)
    return str(option)


def _check_range(name: str, distribution: FloatRange | IntRange) -> None:
    low, high = distribution.low, distribution.high
    finite = all(isinstance(v, int | float) and math.isfinite(v) for v in (low, high))
    if not finite or low > high:
        raise bad_entry(name, "LOW <= HIGH, both finite", distribution.spec())
    if distribution.log and low <= 0:
        raise bad_entry(name, "a positive LOW on a log scale", distribution.spec())


def bad_entry(name: str, expected: str, received: Any) -> UserInputError:
    return UserInputError(
        f"Invalid search space entry '{name}': expected {expected}. Received: {name}={received!r}"
    )
