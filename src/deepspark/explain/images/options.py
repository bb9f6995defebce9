"""Method options of image explainers: one check, one message shape."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from deepspark.errors import UserInputError


def check_options(method: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Raise ``UserInputError`` for an option ``method`` does not take.

    Raises:
        UserInputError: Naming the unknown option and the valid ones.
    """
    allowed = tuple(allowed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise UserInputError(
            f"Unknown option for method {method!r}; its options are {valid}. "
            f"Received: {unknown[0]}={options[unknown[0]]!r}"
        )


def choice(method: str, name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``.

    Raises:
        UserInputError: Otherwise, listing the choices.
    """
    choices = tuple(choices)
    if value not in choices:
        raise UserInputError(
            f"Unknown {name} for method {method!r}; use one of {', '.join(choices)}. "
            f"Received: {name}={value!r}"
        )
    return str(value)


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an integer of at least ``minimum``.

    Raises:
        UserInputError: Not an integer, or too small.
    """
    try:
        number = None if isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or (isinstance(value, float) and value != number) or number < minimum:
        raise UserInputError(
            f"Option {name} must be an integer of at least {minimum}. Received: {name}={value!r}"
        )
    return number
