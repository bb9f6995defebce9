"""Progress of long host-side work (decoding, scoring): a rich bar on stderr on a terminal.

A bar shows only when stderr is a terminal and deepspark logs at INFO (the CLI without ``-q``);
in a log file or a test, ``work_progress`` costs nothing and the caller logs one line at the end.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

logger = logging.getLogger("deepspark")


def log_console():
    """The rich console deepspark's log lines go to (the CLI's), so that they print above a
    live bar instead of through it; ``None`` outside the CLI."""
    for source in (logger, logging.getLogger()):
        for handler in source.handlers:
            console = getattr(handler, "console", None)
            if console is not None:
                return console
    return None


def show_live_bar() -> bool:
    """Whether a live bar belongs on stderr now (a terminal, INFO lines shown)."""
    return sys.stderr.isatty() and logger.isEnabledFor(logging.INFO)


@contextlib.contextmanager
def work_progress(
    description: str, total: int, *, unit: str = ""
) -> Iterator[Callable[[int], None]]:
    """A bar for ``total`` items of work; yields ``advance(count)``.

    Example:
        >>> with work_progress("decoding images", len(paths)) as advance:
        ...     for chunk in chunks:
        ...         advance(len(chunk))
    """
    if not show_live_bar() or total <= 0:
        yield lambda count: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn(description),
        MofNCompleteColumn(),
        TextColumn(unit),
        BarColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=log_console() or Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(description, total=total)
    with bar:
        yield lambda count: bar.advance(task, count)
