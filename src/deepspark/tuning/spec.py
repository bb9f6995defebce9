"""Spec strings and stored forms of a search space, read by ``TrainConfig`` field type.

Specs (the command line's ``--space KEY=SPEC``): ``LOW:HIGH`` (an integer range, or a float
range for a float field), ``LOW:HIGH:log``, ``A,B,C`` or ``A|B|C`` (a choice; ``|`` when an
option holds commas, as tuple fields do: ``hidden=64,32|128``), or one value (fixed). Options
take the field's type: ``none`` is ``None`` only for a field that takes ``None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from deepspark.config import TrainConfig, parse_options
from deepspark.tuning.distributions import (
    Choice,
    Distribution,
    FloatRange,
    IntRange,
    bad_entry,
)


def config_fields() -> dict[str, dataclasses.Field]:
    """``TrainConfig``'s fields by name, as they are when called."""
    return {field.name: field for field in dataclasses.fields(TrainConfig)}


def parse_spec(name: str, text: str) -> Distribution:
    """``LOW:HIGH[:log]``, ``A,B,C`` / ``A|B|C`` or one value (see the module docstring)."""
    text = text.strip()
    if ":" in text:
        parts = [part.strip() for part in text.split(":")]
        log = len(parts) == 3 and parts[2].lower() == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise bad_entry(name, "LOW:HIGH or LOW:HIGH:log", text)
        low, high = (_number(name, part, text) for part in parts[:2])
        if isinstance(low, int) and isinstance(high, int) and not _float_field(name):
            return IntRange(low, high, log=log)
        return FloatRange(float(low), float(high), log=log)
    separator = "|" if "|" in text else ","
    if separator == "," and tuple_field(name):
        separator = "|"  # hidden=64,32 is one option
    options = [part.strip() for part in text.split(separator)]
    if not all(options):
        raise bad_entry(name, "options separated by ',' or '|'", text)
    return Choice(tuple(coerce_option(name, _typed_option(name, option)) for option in options))


def _typed_option(name: str, text: str) -> Any:
    """A choice's text as the field's type: ``none`` is ``None`` only where the field takes
    ``None``, and a ``str`` field keeps its text (``numeric_embedding=periodic,none``)."""
    kind = _field_type(name)
    if text.lower() == "none":
        return None if ("None" in kind or not kind) else text
    if kind.startswith("str"):
        return text
    return scalar(text)


def _number(name: str, part: str, text: str) -> int | float:
    try:
        return int(part)
    except ValueError:
        pass
    try:
        return float(part)
    except ValueError as error:
        raise bad_entry(name, "numbers in LOW:HIGH", text) from error


def scalar(text: str) -> Any:
    """``true`` / ``false``, ``none``, integers and floats converted; other text as it is (the
    conversion of ``--base-option`` values)."""
    return parse_options(f"value={text}")["value"]


def _field_type(name: str) -> str:
    field = config_fields().get(name)
    return str(field.type) if field is not None else ""


def _float_field(name: str) -> bool:
    """``LOW:HIGH`` of a float field is a float range even when written as integers."""
    return "float" in _field_type(name)


def tuple_field(name: str) -> bool:
    return "tuple" in _field_type(name)


def coerce_option(name: str, option: Any) -> Any:
    """Tuple fields (``hidden``) take ``"64,32"`` or ``[64, 32]``; the rest as given."""
    if tuple_field(name) and not isinstance(option, tuple):
        items = str(option).split(",") if isinstance(option, str) else option
        items = items if isinstance(items, list | tuple) else [items]
        try:
            return tuple(int(str(item).strip()) for item in items)
        except ValueError as error:
            raise bad_entry(name, "comma-separated integers per option", option) from error
    return option


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
