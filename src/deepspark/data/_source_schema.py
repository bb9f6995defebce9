"""One schema for many files: every file must hold the same columns with compatible types
(integers and floats promote to float, a column null in one file takes the others' type), and
hive partition folders (``year=2024/``) become typed columns."""

from __future__ import annotations

from urllib.parse import unquote

import pyarrow as pa

from deepspark.data._source_formats import FileFacts
from deepspark.errors import DataError

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def unify_schema(
    facts: list[FileFacts], *, columns: list[str] | None, shown, data: str
) -> pa.Schema:
    """The schema every file agrees on, in the first file's column order.

    Args:
        facts: Each file's schema, in file order.
        columns: Only these columns are checked and kept (None: all).
        shown: Turns a file path into what messages show (its URI).
        data: What the user gave, for messages.

    Raises:
        DataError: A column missing in a file, or types that do not promote (text vs number);
            the message names the file and the column.
    """
    first = facts[0]
    wanted = set(columns) if columns is not None else None
    unified = {f.name: f for f in first.schema if wanted is None or f.name in wanted}
    origin = dict.fromkeys(unified, first.path)
    for fact in facts[1:]:
        for name in unified:
            if fact.schema.get_field_index(name) < 0:
                raise _drift(f"column {name!r} is missing in file {shown(fact.path)}", data)
        for field in fact.schema:
            if field.name in unified:
                _merge(unified, origin, field, fact.path, shown=shown, data=data)
            elif wanted is None:
                where = f"file {shown(fact.path)} is missing in file {shown(first.path)}"
                raise _drift(f"column {field.name!r} of {where}", data)
    return pa.schema(list(unified.values()), metadata=first.schema.metadata)


def _merge(unified: dict, origin: dict, field: pa.Field, path: str, *, shown, data: str) -> None:
    """Promote ``unified[field.name]`` to take ``field`` (int -> float, null -> any)."""
    current = unified[field.name]
    if field.type == current.type:
        return
    try:
        merged = pa.unify_schemas(
            [pa.schema([current]), pa.schema([field])], promote_options="permissive"
        ).field(0)
    except (pa.ArrowTypeError, pa.ArrowInvalid) as error:
        raise _drift(
            f"column {field.name!r} is {field.type} in file {shown(path)} but {current.type} "
            f"in file {shown(origin[field.name])}",
            data,
        ) from error
    if pa.types.is_null(current.type):
        origin[field.name] = path
    unified[field.name] = merged


def _drift(what: str, data: str) -> DataError:
    return DataError(
        f"Schemas differ across files: {what}; rewrite the files with one schema, or select "
        f"the files or columns that agree (columns=...). Received: data={data!r}"
    )


def hive_partitions(paths: tuple[str, ...], base: str, *, data: str) -> pa.Schema | None:
    """The partition columns of ``key=value`` folders below ``base``, typed from their values
    (all integers: int64; all numbers: float64; else string), or None without any.

    Raises:
        DataError: Files sit at different partition depths or under different keys.
    """
    keys: tuple[str, ...] | None = None
    values: dict[str, set[str]] = {}
    for path in paths:
        folders = path[len(base) :].strip("/").split("/")[:-1]
        pairs = [folder.split("=", 1) for folder in folders if "=" in folder]
        names = tuple(key for key, _ in pairs)
        if keys is None:
            keys, first_path = names, path
        elif names != keys:
            raise DataError(
                f"Partition folders differ: {path} is under {list(names)} but {first_path} is "
                f"under {list(keys)}; give one partitioned folder, or a glob of the files you "
                f"mean. Received: data={data!r}"
            )
        for key, value in pairs:
            values.setdefault(key, set()).add(unquote(value))
    if not keys:
        return None
    return pa.schema([pa.field(key, _partition_type(values[key])) for key in keys])


def _partition_type(values: set[str]) -> pa.DataType:
    present = [value for value in values if value != HIVE_NULL]
    for data_type, parse in ((pa.int64(), int), (pa.float64(), float)):
        try:
            for value in present:
                parse(value)
        except ValueError:
            continue
        return data_type
    return pa.string()
