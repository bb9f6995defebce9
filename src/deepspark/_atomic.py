"""The one way deepspark writes a file that others may read while it is written: into a
temporary sibling, then renamed over the destination, so a reader (or a run killed half-way)
sees the old file or the new one, never a torn one, and a failed write leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that look at it work);
    when the block ends without error it replaces ``path``, otherwise it is removed.

    Args:
        path: The destination file (or folder).
        durable: fsync the written file before the rename (state a restart depends on).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield temporary
        if durable and temporary.is_file():
            with temporary.open("rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, durable=durable) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(path: str | Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode(), durable=durable)


def write_json_atomic(path: str | Path, document: Any, *, durable: bool = True) -> None:
    """Write ``document`` as JSON to ``path`` atomically (durable by default: state files)."""
    write_text_atomic(path, json.dumps(document, indent=1, default=str), durable=durable)


@contextlib.contextmanager
def folder_replacement(folder: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling folder that replaces ``folder`` (a report, a set of
    plots) when the block ends without error; on error it is removed and ``folder`` is left as
    it was. A rename cannot replace a non-empty folder, so the old one is moved aside first and
    moved back if the swap fails."""
    import tempfile

    folder = Path(folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        yield staging
        _swap_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_folder(staging: Path, folder: Path) -> None:
    import tempfile

    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
        os.replace(folder, old / folder.name)
    try:
        os.replace(staging, folder)
    except OSError:
        if old is not None:
            os.replace(old / folder.name, folder)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
